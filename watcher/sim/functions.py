"""The NVML symbols the simulated library exports, implemented against the fleet.

Each function is the body of one C entry point (or of several versions of one): it takes
pynvml's ctypes arguments, fills the out-parameters from the fleet or a GPU's
:class:`~watcher.sim.gpu.GpuReading`, and returns an NVML status code. ``@_exports``
registers it with :mod:`watcher.sim.library`, which resolves the handle and runs the common
checks first; a device function receives the GPU in place of the handle. Importing this
module is what registers them, so ``watcher.sim`` imports it.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

import pynvml

from watcher.sim.gpu import SimulatedGpu
from watcher.sim.library import _address, _EventSet, _exports, _set_address, _SimulatedLibrary

__all__: list[str] = []

_OK: int = pynvml.NVML_SUCCESS
_INVALID: int = pynvml.NVML_ERROR_INVALID_ARGUMENT
_NOT_SUPPORTED: int = pynvml.NVML_ERROR_NOT_SUPPORTED
_NOT_FOUND: int = pynvml.NVML_ERROR_NOT_FOUND
_GPU_IS_LOST: int = pynvml.NVML_ERROR_GPU_IS_LOST
_INSUFFICIENT_SIZE: int = pynvml.NVML_ERROR_INSUFFICIENT_SIZE
_TIMEOUT: int = pynvml.NVML_ERROR_TIMEOUT
_VERSION_MISMATCH: int = pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
_ERROR_STRINGS = {
    pynvml.NVML_SUCCESS: "Success",
    pynvml.NVML_ERROR_UNINITIALIZED: "Uninitialized",
    pynvml.NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    pynvml.NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    pynvml.NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    pynvml.NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
    pynvml.NVML_ERROR_NOT_FOUND: "Not Found",
    pynvml.NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    pynvml.NVML_ERROR_TIMEOUT: "Timeout",
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    pynvml.NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
    pynvml.NVML_ERROR_UNKNOWN: "Unknown Error",
}
_NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId outside MIG


# -- argument helpers ------------------------------------------------------------------


def _int(arg: Any) -> int:
    return int(arg.value) if hasattr(arg, "value") else int(arg)


def _put(ref: Any, value: int) -> int:
    """Store ``value`` through a ``byref(c_uint())``-style out-parameter."""
    ref._obj.value = value
    return _OK


def _put_text(buffer: Any, size: Any, text: str) -> int:
    data = text.encode()
    if len(data) + 1 > min(_int(size), len(buffer)):
        return _INSUFFICIENT_SIZE
    buffer.value = data
    return _OK


# -- system ----------------------------------------------------------------------------


@_exports("nvmlInitWithFlags")
def _init(lib: _SimulatedLibrary, flags: Any) -> int:
    lib.init_count += 1
    return _OK


@_exports("nvmlShutdown")
def _shutdown(lib: _SimulatedLibrary) -> int:
    lib.init_count -= 1
    return _OK


@_exports("nvmlErrorString")
def _error_string(lib: _SimulatedLibrary, code: Any) -> bytes:
    return _ERROR_STRINGS.get(_int(code), "Unknown Error").encode()


@_exports("nvmlSystemGetDriverVersion")
def _driver_version(lib: _SimulatedLibrary, buffer: Any, size: Any) -> int:
    return _put_text(buffer, size, lib.fleet.driver_version)


@_exports("nvmlSystemGetNVMLVersion")
def _nvml_version(lib: _SimulatedLibrary, buffer: Any, size: Any) -> int:
    return _put_text(buffer, size, f"{lib.fleet.cuda_version // 1000}.{lib.fleet.driver_version}")


@_exports("nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion_v2")
def _cuda_version(lib: _SimulatedLibrary, ref: Any) -> int:
    return _put(ref, lib.fleet.cuda_version)


@_exports("nvmlSystemGetProcessName")
def _process_name(lib: _SimulatedLibrary, pid: Any, buffer: Any, size: Any) -> int:
    with lib.fleet.lock:
        for gpu in lib.fleet.gpus:
            for p in gpu.reading().processes:
                if p.pid == _int(pid):
                    return _put_text(buffer, size, p.name)
    return _NOT_FOUND


@_exports("nvmlDeviceGetCount_v2")
def _count(lib: _SimulatedLibrary, ref: Any) -> int:
    return _put(ref, len(lib.fleet.gpus))


@_exports("nvmlDeviceGetHandleByIndex_v2")
def _handle_by_index(lib: _SimulatedLibrary, index: Any, ref: Any) -> int:
    i = _int(index)
    if not 0 <= i < len(lib.fleet.gpus):
        return _INVALID
    return _give_handle(lib, lib.fleet.gpus[i], ref)


@_exports("nvmlDeviceGetHandleByUUID")
def _handle_by_uuid(lib: _SimulatedLibrary, uuid: Any, ref: Any) -> int:
    wanted = uuid.value.decode() if hasattr(uuid, "value") else bytes(uuid).decode()
    for gpu in lib.fleet.gpus:
        if gpu.uuid == wanted:
            return _give_handle(lib, gpu, ref)
    return _NOT_FOUND


def _give_handle(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    if gpu.lost:
        return _GPU_IS_LOST
    _set_address(ref, lib.handle_address(gpu))
    return _OK


# -- events ----------------------------------------------------------------------------


@_exports("nvmlEventSetCreate")
def _event_set_create(lib: _SimulatedLibrary, ref: Any) -> int:
    with lib.fleet.lock:
        address = lib.base_address + 0x80_0000 + lib.next_event_set * 0x40
        lib.next_event_set += 1
        lib.event_sets[address] = _EventSet(lib.fleet.last_xid_seq)
    _set_address(ref, address)
    return _OK


@_exports("nvmlDeviceRegisterEvents", device=True)
def _register_events(
    lib: _SimulatedLibrary, gpu: SimulatedGpu, event_types: Any, event_set: Any
) -> int:
    es = lib.event_set(event_set)
    mask, from_seq = es.registered.get(gpu.index, (0, lib.fleet.last_xid_seq))
    es.registered[gpu.index] = (mask | _int(event_types), from_seq)
    return _OK


@_exports("nvmlEventSetWait_v2")
def _event_set_wait(lib: _SimulatedLibrary, event_set: Any, ref: Any, timeout_ms: Any) -> int:
    deadline = time.monotonic() + _int(timeout_ms) / 1000.0
    with lib.fleet.lock:
        while True:
            es = lib.event_set(event_set)  # fails if freed while waiting
            record = lib.next_xid(es)
            if record is not None:
                data = ref._obj
                gpu = lib.fleet.gpus[record.gpu_index]
                data.device = ctypes.cast(
                    ctypes.c_void_p(lib.handle_address(gpu)), pynvml.c_nvmlDevice_t
                )
                data.eventType = pynvml.nvmlEventTypeXidCriticalError
                data.eventData = record.event_data
                data.gpuInstanceId = data.computeInstanceId = _NO_INSTANCE
                return _OK
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _TIMEOUT
            lib.fleet.lock.wait(remaining)


@_exports("nvmlEventSetFree")
def _event_set_free(lib: _SimulatedLibrary, event_set: Any) -> int:
    with lib.fleet.lock:
        if lib.event_sets.pop(_address(event_set), None) is None:
            return _INVALID
        lib.fleet.lock.notify_all()
    return _OK


# -- device identity and limits ----------------------------------------------------------


@_exports("nvmlDeviceGetIndex", device=True)
def _index(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    return _put(ref, gpu.index)


@_exports("nvmlDeviceGetUUID", device=True)
def _uuid(lib: _SimulatedLibrary, gpu: SimulatedGpu, buffer: Any, size: Any) -> int:
    return _put_text(buffer, size, gpu.uuid)


@_exports("nvmlDeviceGetName", device=True)
def _name(lib: _SimulatedLibrary, gpu: SimulatedGpu, buffer: Any, size: Any) -> int:
    return _put_text(buffer, size, gpu.profile.name)


@_exports("nvmlDeviceGetSerial", device=True)
def _serial(lib: _SimulatedLibrary, gpu: SimulatedGpu, buffer: Any, size: Any) -> int:
    return _put_text(buffer, size, gpu.serial)


@_exports("nvmlDeviceGetPciInfo_v3", device=True)
def _pci_info(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    info = ref._obj
    domain, bus, rest = gpu.pci_bus_id.split(":")
    info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(rest[:2], 16)
    info.pciDeviceId = gpu.profile.pci_device_id
    info.pciSubSystemId = gpu.profile.pci_subsystem_id
    info.busId = gpu.pci_bus_id.encode()
    legacy = pynvml.NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT % (info.domain, info.bus, info.device)
    info.busIdLegacy = legacy.encode()
    return _OK


@_exports("nvmlDeviceGetTemperatureThreshold", device=True)
def _temperature_threshold(
    lib: _SimulatedLibrary, gpu: SimulatedGpu, threshold: Any, ref: Any
) -> int:
    """Shutdown, slowdown and max operating (GPU and memory); the acoustic and GPS
    thresholds are not reported by these data-center boards.
    """
    which, p = _int(threshold), gpu.profile
    if not 0 <= which < pynvml.NVML_TEMPERATURE_THRESHOLD_COUNT:
        return _INVALID
    value = {
        pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: p.shutdown_temp_c,
        pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: p.slowdown_temp_c,
        pynvml.NVML_TEMPERATURE_THRESHOLD_GPU_MAX: p.max_operating_temp_c,
        pynvml.NVML_TEMPERATURE_THRESHOLD_MEM_MAX: p.memory_max_temp_c,
    }.get(which)
    return _NOT_SUPPORTED if value is None else _put(ref, value)


@_exports("nvmlDeviceGetPowerManagementLimitConstraints", device=True)
def _power_constraints(
    lib: _SimulatedLibrary, gpu: SimulatedGpu, min_ref: Any, max_ref: Any
) -> int:
    _put(min_ref, round(gpu.profile.power_min_w * 1000))
    return _put(max_ref, round(gpu.profile.power_max_w * 1000))


@_exports("nvmlDeviceGetPowerManagementDefaultLimit", device=True)
def _power_default(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    return _put(ref, round(gpu.profile.power_default_w * 1000))


@_exports("nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit", device=True)
def _power_limit(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    return _put(ref, gpu.reading().power_limit_mw)


@_exports("nvmlDeviceGetEccMode", device=True)
def _ecc_mode(lib: _SimulatedLibrary, gpu: SimulatedGpu, current: Any, pending: Any) -> int:
    _put(current, pynvml.NVML_FEATURE_ENABLED)
    return _put(pending, pynvml.NVML_FEATURE_ENABLED)


@_exports("nvmlDeviceGetMigMode", device=True)
def _mig_mode(lib: _SimulatedLibrary, gpu: SimulatedGpu, current: Any, pending: Any) -> int:
    _put(current, pynvml.NVML_DEVICE_MIG_DISABLE)
    return _put(pending, pynvml.NVML_DEVICE_MIG_DISABLE)


@_exports("nvmlDeviceGetMaxClockInfo", device=True)
def _max_clock(lib: _SimulatedLibrary, gpu: SimulatedGpu, clock_type: Any, ref: Any) -> int:
    p = gpu.profile
    value = {
        pynvml.NVML_CLOCK_GRAPHICS: p.max_sm_clock_mhz,
        pynvml.NVML_CLOCK_SM: p.max_sm_clock_mhz,
        pynvml.NVML_CLOCK_MEM: p.max_memory_clock_mhz,
        pynvml.NVML_CLOCK_VIDEO: p.max_video_clock_mhz,
    }.get(_int(clock_type))
    return _INVALID if value is None else _put(ref, value)


# -- device readings -------------------------------------------------------------------


@_exports("nvmlDeviceGetTemperature", device=True)
def _temperature(lib: _SimulatedLibrary, gpu: SimulatedGpu, sensor: Any, ref: Any) -> int:
    if _int(sensor) != pynvml.NVML_TEMPERATURE_GPU:
        return _INVALID
    return _put(ref, gpu.reading().temperature_c)


@_exports("nvmlDeviceGetPowerUsage", device=True)
def _power_usage(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    return _put(ref, gpu.reading().power_mw)


@_exports("nvmlDeviceGetClockInfo", device=True)
def _clock(lib: _SimulatedLibrary, gpu: SimulatedGpu, clock_type: Any, ref: Any) -> int:
    r = gpu.reading()
    value = {
        pynvml.NVML_CLOCK_GRAPHICS: r.sm_clock_mhz,
        pynvml.NVML_CLOCK_SM: r.sm_clock_mhz,
        pynvml.NVML_CLOCK_MEM: r.memory_clock_mhz,
        pynvml.NVML_CLOCK_VIDEO: r.video_clock_mhz,
    }.get(_int(clock_type))
    return _INVALID if value is None else _put(ref, value)


@_exports("nvmlDeviceGetUtilizationRates", device=True)
def _utilization(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    r = gpu.reading()
    ref._obj.gpu = r.utilization_gpu_pct
    ref._obj.memory = r.utilization_memory_pct
    return _OK


@_exports("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2", device=True)
def _memory(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    """v1 counts the driver's reserve as used (as current drivers do); v2 reports it apart."""
    memory, p = ref._obj, gpu.profile
    used = gpu.reading().memory_used_bytes
    memory.total = p.memory_total_bytes
    if isinstance(memory, pynvml.c_nvmlMemory_v2_t):
        if memory.version != pynvml.nvmlMemory_v2:
            return _VERSION_MISMATCH
        memory.reserved = p.memory_reserved_bytes
        memory.used = used
    else:
        memory.used = used + p.memory_reserved_bytes
    memory.free = p.memory_total_bytes - p.memory_reserved_bytes - used
    return _OK


@_exports("nvmlDeviceGetTotalEccErrors", device=True)
def _ecc_errors(
    lib: _SimulatedLibrary, gpu: SimulatedGpu, error_type: Any, counter_type: Any, ref: Any
) -> int:
    r = gpu.reading()
    value = {
        (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC): (
            r.ecc_corrected_volatile
        ),
        (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC): (
            r.ecc_corrected_aggregate
        ),
        (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC): (
            r.ecc_uncorrected_volatile
        ),
        (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC): (
            r.ecc_uncorrected_aggregate
        ),
    }.get((_int(error_type), _int(counter_type)))
    return _INVALID if value is None else _put(ref, value)


@_exports("nvmlDeviceGetRemappedRows", device=True)
def _remapped_rows(
    lib: _SimulatedLibrary, gpu: SimulatedGpu, corr: Any, unc: Any, pending: Any, failure: Any
) -> int:
    r = gpu.reading()
    _put(corr, r.remapped_rows_corrected)
    _put(unc, r.remapped_rows_uncorrected)
    _put(pending, int(r.remap_pending))
    return _put(failure, int(r.remap_failure))


@_exports(
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    device=True,
)
def _clocks_event_reasons(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    return _put(ref, gpu.reading().clocks_event_reasons)


@_exports("nvmlDeviceGetPcieReplayCounter", device=True)
def _pcie_replays(lib: _SimulatedLibrary, gpu: SimulatedGpu, ref: Any) -> int:
    return _put(ref, gpu.reading().pcie_replays)


@_exports("nvmlDeviceGetNvLinkState", device=True)
def _nvlink_state(lib: _SimulatedLibrary, gpu: SimulatedGpu, link: Any, ref: Any) -> int:
    if not 0 <= _int(link) < gpu.profile.nvlink_count:
        return _INVALID
    return _put(ref, pynvml.NVML_FEATURE_ENABLED)


@_exports("nvmlDeviceGetNvLinkErrorCounter", device=True)
def _nvlink_errors(
    lib: _SimulatedLibrary, gpu: SimulatedGpu, link: Any, counter: Any, ref: Any
) -> int:
    if not 0 <= _int(link) < gpu.profile.nvlink_count:
        return _INVALID
    if not 0 <= _int(counter) < pynvml.NVML_NVLINK_ERROR_COUNT:
        return _INVALID
    return _put(ref, 0)


@_exports("nvmlDeviceGetComputeRunningProcesses_v3", device=True)
def _compute_processes(lib: _SimulatedLibrary, gpu: SimulatedGpu, count: Any, infos: Any) -> int:
    """NVML's two-call protocol: too small a buffer gets INSUFFICIENT_SIZE and the count."""
    processes = gpu.reading().processes
    capacity = count._obj.value
    count._obj.value = len(processes)
    if not processes:
        return _OK
    if infos is None or capacity < len(processes) or len(infos) < len(processes):
        return _INSUFFICIENT_SIZE
    for slot, p in zip(infos, processes, strict=False):
        slot.pid = p.pid
        slot.usedGpuMemory = p.used_memory_bytes
        slot.gpuInstanceId = slot.computeInstanceId = _NO_INSTANCE
    return _OK
