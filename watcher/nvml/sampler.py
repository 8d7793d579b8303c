"""The NVML sampler: every tick, read every GPU in a worker thread and hand the batch on.

NVML calls never run on the event loop thread. A tick that overruns its interval makes
the ticks it overlapped be skipped and counted, never queued up behind it. A GPU that
answers GpuIsLost is marked lost (a :class:`GpuStateEvent`), the others keep being
sampled, and the lost one is probed each tick and picked up again when it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pynvml
import structlog

from store.records import GpuInfo, GpuProcess, GpuSample, GpuStateEvent, SampleBatch
from watcher.clock import now_ms as wall_now_ms
from watcher.nvml.device import GpuLostError, NvmlDevice, init_nvml, shutdown_nvml
from watcher.records import PodLookup

__all__ = ["NvmlSampler", "SamplerStats"]

log = structlog.get_logger("watcher.nvml.sampler")


@dataclass(slots=True)
class SamplerStats:
    """Counters the daemon exports; cumulative since start."""

    ticks: int = 0
    ticks_skipped: int = 0
    samples: int = 0
    gpus_lost: int = 0
    gpus_recovered: int = 0
    last_tick_s: float = 0.0
    last_sample_ms: int = 0
    nvml_errors: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _TickResult:
    batch: SampleBatch
    states: list[GpuStateEvent]


class NvmlSampler:
    """Discovers GPUs once, then samples them every ``interval_s`` until stopped."""

    name = "nvml-sampler"

    def __init__(
        self,
        put: Callable[[SampleBatch | GpuStateEvent], None],
        *,
        interval_s: float = 10.0,
        now_ms: Callable[[], int] = wall_now_ms,
        proc_root: Path = Path("/proc"),
        pods: PodLookup | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("sample interval must be positive")
        self.interval_s = interval_s
        self.stats = SamplerStats()
        self.devices: list[NvmlDevice] = []
        self.latest: dict[str, GpuSample] = {}
        self.pods = pods  # Kubernetes attribution, when on a cluster
        self._put = put
        self._now_ms = now_ms
        self._proc_root = proc_root
        self._lost: dict[str, NvmlDevice] = {}
        self._announce: list[GpuInfo] = []
        self._stop = asyncio.Event()

    @property
    def gpus(self) -> list[GpuInfo]:
        return [d.info for d in self.devices if d.info is not None]

    async def start(self) -> None:
        """Initialise NVML and discover the GPUs; raises NvmlUnavailableError without a driver."""
        await asyncio.to_thread(self._discover)
        log.info(
            "nvml_gpus_discovered",
            count=len(self.devices),
            gpus=[f"{g.index}:{g.name}:{g.pci_bus_id}" for g in self.gpus],
        )

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        await asyncio.to_thread(shutdown_nvml)

    async def run(self) -> None:
        """Tick until :meth:`stop`; see the module docstring for overruns."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stop.is_set():
            started = loop.time()
            result = await asyncio.to_thread(self._tick, self._now_ms())
            self._publish(result)
            self.stats.last_tick_s = loop.time() - started
            next_at += self.interval_s
            late = loop.time() - next_at
            if late > 0:
                missed = math.floor(late / self.interval_s) + 1
                self.stats.ticks_skipped += missed
                next_at += missed * self.interval_s
                log.warning(
                    "sample_tick_overran",
                    took_s=round(self.stats.last_tick_s, 3),
                    interval_s=self.interval_s,
                    skipped=missed,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - loop.time()))

    def tick_now(self) -> None:
        """One synchronous tick (tests, benchmarks); the caller owns the thread it runs in."""
        self._publish(self._tick(self._now_ms()))

    def _discover(self) -> None:
        init_nvml()
        driver = _text_or_none(pynvml.nvmlSystemGetDriverVersion)
        cuda = _cuda_version()
        for index in range(pynvml.nvmlDeviceGetCount()):
            device = NvmlDevice.by_index(index, proc_root=self._proc_root)
            device.discover(driver_version=driver, cuda_version=cuda)
            self.devices.append(device)
        self._announce = self.gpus

    def _tick(self, ts_ms: int) -> _TickResult:
        samples: list[GpuSample] = []
        processes: list[GpuProcess] = []
        states: list[GpuStateEvent] = []
        for device in self.devices:
            info = device.info
            assert info is not None
            if info.uuid in self._lost and not self._recovered(device, ts_ms, states):
                continue
            try:
                sample, procs = device.sample(ts_ms)
            except GpuLostError as e:
                self._lost[info.uuid] = device
                states.append(GpuStateEvent(info.uuid, ts_ms, "lost", str(e)))
                log.error("gpu_lost", gpu=info.index, pci=info.pci_bus_id, uuid=info.uuid)
                continue
            samples.append(sample)
            processes.extend(procs)
        announce, self._announce = self._announce, []
        batch = SampleBatch(ts_ms, tuple(samples), tuple(processes), tuple(announce))
        return _TickResult(self._attributed(batch), states)

    def _attributed(self, batch: SampleBatch) -> SampleBatch:
        """The batch with each process's pod and the pods holding GPUs (on Kubernetes)."""
        pods = self.pods
        if pods is None:
            return batch
        processes = tuple(replace(p, pod=pods.pod_for_pid(p.pid)) for p in batch.processes)
        return replace(batch, processes=processes, pods=tuple(pods.gpu_pods(self.gpus)))

    def _recovered(self, device: NvmlDevice, ts_ms: int, states: list[GpuStateEvent]) -> bool:
        """Probe a lost GPU by UUID; if it answers again, take its new handle."""
        info = device.info
        assert info is not None
        try:
            device.handle = pynvml.nvmlDeviceGetHandleByUUID(info.uuid)
            pynvml.nvmlDeviceGetTemperature(device.handle, pynvml.NVML_TEMPERATURE_GPU)
        except pynvml.NVMLError_NotSupported:
            pass  # answering, just not this call
        except pynvml.NVMLError:
            return False
        del self._lost[info.uuid]
        states.append(GpuStateEvent(info.uuid, ts_ms, "recovered", "answering NVML again"))
        self._announce.append(info)
        log.warning("gpu_recovered", gpu=info.index, pci=info.pci_bus_id, uuid=info.uuid)
        return True

    def _publish(self, result: _TickResult) -> None:
        self.stats.ticks += 1
        batch = result.batch
        if batch.samples or batch.gpus:
            self._put(batch)  # first: it announces GPUs that the state events refer to
        for state in result.states:
            if state.state == "lost":
                self.stats.gpus_lost += 1
            else:
                self.stats.gpus_recovered += 1
            self._put(state)
        self.stats.samples += len(batch.samples)
        for sample in batch.samples:
            self.latest[sample.uuid] = sample
        if batch.samples:
            self.stats.last_sample_ms = batch.ts_ms
        self.stats.nvml_errors = {
            f"{d.index}:{name}": n for d in self.devices for name, n in d.errors.items()
        }

    @property
    def lost_uuids(self) -> frozenset[str]:
        return frozenset(self._lost)


def _text_or_none(fn: Callable[[], str | bytes]) -> str | None:
    try:
        value = fn()
    except pynvml.NVMLError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version() -> str | None:
    try:
        v = int(pynvml.nvmlSystemGetCudaDriverVersion())
    except pynvml.NVMLError:
        return None
    return f"{v // 1000}.{v % 1000 // 10}"
