"""Scenarios: the bundled three load and tell their stories on a fake clock; the kernel log
path and the NVML event path agree; malformed files fail with the file, entry and key."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from store.errors import XidwatchError
from watcher.kernel.parser import parse_xid
from watcher.sim import (
    GpuReading,
    Scenario,
    ScenarioError,
    ScenarioRunner,
    SimulatedFleet,
    SimulatedNvml,
    bundled_scenarios,
    load_scenario,
    parse_scenario,
)
from watcher.sim.scenario import XidStep

HOT = pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonSwThermalSlowdown


class FakeTime:
    """A clock for the fleet and a ``sleep`` for the runner that advances it instantly,
    taking a reading of every GPU each simulated second along the way."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept_s = 0.0
        self.fleet: SimulatedFleet | None = None
        self.readings: list[list[GpuReading | None]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept_s += seconds
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 1.0)
            if self.fleet is not None:
                self.readings.append([None if g.lost else g.reading() for g in self.fleet.gpus])


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def fleet_for(scenario: Scenario, fake: FakeTime, speed: float = 1.0) -> SimulatedFleet:
    fleet = SimulatedFleet.build(scenario.gpus, scenario.model, clock=fake, time_scale=speed)
    fake.fleet = fleet
    return fleet


@pytest.fixture
def installed() -> Iterator[list[SimulatedNvml]]:
    """Holds whatever a test installs, and uninstalls it whatever happens."""
    held: list[SimulatedNvml] = []
    yield held
    for nv in held:
        nv.uninstall()


SMALL = """
name: small
gpus: 2
model: T4
duration: 1m
timeline:
  - at: 0s
    process_start: {gpu: 1, pid: 1234, name: python3, memory_gib: 2}
  - at: 10s
    xid: {gpu: 1, code: 79, pid: 1234}
  - at: 30s
    recover: {gpu: 1}
"""


def ignore(line: str) -> None:
    pass


def test_the_three_stories_are_bundled() -> None:
    assert bundled_scenarios() == ["app-crash-loop", "ecc-degradation", "thermal-runaway"]


@pytest.mark.parametrize("name", ["app-crash-loop", "ecc-degradation", "thermal-runaway"])
async def test_each_bundled_scenario_runs_to_its_end_without_waiting(
    fake: FakeTime, name: str
) -> None:
    scenario = load_scenario(name)
    lines: list[str] = []
    runner = ScenarioRunner(
        scenario, fleet_for(scenario, fake, 5.0), lines.append, speed=5.0, sleep=fake.sleep
    )
    started = time.monotonic()

    await runner.run()

    assert time.monotonic() - started < 2.0
    assert 60 <= scenario.duration_s <= 120
    assert fake.slept_s == pytest.approx(scenario.duration_s / 5.0)
    assert [at for at, _ in runner.applied] == [e.at_s for e in scenario.events]
    assert len(lines) == sum(isinstance(e, XidStep) for e in scenario.events) > 0
    assert scenario.description


async def test_thermal_runaway_throttles_at_slowdown_and_ends_off_the_bus(
    fake: FakeTime,
) -> None:
    scenario = load_scenario("thermal-runaway")
    fleet = fleet_for(scenario, fake)
    lines: list[str] = []

    await ScenarioRunner(scenario, fleet, lines.append, sleep=fake.sleep).run()

    gpu2 = [row[2] for row in fake.readings if row[2] is not None]
    slowdown = fleet.gpus[2].profile.slowdown_temp_c
    assert any(r.temperature_c >= slowdown and r.clocks_event_reasons & HOT for r in gpu2)
    assert max(r.temperature_c for r in gpu2) > fleet.gpus[2].profile.shutdown_temp_c
    others = [r for row in fake.readings for r in (row[0], row[1], row[3]) if r is not None]
    assert max(r.temperature_c for r in others) < slowdown
    assert fleet.gpus[2].lost
    assert [p.xid for p in map(parse_xid, lines) if p is not None] == [62, 79, 45]


async def test_ecc_degradation_climbs_then_fails_a_remap(fake: FakeTime) -> None:
    scenario = load_scenario("ecc-degradation")
    fleet = fleet_for(scenario, fake)
    start = fleet.gpus[1].reading()

    await ScenarioRunner(scenario, fleet, ignore, sleep=fake.sleep).run()

    end = fleet.gpus[1].reading()
    corrected = [row[1].ecc_corrected_volatile for row in fake.readings if row[1] is not None]
    assert corrected == sorted(corrected)
    assert end.ecc_corrected_volatile >= start.ecc_corrected_volatile + 100
    assert end.ecc_uncorrected_volatile == 2
    assert (end.remapped_rows_uncorrected, end.remap_pending, end.remap_failure) == (1, True, True)
    assert fleet.gpus[0].reading().ecc_uncorrected_volatile == 0


async def test_app_crash_loop_restarts_a_job_that_dies_with_13_31_43_45(fake: FakeTime) -> None:
    scenario = load_scenario("app-crash-loop")
    fleet = fleet_for(scenario, fake)
    lines: list[str] = []

    await ScenarioRunner(scenario, fleet, lines.append, sleep=fake.sleep).run()

    parsed = [p for p in map(parse_xid, lines) if p is not None]
    assert [p.xid for p in parsed] == [13, 31, 43, 45] * 4
    assert len({p.pid for p in parsed}) == 4
    assert {p.pci_bus_id for p in parsed} == {fleet.gpus[1].pci_bus_id}
    assert fleet.gpus[1].reading().processes == ()
    assert all(len(fleet.gpus[i].reading().processes) == 1 for i in (0, 2, 3))


@pytest.mark.parametrize("name", ["app-crash-loop", "ecc-degradation", "thermal-runaway"])
async def test_kernel_lines_and_nvml_events_tell_the_same_story(
    fake: FakeTime, installed: list[SimulatedNvml], name: str
) -> None:
    scenario = load_scenario(name)
    fleet = fleet_for(scenario, fake)
    nv = SimulatedNvml(fleet)
    installed.append(nv)
    nv.install()
    pynvml.nvmlInit()
    events = pynvml.nvmlEventSetCreate()
    by_address = {}  # a lost GPU answers nothing, so events are matched by handle value
    for i in range(scenario.gpus):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        by_address[ctypes.cast(handle, ctypes.c_void_p).value] = i
        pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, events)
    lines: list[str] = []

    await ScenarioRunner(scenario, fleet, lines.append, sleep=fake.sleep).run()

    from_events = []
    for _ in lines:
        data = pynvml.nvmlEventSetWait_v2(events, 100)
        gpu = fleet.gpus[by_address[ctypes.cast(data.device, ctypes.c_void_p).value]]
        from_events.append((gpu.pci_bus_id, data.eventData))
    from_lines = [(p.pci_bus_id, p.xid) for p in map(parse_xid, lines) if p is not None]
    assert from_events == from_lines
    steps = [e for e in scenario.events if isinstance(e, XidStep)]
    assert [(fleet.gpus[s.gpu].pci_bus_id, s.code) for s in steps] == from_lines


async def test_emitted_lines_are_exactly_what_inject_xid_returns(fake: FakeTime) -> None:
    scenario = parse_scenario(SMALL, "small.yaml")
    fleet = fleet_for(scenario, fake)
    lines: list[str] = []
    runner = ScenarioRunner(scenario, fleet, lines.append, sleep=fake.sleep)

    await runner.run()

    assert lines == [
        "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus."
    ]
    assert runner.applied == [
        (0.0, "GPU 1: process 1234 (python3) starts with 2 GiB"),
        (10.0, "GPU 1: XID 79 (pid 1234)"),
        (30.0, "GPU 1: reset"),
    ]
    assert not fleet.gpus[1].lost


async def test_speed_divides_every_wait(fake: FakeTime) -> None:
    scenario = parse_scenario(SMALL, "small.yaml")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    await ScenarioRunner(scenario, fleet_for(scenario, fake), ignore, speed=10, sleep=sleep).run()

    assert waits == [1.0, 2.0, 3.0]


def test_a_runner_needs_a_fleet_with_enough_gpus(fake: FakeTime) -> None:
    scenario = load_scenario("thermal-runaway")
    with pytest.raises(ScenarioError, match="needs 4 GPUs, the fleet has 2"):
        ScenarioRunner(scenario, SimulatedFleet.build(2, clock=fake), ignore)


def test_a_scenario_file_loads_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(SMALL)

    scenario = load_scenario(path)

    assert (scenario.name, scenario.gpus, scenario.model, scenario.duration_s) == (
        "small",
        2,
        "T4",
        60.0,
    )
    assert scenario.source == str(path)


def test_a_missing_scenario_names_the_path_and_the_bundled_ones(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read it .*thermal-runaway"):
        load_scenario(str(tmp_path / "nope.yaml"))
    assert issubclass(ScenarioError, XidwatchError)


def _with_entry(entry: str) -> str:
    return SMALL + entry


@pytest.mark.parametrize(
    ("text", "entry", "key", "problem"),
    [
        (SMALL.replace("gpus: 2", "gpus: 2\ncolour: red"), None, "colour", "unknown key"),
        (SMALL.replace("model: T4\n", ""), None, "model", "missing"),
        (SMALL.replace("model: T4", "model: V100"), None, "model", "unknown model"),
        (SMALL.replace("duration: 1m", "duration: 60"), None, "duration", "not a duration"),
        (_with_entry("  - at: 40s\n    explode: {gpu: 0}\n"), 3, "explode", "unknown action"),
        (_with_entry("  - at: 40s\n    xid: {gpu: 2, code: 13}\n"), 3, "xid.gpu", "out of range"),
        (_with_entry("  - at: 40s\n    xid: {gpu: all, code: 13}\n"), 3, "xid.gpu", "integer"),
        (_with_entry("  - at: 40s\n    xid: {gpu: 0, cod: 13}\n"), 3, "xid.cod", "unknown key"),
        (_with_entry("  - at: 40s\n    xid: {gpu: 0}\n"), 3, "xid.code", "missing"),
        (_with_entry("  - at: 40 s\n    recover: {gpu: 0}\n"), None, None, None),
        (_with_entry("  - at: soon\n    recover: {gpu: 0}\n"), 3, "at", "not a duration"),
        (_with_entry("  - at: 2m\n    recover: {gpu: 0}\n"), 3, "at", "after the scenario"),
        (_with_entry("  - at: 5s\n    recover: {gpu: 0}\n"), 3, "at", "time order"),
        (_with_entry("  - recover: {gpu: 0}\n"), 3, "at", "missing"),
        (
            _with_entry("  - at: 40s\n    recover: {gpu: 0}\n    cooling: {gpu: 0, factor: 1}\n"),
            3,
            None,
            "exactly one action",
        ),
        (
            _with_entry("  - at: 40s\n    load: {gpu: 0, utilization: 120}\n"),
            3,
            "load.utilization",
            "out of range",
        ),
        (
            _with_entry(
                "  - at: 40s\n    process_start: {gpu: 0, pid: 1, name: x, memory_gib: 99}\n"
            ),
            3,
            "process_start.memory_gib",
            "more than the GPU's memory",
        ),
        (
            _with_entry("  - at: 40s\n    cooling: {gpu: 0, factor: 0}\n"),
            3,
            "cooling.factor",
            "out of range",
        ),
        (
            _with_entry("  - at: 40s\n    xid: {gpu: 0, code: 13, pid: true}\n"),
            3,
            "xid.pid",
            "integer",
        ),
        ("name: [unclosed\n", None, None, "not valid YAML"),
        ("- just a list\n", None, None, "must be a mapping"),
    ],
)
def test_malformed_scenarios_name_the_file_entry_and_key(
    text: str, entry: int | None, key: str | None, problem: str | None
) -> None:
    if problem is None:  # spaces inside a duration are tolerated
        assert parse_scenario(text, "bad.yaml").events[-1].at_s == 40.0
        return
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "bad.yaml")

    error = caught.value
    assert (error.source, error.entry, error.key) == ("bad.yaml", entry, key)
    assert str(error).startswith("bad.yaml: ")
    if entry is not None:
        assert f"timeline[{entry}]" in str(error)
    if key is not None:
        assert key in str(error)
    assert problem in str(error)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1m30s", 90.0), ("1h", 3600.0)],
)
def test_durations_accept_ms_s_m_h_and_combinations(text: str, seconds: float) -> None:
    text_with = SMALL.replace("duration: 1m", "duration: 2h").replace("at: 10s", "at: 0s")

    scenario = parse_scenario(text_with.replace("at: 30s", f"at: {text}"), "d.yaml")

    assert scenario.events[-1].at_s == seconds
