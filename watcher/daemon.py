"""The node daemon, assembled once: log sources and NVML -> pipeline -> batched writer.

Every task it starts is awaited or cancelled in :meth:`Daemon.run`'s shutdown path:
stop the sources and the sampler, flush the pipeline, drain the writer's queue, commit,
close. Without an NVIDIA driver it runs on the kernel log alone and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import structlog

from store.db import prepare_store
from store.errors import XidwatchError
from store.records import Checkpoint, GpuSample, XidEvent
from store.retention import apply_retention
from store.writer import StoreWriter
from watcher.clock import boot_wall_ms, now_ms, read_boot_id
from watcher.config import DaemonConfig
from watcher.kernel.catalog import XidCatalog, default_catalog
from watcher.kernel.kmsg import KmsgDevice, KmsgSource, OsKmsgDevice, kmsg_source_key
from watcher.kernel.logfile import FileSource
from watcher.nvml.device import NvmlUnavailableError
from watcher.nvml.events import NvmlXidSource
from watcher.nvml.sampler import NvmlSampler
from watcher.pipeline import PipelineStats, XidPipeline
from watcher.prometheus import XidCounts
from watcher.records import LogSource, Service
from watcher.verdicts import VerdictBoard

if TYPE_CHECKING:
    from kubernetes.aio.client import ApiClient

    from watcher.k8s.events import XidEventPoster
    from watcher.k8s.pods import PodDirectory
    from watcher.sim.simulate import Simulation

__all__ = ["Daemon", "HostFacts"]


def _task_problem(task: asyncio.Task[Any]) -> str | None:
    """None while a part's task runs; else how it ended."""
    if not task.done():
        return None
    if task.cancelled():
        return "stopped"
    error = task.exception()
    return f"failed: {error}" if error is not None else "finished"


log = structlog.get_logger("watcher.daemon")

POD_LIST_AT_START_S = 5.0  # how long start waits for this node's pod list
SERVICE_START_S = 30.0  # how long start waits for a service (the HTTP port) to be up
EVENTS_DRAIN_S = 5.0  # how long stop waits for the last Kubernetes Events to be posted
KMSG_USER_SPACE_POLL_S = 0.1  # kmsg drain timer, only where user-space records are accepted


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The host dependencies the daemon reads, injectable for tests and the demo."""

    boot_id: str = field(default_factory=read_boot_id)
    boot_wall_ms: Callable[[], int] = boot_wall_ms
    now_ms: Callable[[], int] = now_ms
    open_kmsg: Callable[[], KmsgDevice] | None = None


class Daemon:
    """One node's watcher. Build it, then ``await run(stop_event)``."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        host: HostFacts | None = None,
        catalog: XidCatalog | None = None,
    ) -> None:
        self.config = config
        self.host = host or HostFacts()
        self.started_ms = self.host.now_ms()
        self.xid_counts = XidCounts()  # exact, for /metrics: folded flood events included
        self.verdicts = VerdictBoard()  # each GPU's verdict, for /metrics
        self.writer = StoreWriter(config.db_path, flood=config.flood, on_commit=self._committed)
        self.catalog = catalog or default_catalog()
        self._xids_queued = 0  # XIDs handed to the writer: what SIGTERM on a full disk loses
        self.pipeline_stats = PipelineStats()  # for /metrics, before the pipeline is built
        self.pipeline: XidPipeline  # built by run() once NVML's GPUs and the pods are known
        self.sources: list[LogSource] = []
        self.sampler: NvmlSampler | None = None
        self.nvml_events: NvmlXidSource | None = None
        self.simulation: Simulation | None = None
        self.services: list[Service] = []
        self.pods: PodDirectory | None = None  # Kubernetes attribution, on a cluster
        self.k8s_events: XidEventPoster | None = None
        self._k8s_api: ApiClient | None = None
        self.ready = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._retention_due = asyncio.Event()  # set: run retention now, not in an hour

    def reconfigure(self, config: DaemonConfig) -> None:
        """Take the settings that apply while running from ``config``.

        The sample interval (from the next tick), the retention tiers (applied at once)
        and the log level (recorded; the caller reconfigures logging). Anything else in
        ``config`` is ignored: it needs a restart.
        """
        old = self.config
        self.config = replace(
            old,
            sample_interval_s=config.sample_interval_s,
            retention=config.retention,
            log_level=config.log_level,
        )
        if self.sampler is not None:
            self.sampler.interval_s = config.sample_interval_s
        if config.retention != old.retention:
            self._retention_due.set()

    def _queue_for_writer(self, item: XidEvent | Checkpoint) -> None:
        if isinstance(item, XidEvent):
            self._xids_queued += 1
        self.writer.put(item)

    @property
    def xids_not_stored(self) -> int:
        """XIDs handed to the writer that no commit has yet stored, folded or skipped."""
        s = self.writer.stats
        return max(0, self._xids_queued - s.events_stored - s.events_folded - s.duplicates_skipped)

    def _committed(self, events: Sequence[XidEvent]) -> None:
        """XIDs the writer made durable: counted for /metrics, posted as Kubernetes Events."""
        self.xid_counts.add(events)
        self.verdicts.xids_committed()
        if self.k8s_events is not None:
            self.k8s_events.submit(events)

    async def live_readings(self) -> Mapping[str, GpuSample]:
        """The sampler's newest reading per GPU UUID (empty without NVML)."""
        return dict(self.sampler.latest) if self.sampler is not None else {}

    def readiness(self) -> dict[str, str | None]:
        """Each running part and what is wrong with it (None: fine), for ``/readyz``."""
        if not self.ready.is_set():
            return {"daemon": "starting"}
        parts = {name: _task_problem(task) for name, task in self._tasks.items()}
        if self.writer.failing is not None:
            parts["writer"] = f"store not writable, retrying: {self.writer.failing}"
        sampler = self.sampler
        if sampler is not None and sampler.stats.last_sample_ms:
            age_s = (self.host.now_ms() - sampler.stats.last_sample_ms) / 1000
            if age_s > 3 * sampler.interval_s + 5:
                parts[sampler.name] = f"no sample for {age_s:.0f} s"
        return parts

    async def run(self, stop: asyncio.Event, *, services: Sequence[Service] = ()) -> None:
        """Run until ``stop`` is set or a part fails; then shut down cleanly.

        ``services`` are parts from layers above the watcher (the HTTP port serving MCP and
        metrics): started with the rest and stopped before the store closes.
        """
        self.services = list(services)
        if self.config.simulate is not None:
            from watcher.sim.simulate import Simulation  # only a simulating daemon loads it

            self.simulation = Simulation(self.config.simulate, boot_wall_ms=self.host.boot_wall_ms)
        await asyncio.to_thread(prepare_store, self.config.db_path)
        if self.simulation is not None:
            self.simulation.install()
        try:
            await self.writer.open()
            await self._run(stop)
        finally:
            await self.writer.aclose_connection()  # an open aiosqlite thread keeps us alive
            if self.simulation is not None:
                self.simulation.uninstall()

    async def _run(self, stop: asyncio.Event) -> None:
        # The services (the HTTP port) first: a port that cannot be bound ends start-up
        # before anything is read, rather than leaving a daemon nobody can probe or scrape.
        services = await self._start_services()
        try:
            self.sources = self._build_sources()
            await self._start_kubernetes()
            await self._start_nvml()
            self.pipeline = self._build_pipeline()
            if self.sampler is not None and self.config.nvml_events:
                self.nvml_events = NvmlXidSource(
                    self.sampler.devices, self.pipeline.handle_nvml, now_ms=self.host.now_ms
                )
        except BaseException:
            await self._stop_services(services)
            raise
        critical: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.writer.run(), name="writer"),
            *(
                asyncio.create_task(s.run(self.pipeline.handle), name=f"source:{s.name}")
                for s in self.sources
            ),
        ]
        # Parts that finish soon after stop() (awaited at shutdown), then background loops.
        stoppable = [
            *services,
            *(
                self._task(part.run(), part.name)
                for part in (self.sampler, self.nvml_events, self.pods)
                if part is not None
            ),
        ]
        background = [
            self._task(self._flush_checkpoints(), "checkpoints"),
            self._task(self._retention_loop(), "retention"),
            self._task(
                self.verdicts.run(
                    self.config.db_path,
                    node=self.config.node,
                    now_ms=self.host.now_ms,
                    retention=lambda: self.config.retention,
                ),
                "verdicts",
            ),
        ]
        if self.simulation is not None and self.simulation.runner is not None:
            background.append(self._task(self.simulation.runner.run(), "scenario"))
        # Last to stop: it posts Events for what the writer's final commit makes durable.
        poster = self._task(self.k8s_events.run(), "k8s-events") if self.k8s_events else None
        self._tasks = {t.get_name(): t for t in (*critical, *stoppable)}
        if poster is not None:
            self._tasks[poster.get_name()] = poster
        stopper = asyncio.create_task(stop.wait(), name="stop")
        log.info(
            "daemon_started",
            db=str(self.config.db_path),
            node=self.config.node,
            sources=[s.name for s in self.sources],
            gpus=len(self.sampler.devices) if self.sampler else 0,
            boot_id=self.host.boot_id,
        )
        self.ready.set()
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait(
                [stopper, *critical, *services], return_when=asyncio.FIRST_COMPLETED
            )
            failure = next(
                (t.exception() for t in done if t is not stopper and t.exception()), None
            )
        finally:
            await self._shutdown(critical, stoppable, [*background, stopper], poster)
        if failure is not None:
            raise failure

    async def _start_services(self) -> list[asyncio.Task[None]]:
        """Start each service and wait until it is up (one with ``wait_started``) or failed."""
        tasks = [self._task(s.run(), s.name) for s in self.services]
        try:
            for service, task in zip(self.services, tasks, strict=True):
                started = getattr(service, "wait_started", None)
                if started is None:
                    continue
                waiter = asyncio.create_task(started(SERVICE_START_S))
                await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    waiter.cancel()
                    task.result()  # raises why it could not start
                    raise XidwatchError(f"{service.name} stopped while starting")
                try:
                    await waiter
                except TimeoutError:
                    raise XidwatchError(
                        f"{service.name} did not start in {SERVICE_START_S:.0f} s"
                    ) from None
        except BaseException:
            await self._stop_services(tasks)
            raise
        return tasks

    async def _stop_services(self, tasks: list[asyncio.Task[None]]) -> None:
        for service in self.services:
            service.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.shutdown_timeout_s / 2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _task(coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[Any]:
        return asyncio.create_task(coro, name=name)

    def _build_sources(self) -> list[LogSource]:
        cfg, host = self.config, self.host
        sources: list[LogSource] = []
        user_space = cfg.kmsg_any_facility or cfg.accept_injected  # records the kernel won't wake
        if cfg.kmsg:
            boot_id, open_kmsg = host.boot_id, host.open_kmsg
            if self.simulation is not None and open_kmsg is None:
                boot_id, open_kmsg = self.simulation.boot_id, self.simulation.kmsg.reopen
            sources.append(
                KmsgSource(
                    open_kmsg or (lambda: OsKmsgDevice(cfg.kmsg_path)),
                    boot_id=boot_id,
                    boot_wall_ms=host.boot_wall_ms,
                    now_ms=host.now_ms,
                    after_seq=self.writer.watermark(kmsg_source_key(boot_id)),
                    poll_interval_s=KMSG_USER_SPACE_POLL_S if user_space else None,
                )
            )
        files = [
            FileSource(
                path,
                watermark=self.writer.watermark,
                boot_wall_ms=host.boot_wall_ms(),
                now_ms=host.now_ms,
                from_start=cfg.log_files_from_start,
            )
            for path in cfg.log_files
        ]
        for f in files:
            f.check()  # a file that cannot be followed ends start-up
        return [*sources, *files]

    async def _start_nvml(self) -> None:
        """Discover GPUs; without a driver, say so once and carry on with the kernel log."""
        if not self.config.nvml:
            return
        sampler = NvmlSampler(
            self.writer.put,
            interval_s=self.config.sample_interval_s,
            now_ms=self.host.now_ms,
            proc_root=self.config.host_proc,
            pods=self.pods,
        )
        try:
            await sampler.start()
        except NvmlUnavailableError as e:
            log.warning("nvml_unavailable", reason=str(e))
            return
        self.sampler = sampler

    def _build_pipeline(self) -> XidPipeline:
        cfg = self.config
        gpus = self.sampler.gpus if self.sampler is not None else ()
        return XidPipeline(
            self._queue_for_writer,
            self.catalog,
            node=cfg.node,
            now_ms=self.host.now_ms,
            hold_nvml=cfg.kmsg,
            accept_injected=cfg.accept_injected,
            user_space_xids=cfg.kmsg_any_facility,
            gpu_uuids={g.pci_bus_id: g.uuid for g in gpus},
            pods=self.pods,
            stats=self.pipeline_stats,
        )

    def _stoppable_parts(self) -> tuple[Service | None, ...]:
        return (self.sampler, self.nvml_events, self.pods, *self.services)

    async def _start_kubernetes(self) -> None:
        """On a cluster: pod attribution, and Events and the Node condition if asked for.

        Off a cluster (no service account, no kubeconfig) one line says so and the daemon
        carries on; the client library is imported only when Kubernetes is enabled.
        """
        k = self.config.kubernetes
        if not k.enabled:
            return
        from watcher.k8s.client import connect_kubernetes
        from watcher.k8s.pods import PodDirectory

        api = await connect_kubernetes(k.kubeconfig)
        if api is None:
            return
        self._k8s_api = api
        self.pods = PodDirectory(
            api,
            self.config.node,
            refresh_s=k.pod_refresh_s,
            proc_root=self.config.host_proc,
            gpu_annotations=k.gpu_annotations,
            gpu_resources=k.gpu_resources,
        )
        # XIDs from the first seconds need the pod list too; an API that does not answer
        # soon only delays attribution (the refresh loop keeps trying), never the daemon.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pods.refresh(), POD_LIST_AT_START_S)
        if k.events:
            self.k8s_events = self._event_poster(api)

    def _event_poster(self, api: ApiClient) -> XidEventPoster:
        from watcher.k8s.condition import NodeCondition
        from watcher.k8s.event_queue import XidEventQueue
        from watcher.k8s.event_writer import API_BACKOFF, KubeEventWriter
        from watcher.k8s.events import XidEventPoster

        k = self.config.kubernetes
        condition = None
        if k.node_condition is not None:
            condition = NodeCondition(
                k.node_condition, quiet_s=k.node_condition_quiet_s, retry_s=API_BACKOFF.max_s
            )
        return XidEventPoster(
            XidEventQueue(actions=k.event_actions),
            KubeEventWriter(api, self.config.node, catalog=self.catalog),
            condition=condition,
        )

    async def _flush_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.config.checkpoint_interval_s)
            self.pipeline.flush()

    async def _retention_loop(self) -> None:
        while True:
            self._retention_due.clear()
            try:  # the policy is read each round: a config reload may change it
                await self.writer.exclusive(
                    lambda conn: apply_retention(
                        conn, self.config.retention, now_ms=self.host.now_ms()
                    )
                )
            except sqlite3.Error as e:
                log.warning("retention_failed", error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retention_due.wait(), self.config.retention_interval_s)

    async def _stop_poster(self, task: asyncio.Task[None]) -> None:
        """Stop the Event poster once the last XIDs are committed and handed to it."""
        assert self.k8s_events is not None
        self.k8s_events.stop()
        _, pending = await asyncio.wait([task], timeout=EVENTS_DRAIN_S)
        for t in pending:
            log.warning("k8s_events_not_drained", queued=self.k8s_events.queued)
            t.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _shutdown(
        self,
        critical: list[asyncio.Task[Any]],
        stoppable: list[asyncio.Task[None]],
        background: list[asyncio.Task[Any]],
        poster: asyncio.Task[None] | None,
    ) -> None:
        log.info("daemon_stopping", queued=self.writer.queue_depth)
        writer_task, source_tasks = critical[0], critical[1:]
        for task in background:
            task.cancel()
        for source in self.sources:
            source.stop()
        for part in self._stoppable_parts():
            if part is not None:
                part.stop()
        parts = [*source_tasks, *stoppable]
        if parts:
            await asyncio.wait(parts, timeout=self.config.shutdown_timeout_s / 2)
        for task in parts:
            task.cancel()
        await asyncio.gather(*parts, *background, return_exceptions=True)
        self.pipeline.flush(final=True)
        await self.writer.close()
        await asyncio.wait([writer_task], timeout=self.config.shutdown_timeout_s / 2)
        if not writer_task.done():
            # A full disk: the writer still retries. Kernel log XIDs are not lost (the
            # watermark covers only what was committed) but the operator must know.
            log.warning(
                "xids_not_stored",
                queued=self.xids_not_stored,
                error=self.writer.failing,
                hint="the store could not take them; they are re-read from /dev/kmsg "
                "(and tailed log files) on the next start",
            )
        writer_task.cancel()
        await asyncio.gather(writer_task, return_exceptions=True)
        await self.writer.aclose_connection()
        if poster is not None:
            await self._stop_poster(poster)
        if self.sampler is not None:
            await self.sampler.close()
        if self._k8s_api is not None:
            from watcher.k8s.client import close_kubernetes

            await close_kubernetes(self._k8s_api)
        log.info(
            "daemon_stopped",
            stored=self.writer.stats.events_stored,
            samples=self.writer.stats.samples_stored,
        )
