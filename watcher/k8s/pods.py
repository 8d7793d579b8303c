"""This node's pods, cached from the Kubernetes API, and the process/GPU -> pod lookups.

A pid is attributed through its cgroup (:mod:`watcher.k8s.cgroups`): the container id there
is matched against the pods' container statuses, else the pod uid against the pods. The
pod list is refreshed every ``refresh_s`` and, when a lookup finds a container the cache
does not know (a pod that just started), at most once per ``miss_refresh_s`` sooner. A
failed refresh keeps the last good list. Lookups are synchronous and touch only the
cache and ``/proc``, so the NVML sampler calls them from its worker thread.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from kubernetes.aio import client
from kubernetes.aio.client import ApiClient

from store.records import GpuInfo, GpuPod, PodRef
from watcher.config import DEFAULT_GPU_ANNOTATIONS, KubernetesConfig
from watcher.k8s.api import KubeCore
from watcher.k8s.cgroups import parse_cgroup, read_cgroup_file

__all__ = [
    "PodDirectory",
    "PodDirectoryStats",
    "annotated_gpus",
    "api_error_text",
    "gpu_request",
    "strip_container_id",
]

log = structlog.get_logger("watcher.k8s.pods")

_DONE_PHASES = frozenset({"Succeeded", "Failed"})
_TOKEN_SPLIT = re.compile(r"[\s,;:|]+")


def strip_container_id(container_id: str) -> str:
    """``containerd://<id>`` (``cri-o://``, ``docker://``) -> ``<id>``."""
    return container_id.rsplit("://", 1)[-1]


def api_error_text(error: BaseException) -> str:
    """A short, stable description of an API failure: one log line per distinct text."""
    if isinstance(error, client.ApiException):
        return f"HTTP {error.status} {error.reason}".strip()
    return f"{type(error).__name__}: {error}"


def annotated_gpus(value: str, gpus: Sequence[GpuInfo]) -> list[str]:
    """The UUIDs of the GPUs an annotation value names, by UUID or else by index.

    When a value holds any ``GPU-`` UUID only UUIDs count, so numbers beside them (HAMi's
    ``GPU-...,NVIDIA,3000,30:``: memory and cores) are not read as indices.
    """
    tokens = [t for t in _TOKEN_SPLIT.split(value) if t]
    named = [t.lower() for t in tokens if t[:4].upper() == "GPU-"]
    if named:
        by_uuid = {g.uuid.lower(): g.uuid for g in gpus}
        return [by_uuid[t] for t in named if t in by_uuid]
    by_index = {g.index: g.uuid for g in gpus}
    return [by_index[int(t)] for t in tokens if t.isascii() and t.isdigit() and int(t) in by_index]


def _quantity(value: str | None) -> int:
    try:
        return int(float(value)) if value else 0
    except ValueError:
        return 0


def _container_gpus(container: Any, gpu_resources: Sequence[str]) -> int:
    res = container.resources
    if res is None:
        return 0
    limits, requests = res.limits or {}, res.requests or {}
    return sum(max(_quantity(limits.get(r)), _quantity(requests.get(r))) for r in gpu_resources)


def gpu_request(pod: Any, gpu_resources: Sequence[str]) -> int:
    """GPUs a v1 Pod asks for: its containers' sum, or its largest init container's."""
    spec = pod.spec
    if spec is None:
        return 0
    main = sum(_container_gpus(c, gpu_resources) for c in spec.containers or ())
    init = max((_container_gpus(c, gpu_resources) for c in spec.init_containers or ()), default=0)
    return max(main, init)


@dataclass(slots=True)
class PodDirectoryStats:
    """Counters for ``/metrics``. ``misses``: a container the pod list does not know."""

    refreshes: int = 0
    refresh_failures: int = 0
    pods: int = 0
    lookups: int = 0
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True, slots=True)
class _Pod:
    ref: PodRef
    phase: str
    annotations: Mapping[str, str]
    gpus_requested: int


@dataclass(frozen=True, slots=True)
class _Index:
    pods: tuple[_Pod, ...] = ()
    by_container: Mapping[str, PodRef] = field(default_factory=dict)
    by_uid: Mapping[str, PodRef] = field(default_factory=dict)


def _statuses(pod: Any) -> Iterable[Any]:
    status = pod.status
    if status is None:
        return ()
    return [
        *(status.container_statuses or ()),
        *(status.init_container_statuses or ()),
        *(status.ephemeral_container_statuses or ()),
    ]


def _build_index(items: Sequence[Any], gpu_resources: Sequence[str]) -> _Index:
    pods: list[_Pod] = []
    by_container: dict[str, PodRef] = {}
    by_uid: dict[str, PodRef] = {}
    for item in items:
        meta = item.metadata
        if meta is None or not meta.name or not meta.namespace:
            continue
        ref = PodRef(meta.namespace, meta.name, uid=meta.uid)
        phase = (item.status.phase if item.status else None) or "Unknown"
        pods.append(
            _Pod(ref, phase, dict(meta.annotations or {}), gpu_request(item, gpu_resources))
        )
        if meta.uid:
            by_uid[meta.uid] = ref
        for cs in _statuses(item):
            if cs.container_id:
                cid = strip_container_id(cs.container_id)
                by_container[cid] = PodRef(ref.namespace, ref.pod, cs.name, ref.uid)
    return _Index(tuple(pods), by_container, by_uid)


class PodDirectory:
    """The node's pods (a Service) and the lookups the sampler and the pipeline make."""

    name = "pods"

    def __init__(
        self,
        api: ApiClient,
        node: str,
        *,
        refresh_s: float = 30.0,
        miss_refresh_s: float = 5.0,
        proc_root: Path = Path("/proc"),
        gpu_annotations: Sequence[str] = DEFAULT_GPU_ANNOTATIONS,
        gpu_resources: Sequence[str] = KubernetesConfig().gpu_resources,
        pid_cache_size: int = 4096,
        request_timeout_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.refresh_s = refresh_s
        self.miss_refresh_s = miss_refresh_s
        self.proc_root = proc_root
        self.gpu_annotations = tuple(gpu_annotations)
        self.gpu_resources = tuple(gpu_resources)
        self.pid_cache_size = pid_cache_size
        self.request_timeout_s = request_timeout_s
        self.stats = PodDirectoryStats()
        self.synced = False  # a refresh has succeeded at least once
        self._core = KubeCore(api)
        self._monotonic = monotonic
        self._index = _Index()
        self._pids: OrderedDict[int, tuple[str, PodRef]] = OrderedDict()
        self._lock = threading.Lock()  # the pid cache and the counters, shared with a thread
        self._refresh_lock = asyncio.Lock()
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the service --------------------------------------------------------------------

    async def run(self) -> None:
        """Refresh now, then every ``refresh_s`` (sooner after a miss) until stopped."""
        self._loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                await self.refresh()
                await self._sleep()
        finally:
            self._loop = None

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _sleep(self) -> None:
        """Until the next periodic refresh, or an allowed early one a miss asked for."""
        deadline = self._monotonic() + self.refresh_s
        while not self._stopping:
            timeout = deadline - self._monotonic()
            if timeout <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return
            self._wake.clear()
            if self._stopping or self._refresh_due():
                return
            last = self._last_attempt or 0.0
            deadline = min(deadline, last + self.miss_refresh_s)

    def _refresh_due(self) -> bool:
        last = self._last_attempt
        return last is None or self._monotonic() - last >= self.miss_refresh_s

    def _request_refresh(self) -> None:
        """Wake :meth:`run` from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def refresh(self) -> bool:
        """List this node's pods; on failure keep the last good list. True when it worked."""
        async with self._refresh_lock:
            self._last_attempt = self._monotonic()
            try:
                result = await self._core.list_node_pods(
                    self.node,
                    resource_version="0",  # served from the API server's cache
                    timeout_s=float(self.request_timeout_s),
                )
            except Exception as e:  # the daemon carries on with the last list
                self._failed(e)
                return False
            self._index = _build_index(result.items, self.gpu_resources)
            with self._lock:
                self.stats.refreshes += 1
                self.stats.pods = len(self._index.pods)
            self.synced = True
            if self._last_error is not None:
                log.info("pods_refresh_recovered", node=self.node, pods=self.stats.pods)
                self._last_error = None
            return True

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self.stats.refresh_failures += 1
        text = api_error_text(error)
        if text != self._last_error:
            log.warning(
                "pods_refresh_failed", node=self.node, error=text, kept_pods=self.stats.pods
            )
            self._last_error = text

    # --- lookups ------------------------------------------------------------------------

    def pod_for_pid(self, pid: int) -> PodRef | None:
        """The pod (and container) a host pid runs in; cheap, safe from any thread.

        A pid whose process is gone answers from the pid cache. A container the pod list
        does not know asks :meth:`run` for an early refresh.
        """
        ref, unknown = self._lookup(pid)
        self._count(ref, unknown)
        if unknown:
            self._request_refresh()
        return ref

    async def resolve_pid(self, pid: int) -> PodRef | None:
        """:meth:`pod_for_pid`, refreshing once first when its container is not yet known."""
        ref, unknown = self._lookup(pid)
        if unknown and self._refresh_due():
            await self.refresh()
            ref, unknown = self._lookup(pid)
        self._count(ref, unknown)
        return ref

    def _count(self, ref: PodRef | None, unknown: bool) -> None:
        with self._lock:
            self.stats.lookups += 1
            self.stats.hits += ref is not None
            self.stats.misses += unknown

    def _lookup(self, pid: int) -> tuple[PodRef | None, bool]:
        """(pod, whether the container is unknown to the pod list)."""
        text = read_cgroup_file(pid, self.proc_root)
        if text is None:  # gone: the last answer for it, if any
            with self._lock:
                cached = self._pids.get(pid)
            return (cached[1] if cached else None), False
        found = parse_cgroup(text)
        if found is None:  # a host process (perhaps a reused pid)
            with self._lock:
                self._pids.pop(pid, None)
            return None, False
        cid, index = found.container_id, self._index
        with self._lock:
            ref = index.by_container.get(cid)
            if ref is None and (cached := self._pids.get(pid)) is not None and cached[0] == cid:
                ref = cached[1]  # the pod left the list but this process lingers
            if ref is None and found.pod_uid is not None:
                ref = index.by_uid.get(found.pod_uid)
            if ref is not None:
                self._remember(pid, cid, ref)
        return ref, ref is None or ref.container is None

    def _remember(self, pid: int, container_id: str, ref: PodRef) -> None:
        self._pids[pid] = (container_id, ref)
        self._pids.move_to_end(pid)
        while len(self._pids) > self.pid_cache_size:
            self._pids.popitem(last=False)

    def gpu_pods(self, gpus: Sequence[GpuInfo]) -> list[GpuPod]:
        """Pods holding GPUs by annotation, or by requesting at least every GPU here."""
        found: dict[tuple[str, PodRef], GpuPod] = {}
        for pod in self._index.pods:
            if pod.phase in _DONE_PHASES:
                continue
            for key in self.gpu_annotations:
                if value := pod.annotations.get(key):
                    for uuid in annotated_gpus(value, gpus):
                        found.setdefault((uuid, pod.ref), GpuPod(uuid, pod.ref, "annotation"))
            if gpus and pod.gpus_requested >= len(gpus):
                for gpu in gpus:
                    found.setdefault((gpu.uuid, pod.ref), GpuPod(gpu.uuid, pod.ref, "whole-node"))
        return list(found.values())
