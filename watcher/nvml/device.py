"""NVML reads for one GPU through ``pynvml``: discovery facts and one tick's sample.

Blocking (ctypes calls into the driver library): callers run these in a worker thread.
Each call that answers NotSupported is remembered per GPU and never asked again; other
errors are counted and logged once per (GPU, call, error), not every tick. A GPU that
answers GpuIsLost raises :class:`GpuLostError` so the sampler can mark it lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pynvml
import structlog

from store.pci import normalize_pci
from store.records import GpuInfo, GpuProcess, GpuSample
from watcher.errors import SourceError

__all__ = ["GpuLostError", "NvmlDevice", "NvmlUnavailableError", "init_nvml", "shutdown_nvml"]

log = structlog.get_logger("watcher.nvml.device")

T = TypeVar("T")

_NVLINK_COUNTERS = (
    pynvml.NVML_NVLINK_ERROR_DL_REPLAY,
    pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
    pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
    pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
)
_ECC = (
    ("ecc_corrected_volatile", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
    (
        "ecc_uncorrected_volatile",
        pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        pynvml.NVML_VOLATILE_ECC,
    ),
    (
        "ecc_corrected_aggregate",
        pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
        pynvml.NVML_AGGREGATE_ECC,
    ),
    (
        "ecc_uncorrected_aggregate",
        pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        pynvml.NVML_AGGREGATE_ECC,
    ),
)


class NvmlUnavailableError(SourceError):
    """No usable NVML: no driver library, or the driver is not loaded."""


class GpuLostError(SourceError):
    """The GPU answered GpuIsLost: it fell off the bus or was removed."""


def init_nvml() -> None:
    """``nvmlInit`` with an error that says what is missing."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise NvmlUnavailableError(
            f"NVML is not available ({e}); no NVIDIA driver on this host, so GPUs are not "
            "sampled (XIDs are still read from the kernel log)"
        ) from e


def shutdown_nvml() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as e:
        log.warning("nvml_shutdown_failed", error=str(e))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlDevice:
    """One GPU's NVML handle plus what we learned about which calls it answers."""

    def __init__(self, index: int, handle: Any, *, proc_root: Path = Path("/proc")) -> None:
        self.index = index
        self.handle = handle
        self.unsupported: set[str] = set()
        self.errors: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self._nvlinks: int | None = None
        self._proc_root = proc_root
        self._names: dict[int, str] = {}
        self.info: GpuInfo | None = None

    @classmethod
    def by_index(cls, index: int, *, proc_root: Path = Path("/proc")) -> NvmlDevice:
        return cls(index, pynvml.nvmlDeviceGetHandleByIndex(index), proc_root=proc_root)

    def call(self, name: str, fn: Callable[[], T]) -> T | None:
        """``fn()`` or None when this GPU does not support it or it failed (counted)."""
        if name in self.unsupported:
            return None
        try:
            return fn()
        except pynvml.NVMLError_NotSupported:
            self.unsupported.add(name)
            log.debug("nvml_not_supported", gpu=self.index, call=name)
        except pynvml.NVMLError_GpuIsLost as e:
            raise GpuLostError(f"GPU {self.index} is lost ({name}: {e})") from e
        except pynvml.NVMLError as e:
            self.errors[name] += 1
            if (name, str(e)) not in self._logged:
                self._logged.add((name, str(e)))
                log.warning("nvml_call_failed", gpu=self.index, call=name, error=str(e))
        return None

    def discover(self, *, driver_version: str | None, cuda_version: str | None) -> GpuInfo:
        """The GPU's identity and limits (cached on ``self.info``)."""
        h = self.handle
        uuid = _text(pynvml.nvmlDeviceGetUUID(h))
        pci = pynvml.nvmlDeviceGetPciInfo(h)
        constraints = self.call(
            "power_constraints", lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h)
        )
        default_mw = self.call(
            "power_default", lambda: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h)
        )
        memory = self.call("memory", lambda: pynvml.nvmlDeviceGetMemoryInfo(h))
        ecc = self.call("ecc_mode", lambda: pynvml.nvmlDeviceGetEccMode(h))
        mig = self.call("mig_mode", lambda: pynvml.nvmlDeviceGetMigMode(h))
        serial = self.call("serial", lambda: _text(pynvml.nvmlDeviceGetSerial(h)))
        self.info = GpuInfo(
            uuid=uuid,
            index=self.index,
            name=_text(pynvml.nvmlDeviceGetName(h)),
            pci_bus_id=normalize_pci(_text(pci.busId)),
            serial=serial,
            driver_version=driver_version,
            cuda_version=cuda_version,
            slowdown_temp_c=self._threshold(pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            shutdown_temp_c=self._threshold(pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
            power_limit_default_w=None if default_mw is None else default_mw / 1000,
            power_limit_min_w=None if constraints is None else constraints[0] / 1000,
            power_limit_max_w=None if constraints is None else constraints[1] / 1000,
            memory_total_bytes=None if memory is None else int(memory.total),
            ecc_enabled=None if ecc is None else bool(ecc[0]),
            mig_enabled=None if mig is None else bool(mig[0]),
        )
        return self.info

    def sample(self, ts_ms: int) -> tuple[GpuSample, tuple[GpuProcess, ...]]:
        """One tick's readings; raises GpuLostError if the GPU has gone."""
        assert self.info is not None, "discover() first"
        h, c = self.handle, self.call
        util = c("utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
        memory = c("memory", lambda: pynvml.nvmlDeviceGetMemoryInfo(h))
        power_mw = c("power", lambda: pynvml.nvmlDeviceGetPowerUsage(h))
        limit_mw = c("power_limit", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h))
        remap = c("remapped_rows", lambda: pynvml.nvmlDeviceGetRemappedRows(h))
        processes = self._processes()
        nvlink_active, nvlink_errors = self._nvlink()
        sample = GpuSample(
            uuid=self.info.uuid,
            ts_ms=ts_ms,
            temperature_c=c(
                "temperature",
                lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            ),
            power_w=None if power_mw is None else power_mw / 1000,
            power_limit_w=None if limit_mw is None else limit_mw / 1000,
            sm_clock_mhz=c(
                "sm_clock", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
            ),
            memory_clock_mhz=c(
                "mem_clock", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)
            ),
            gpu_util_pct=None if util is None else int(util.gpu),
            memory_util_pct=None if util is None else int(util.memory),
            memory_used_bytes=None if memory is None else int(memory.used),
            memory_total_bytes=None if memory is None else int(memory.total),
            remapped_rows_corrected=None if remap is None else int(remap[0]),
            remapped_rows_uncorrected=None if remap is None else int(remap[1]),
            remap_pending=None if remap is None else bool(remap[2]),
            remap_failure=None if remap is None else bool(remap[3]),
            clocks_event_reasons=c(
                "clocks_event_reasons",
                lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
            ),
            pcie_replays=c("pcie_replays", lambda: pynvml.nvmlDeviceGetPcieReplayCounter(h)),
            nvlink_active=nvlink_active,
            nvlink_errors=nvlink_errors,
            process_count=None if processes is None else len(processes),
            **self._ecc(),
        )
        return sample, processes or ()

    def _threshold(self, which: int) -> int | None:
        return self.call(
            f"temperature_threshold_{which}",
            lambda: pynvml.nvmlDeviceGetTemperatureThreshold(self.handle, which),
        )

    def _ecc(self) -> dict[str, Any]:
        """The four ECC counters, keyed by GpuSample field."""
        return {
            field: self.call(
                field, partial(pynvml.nvmlDeviceGetTotalEccErrors, self.handle, error_type, counter)
            )
            for field, error_type, counter in _ECC
        }

    def _processes(self) -> tuple[GpuProcess, ...] | None:
        assert self.info is not None
        procs = self.call(
            "processes", lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        )
        if procs is None:
            return None
        return tuple(
            GpuProcess(
                uuid=self.info.uuid,
                pid=int(p.pid),
                used_memory_bytes=None if p.usedGpuMemory is None else int(p.usedGpuMemory),
                name=self._process_name(int(p.pid)),
            )
            for p in procs
        )

    def _process_name(self, pid: int) -> str | None:
        """The driver's name for the process (as nvidia-smi shows), else /proc's ``comm``.

        The driver knows host pids even when our container does not share the host's pid
        namespace; names are cached per pid (a pid's name does not change while it runs).
        """
        name = self._names.get(pid)
        if name is None:
            raw = self.call("process_name", partial(pynvml.nvmlSystemGetProcessName, pid))
            name = Path(_text(raw)).name if raw else self._proc_comm(pid)
            if name:
                if len(self._names) > 4096:
                    self._names.clear()
                self._names[pid] = name
        return name

    def _proc_comm(self, pid: int) -> str | None:
        try:
            return (self._proc_root / str(pid) / "comm").read_text().strip() or None
        except OSError:
            return None  # not in our pid namespace, or already gone

    def _nvlink(self) -> tuple[int | None, int | None]:
        """(active links, summed DL error counters) over the links this GPU has."""
        if self._nvlinks is None:
            self._nvlinks = self._count_nvlinks()
        if not self._nvlinks:
            return None, None
        states: list[int | None] = []
        counters: list[int] = []
        for link in range(self._nvlinks):
            states.append(
                self.call(
                    "nvlink_state", partial(pynvml.nvmlDeviceGetNvLinkState, self.handle, link)
                )
            )
            for counter in _NVLINK_COUNTERS:
                value = self.call(
                    f"nvlink_error_{counter}",
                    partial(pynvml.nvmlDeviceGetNvLinkErrorCounter, self.handle, link, counter),
                )
                if value is not None:
                    counters.append(int(value))
        # A link we could not read is not a down link: no reading rather than a made-up 0.
        active = None if None in states else sum(bool(s) for s in states)
        return active, (sum(counters) if counters else None)

    def _count_nvlinks(self) -> int:
        links = 0
        for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
            try:
                pynvml.nvmlDeviceGetNvLinkState(self.handle, link)
            except pynvml.NVMLError_GpuIsLost as e:
                raise GpuLostError(f"GPU {self.index} is lost (nvlink_state: {e})") from e
            except pynvml.NVMLError:
                break
            links += 1
        return links
