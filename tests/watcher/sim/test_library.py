"""The simulated driver library through the real pynvml wrappers: every function the sampler
uses, NOT_SUPPORTED and GPU_IS_LOST, driver state, XID events, install and uninstall."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pynvml
import pytest

from tests.waiting import wait_until
from watcher.sim import PROFILES, SimulatedFleet, SimulatedNvml

GIB = 1024**3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fleet(clock: FakeClock) -> SimulatedFleet:
    return SimulatedFleet.build(4, ["H100-80GB", "H100-80GB", "A100-80GB", "T4"], clock=clock)


@pytest.fixture
def nvml(fleet: SimulatedFleet) -> Iterator[SimulatedFleet]:
    """pynvml initialized against the fleet; always uninstalled, since pynvml is global."""
    with SimulatedNvml(fleet):
        pynvml.nvmlInit()
        yield fleet
        fleet.driver_loaded = True
        pynvml.nvmlShutdown()


def handle(index: int) -> object:
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def test_system_calls_report_the_fleets_driver_cuda_version_and_gpu_count(
    nvml: SimulatedFleet,
) -> None:
    assert pynvml.nvmlSystemGetDriverVersion() == "570.124.06"
    assert pynvml.nvmlSystemGetCudaDriverVersion() == 12080
    assert pynvml.nvmlSystemGetCudaDriverVersion_v2() == 12080
    assert pynvml.nvmlDeviceGetCount() == 4


def test_each_gpu_reports_its_identity_as_decoded_strings(nvml: SimulatedFleet) -> None:
    for gpu in nvml.gpus:
        h = handle(gpu.index)
        assert pynvml.nvmlDeviceGetIndex(h) == gpu.index
        assert pynvml.nvmlDeviceGetName(h) == gpu.profile.name
        assert pynvml.nvmlDeviceGetUUID(h) == gpu.uuid
        assert pynvml.nvmlDeviceGetSerial(h) == gpu.serial
        pci = pynvml.nvmlDeviceGetPciInfo_v3(h)
        assert pci.busId == gpu.pci_bus_id
        assert pci.busIdLegacy == gpu.pci_bus_id[4:]
        assert (pci.domain, pci.device) == (0, 0)
        assert pci.bus == int(gpu.pci_bus_id[9:11], 16)
        assert pci.pciDeviceId == gpu.profile.pci_device_id
        by_uuid = pynvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
        assert pynvml.nvmlDeviceGetIndex(by_uuid) == gpu.index
    assert [g.profile.name for g in nvml.gpus] == [
        "NVIDIA H100 80GB HBM3",
        "NVIDIA H100 80GB HBM3",
        "NVIDIA A100-SXM4-80GB",
        "Tesla T4",
    ]


def test_limits_are_the_profiles_in_nvml_units(nvml: SimulatedFleet) -> None:
    for gpu in nvml.gpus:
        h, p = handle(gpu.index), gpu.profile
        threshold = pynvml.nvmlDeviceGetTemperatureThreshold
        assert threshold(h, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN) == p.slowdown_temp_c
        assert threshold(h, pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN) == p.shutdown_temp_c
        assert threshold(h, pynvml.NVML_TEMPERATURE_THRESHOLD_GPU_MAX) == p.max_operating_temp_c
        assert pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h) == [
            p.power_min_w * 1000,
            p.power_max_w * 1000,
        ]
        assert pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h) == p.power_default_w * 1000
        assert pynvml.nvmlDeviceGetEnforcedPowerLimit(h) == p.power_default_w * 1000
        assert pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM) == p.max_sm_clock_mhz
        assert pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM) == p.max_memory_clock_mhz
        assert pynvml.nvmlDeviceGetEccMode(h) == [1, 1]
        assert pynvml.nvmlDeviceGetMemoryInfo(h).total == p.memory_total_bytes
    h100 = handle(0)
    assert pynvml.nvmlDeviceGetMigMode(h100) == [0, 0]
    assert pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h100) == [200_000, 700_000]
    assert pynvml.nvmlDeviceGetTemperatureThreshold(h100, 1) == 89


@pytest.mark.parametrize("index", [0, 2, 3], ids=["H100", "A100", "T4"])
def test_readings_under_load_stay_within_the_profiles_limits(
    nvml: SimulatedFleet, clock: FakeClock, index: int
) -> None:
    gpu = nvml.gpus[index]
    p = gpu.profile
    gpu.set_load(100, 8 * GIB)
    h = handle(index)
    for _ in range(10):
        clock.now += 30
        temperature = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        assert p.ambient_c <= temperature < p.slowdown_temp_c
        assert p.idle_power_w * 900 <= pynvml.nvmlDeviceGetPowerUsage(h) <= p.power_max_w * 1000
        for clock_type, top in [
            (pynvml.NVML_CLOCK_GRAPHICS, p.max_sm_clock_mhz),
            (pynvml.NVML_CLOCK_SM, p.max_sm_clock_mhz),
            (pynvml.NVML_CLOCK_MEM, p.max_memory_clock_mhz),
        ]:
            assert 0 < pynvml.nvmlDeviceGetClockInfo(h, clock_type) <= top
        util = pynvml.nvmlDeviceGetUtilizationRates(h)
        assert (util.gpu, 0 < util.memory <= 100) == (100, True)
        memory = pynvml.nvmlDeviceGetMemoryInfo(h)
        assert memory.used + memory.free == memory.total
        assert memory.used >= 8 * GIB
        reasons = pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)
        assert reasons & ~pynvml.nvmlClocksEventReasonAll == 0
        assert pynvml.nvmlDeviceGetPcieReplayCounter(h) >= 0
        for error_type in (0, 1):
            volatile = pynvml.nvmlDeviceGetTotalEccErrors(h, error_type, pynvml.NVML_VOLATILE_ECC)
            aggregate = pynvml.nvmlDeviceGetTotalEccErrors(h, error_type, pynvml.NVML_AGGREGATE_ECC)
            assert 0 <= volatile <= aggregate


def test_h100_reports_18_active_nvlinks_and_a100_reports_12(nvml: SimulatedFleet) -> None:
    for index, links in [(0, 18), (2, 12)]:
        h = handle(index)
        states = [pynvml.nvmlDeviceGetNvLinkState(h, link) for link in range(links)]
        assert states == [pynvml.NVML_FEATURE_ENABLED] * links
        assert (
            pynvml.nvmlDeviceGetNvLinkErrorCounter(h, 0, pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT) == 0
        )
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceGetNvLinkState(h, links)
    assert pynvml.nvmlDeviceGetRemappedRows(handle(0)) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda h: pynvml.nvmlDeviceGetRemappedRows(h),
        lambda h: pynvml.nvmlDeviceGetNvLinkState(h, 0),
        lambda h: pynvml.nvmlDeviceGetNvLinkErrorCounter(h, 0, 0),
        lambda h: pynvml.nvmlDeviceGetMigMode(h),
        lambda h: pynvml.nvmlDeviceGetTemperatureThreshold(
            h, pynvml.NVML_TEMPERATURE_THRESHOLD_MEM_MAX
        ),
    ],
    ids=["remapped-rows", "nvlink-state", "nvlink-errors", "mig-mode", "memory-max-temp"],
)
def test_t4_answers_not_supported_where_the_board_has_no_such_feature(
    nvml: SimulatedFleet, call: object
) -> None:
    assert callable(call)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        call(handle(3))


def test_a_function_a_test_marks_unsupported_answers_not_supported(nvml: SimulatedFleet) -> None:
    nvml.gpus[1].unsupported.add("nvmlDeviceGetPowerUsage")

    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetPowerUsage(handle(1))
    assert pynvml.nvmlDeviceGetPowerUsage(handle(0)) > 0


def test_a_symbol_the_library_lacks_is_function_not_found(nvml: SimulatedFleet) -> None:
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        pynvml.nvmlDeviceGetFanSpeed(handle(0))


def test_memory_info_v1_counts_the_reserve_as_used_and_v2_reports_it_apart(
    nvml: SimulatedFleet,
) -> None:
    gpu = nvml.gpus[0]
    gpu.start_process(4242, 10 * GIB, "trainer")
    h = handle(0)

    v1 = pynvml.nvmlDeviceGetMemoryInfo(h)
    v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)

    assert v1.used == 10 * GIB + gpu.profile.memory_reserved_bytes
    assert (v2.used, v2.reserved) == (10 * GIB, gpu.profile.memory_reserved_bytes)
    assert v1.free == v2.free == v1.total - v1.used


def test_running_processes_follow_pynvmls_two_call_protocol(nvml: SimulatedFleet) -> None:
    h = handle(1)
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(h) == []

    for n in range(3):
        nvml.gpus[1].start_process(5000 + n, (n + 1) * GIB, f"worker{n}")
    processes = pynvml.nvmlDeviceGetComputeRunningProcesses_v3(h)

    assert [(p.pid, p.usedGpuMemory) for p in processes] == [
        (5000, GIB),
        (5001, 2 * GIB),
        (5002, 3 * GIB),
    ]
    assert pynvml.nvmlSystemGetProcessName(5002) == "worker2"
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlSystemGetProcessName(1)


def test_a_gpu_off_the_bus_answers_gpu_is_lost_until_it_is_reset(nvml: SimulatedFleet) -> None:
    h = handle(2)
    nvml.gpus[2].inject_xid(79)

    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetTemperature(h, 0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetUUID(h)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetHandleByIndex(2)
    assert pynvml.nvmlDeviceGetCount() == 4
    assert pynvml.nvmlDeviceGetTemperature(handle(1), 0) > 0

    nvml.gpus[2].recover()

    assert pynvml.nvmlDeviceGetTemperature(h, 0) > 0
    assert pynvml.nvmlDeviceGetIndex(handle(2)) == 2


def test_without_a_loaded_driver_init_and_every_call_fail_with_driver_not_loaded(
    fleet: SimulatedFleet,
) -> None:
    fleet.driver_loaded = False
    with SimulatedNvml(fleet):
        with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
            pynvml.nvmlInit()
        fleet.driver_loaded = True
        pynvml.nvmlInit()
        h = handle(0)
        fleet.driver_loaded = False
        with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
            pynvml.nvmlDeviceGetTemperature(h, 0)
        with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
            pynvml.nvmlDeviceGetCount()
        fleet.driver_loaded = True
        pynvml.nvmlShutdown()


def test_calls_before_init_or_after_shutdown_fail_with_uninitialized(
    fleet: SimulatedFleet,
) -> None:
    with SimulatedNvml(fleet):
        with pytest.raises(pynvml.NVMLError_Uninitialized):
            pynvml.nvmlDeviceGetCount()
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        with pytest.raises(pynvml.NVMLError_Uninitialized):
            pynvml.nvmlShutdown()


def test_bad_indexes_and_uuids_are_rejected_as_nvml_would(nvml: SimulatedFleet) -> None:
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetHandleByIndex(4)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetTemperature(handle(0), 7)


def test_error_strings_come_from_the_library(nvml: SimulatedFleet) -> None:
    assert pynvml.nvmlErrorString(pynvml.NVML_ERROR_GPU_IS_LOST) == "GPU is lost"
    assert pynvml.nvmlErrorString(12345) == "Unknown Error"


def test_an_event_wait_with_nothing_to_report_times_out(nvml: SimulatedFleet) -> None:
    events = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(handle(0), pynvml.nvmlEventTypeXidCriticalError, events)
    started = time.monotonic()

    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(events, 30)

    assert time.monotonic() - started >= 0.025
    pynvml.nvmlEventSetFree(events)


def test_an_injected_xid_arrives_with_its_code_and_device(nvml: SimulatedFleet) -> None:
    events = pynvml.nvmlEventSetCreate()
    for index in range(4):
        pynvml.nvmlDeviceRegisterEvents(handle(index), pynvml.nvmlEventTypeXidCriticalError, events)

    nvml.gpus[2].inject_xid(48)
    nvml.gpus[1].inject_xid(13)
    first = pynvml.nvmlEventSetWait_v2(events, 1000)
    second = pynvml.nvmlEventSetWait_v2(events, 1000)

    assert (first.eventType, first.eventData) == (pynvml.nvmlEventTypeXidCriticalError, 48)
    assert pynvml.nvmlDeviceGetUUID(first.device) == nvml.gpus[2].uuid
    assert (second.eventData, pynvml.nvmlDeviceGetIndex(second.device)) == (13, 1)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(events, 1)
    pynvml.nvmlEventSetFree(events)


def test_the_driver_event_code_passes_through_when_it_differs_from_the_xid(
    nvml: SimulatedFleet,
) -> None:
    events = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(handle(0), pynvml.nvmlEventTypeXidCriticalError, events)

    nvml.gpus[0].inject_xid(119, nvml_code=999)

    assert pynvml.nvmlEventSetWait_v2(events, 1000).eventData == 999
    pynvml.nvmlEventSetFree(events)


def test_only_xids_after_registration_on_registered_gpus_are_delivered(
    nvml: SimulatedFleet,
) -> None:
    nvml.gpus[0].inject_xid(31)
    events = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(handle(0), pynvml.nvmlEventTypeXidCriticalError, events)
    pynvml.nvmlDeviceRegisterEvents(handle(1), pynvml.nvmlEventTypeSingleBitEccError, events)

    nvml.gpus[1].inject_xid(43)
    nvml.gpus[2].inject_xid(43)
    nvml.gpus[0].inject_xid(45)

    assert pynvml.nvmlEventSetWait_v2(events, 1000).eventData == 45
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(events, 1)
    pynvml.nvmlEventSetFree(events)


def test_a_waiting_thread_wakes_as_soon_as_an_xid_is_injected(nvml: SimulatedFleet) -> None:
    events = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(handle(3), pynvml.nvmlEventTypeXidCriticalError, events)
    received: list[int] = []
    waiter = threading.Thread(
        target=lambda: received.append(pynvml.nvmlEventSetWait_v2(events, 5000).eventData)
    )
    started = time.monotonic()
    waiter.start()

    wait_until(lambda: nvml.lock._waiters, 5)  # the thread is inside the wait now
    nvml.gpus[3].inject_xid(79)
    waiter.join(timeout=5)

    assert received == [79]
    assert time.monotonic() - started < 2
    pynvml.nvmlEventSetFree(events)


def test_each_device_call_sleeps_the_fleets_call_delay(nvml: SimulatedFleet) -> None:
    h = handle(0)
    nvml.call_delay_s = 0.02
    started = time.monotonic()

    pynvml.nvmlDeviceGetTemperature(h, 0)
    pynvml.nvmlDeviceGetPowerUsage(h)

    assert time.monotonic() - started >= 0.04
    nvml.call_delay_s = 0.0


def test_readers_on_threads_and_a_writer_on_another_never_see_torn_state(
    nvml: SimulatedFleet, clock: FakeClock
) -> None:
    handles = [handle(i) for i in range(4)]
    failures: list[Exception] = []

    def read() -> None:
        try:
            for _ in range(200):
                for h in handles:
                    memory = pynvml.nvmlDeviceGetMemoryInfo(h)
                    assert memory.used + memory.free == memory.total
                    pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        except Exception as e:  # reported to the test thread
            failures.append(e)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    for n in range(200):
        gpu = nvml.gpus[n % 4]
        gpu.set_load(n % 100)
        gpu.start_process(10_000 + n, GIB, "churn")
        gpu.stop_process(10_000 + n - 4)
        clock.now += 0.5
    for t in readers:
        t.join()

    assert failures == []


def test_installing_a_second_simulator_while_one_is_installed_raises(
    fleet: SimulatedFleet,
) -> None:
    other = SimulatedFleet.build(1, "T4")
    with SimulatedNvml(fleet), pytest.raises(RuntimeError, match="already installed"):
        SimulatedNvml(other).install()


def test_uninstall_gives_pynvml_back_its_library_and_function_cache(
    fleet: SimulatedFleet,
) -> None:
    before_lib = pynvml.nvmlLib
    before_cache = dict(pynvml._nvmlGetFunctionPointer_cache)
    nv = SimulatedNvml(fleet)

    nv.install()
    pynvml.nvmlInit()
    assert pynvml.nvmlDeviceGetCount() == 4
    nv.uninstall()
    nv.uninstall()

    assert pynvml.nvmlLib is before_lib
    assert pynvml._nvmlGetFunctionPointer_cache == before_cache


def test_a_handle_from_an_earlier_install_is_not_a_handle_of_the_next(
    fleet: SimulatedFleet,
) -> None:
    with SimulatedNvml(fleet):
        pynvml.nvmlInit()
        stale = handle(0)
    with SimulatedNvml(SimulatedFleet.build(1, "T4")):
        pynvml.nvmlInit()
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceGetName(stale)


def test_every_profile_has_the_limits_its_model_reports() -> None:
    assert {k: (p.power_max_w, p.slowdown_temp_c, p.nvlink_count) for k, p in PROFILES.items()} == {
        "A100-80GB": (400.0, 89, 12),
        "H100-80GB": (700.0, 89, 18),
        "T4": (70.0, 93, 0),
    }
