"""Scripted incidents: a YAML timeline of load, cooling, process and XID steps, and its runner.

A scenario tells one story on a simulated node (a fan fails and a GPU cooks; memory
degrades until rows cannot be remapped; a job crash-loops). The format is documented in
docs/simulator.md; files are validated strictly, and every error names the file, the
timeline entry and the key. :class:`ScenarioRunner` applies each step at its time and hands
each XID's kernel log line to a callback, so the kernel log path and the NVML event path
tell the same story.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from store.errors import XidwatchError
from watcher.sim.fleet import SimulatedFleet
from watcher.sim.gpu import SimulatedGpu
from watcher.sim.profiles import PROFILES

__all__ = [
    "CoolingStep",
    "LoadStep",
    "PcieErrorsStep",
    "PowerBrakeStep",
    "ProcessStartStep",
    "ProcessStopStep",
    "RecoverStep",
    "Scenario",
    "ScenarioError",
    "ScenarioRunner",
    "ScenarioStep",
    "XidStep",
    "bundled_scenarios",
    "load_scenario",
    "parse_scenario",
]

_GIB = 1024**3
_MAX_GPUS = 64
_DURATION_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+")
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TOP_KEYS = {"name", "description", "gpus", "model", "duration", "timeline"}
_REQUIRED_TOP = _TOP_KEYS - {"description"}


class ScenarioError(XidwatchError):
    """A scenario is missing or malformed. ``source``, ``entry`` (timeline index) and ``key``
    say where; the message says all three.
    """

    def __init__(
        self, problem: str, *, source: str, entry: int | None = None, key: str | None = None
    ) -> None:
        where = source if entry is None else f"{source}: timeline[{entry}]"
        if key is not None:
            where += f": {key}"
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.entry = entry
        self.key = key


def _gpus(fleet: SimulatedFleet, gpu: int | None) -> list[SimulatedGpu]:
    return list(fleet.gpus) if gpu is None else [fleet.gpus[gpu]]


def _who(gpu: int | None) -> str:
    return "all GPUs" if gpu is None else f"GPU {gpu}"


@dataclass(frozen=True, slots=True)
class LoadStep:
    """Set utilization (and memory held outside processes) on one GPU or all (None)."""

    at_s: float
    gpu: int | None
    utilization_pct: float
    memory_used_bytes: int | None = None

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        for g in _gpus(fleet, self.gpu):
            g.set_load(self.utilization_pct, self.memory_used_bytes)

    def describe(self) -> str:
        memory = (
            "" if self.memory_used_bytes is None else f", {self.memory_used_bytes / _GIB:g} GiB"
        )
        return f"{_who(self.gpu)}: load {self.utilization_pct:g} %{memory}"


@dataclass(frozen=True, slots=True)
class CoolingStep:
    """Scale cooling on one GPU or all (None): below 1 is a failing fan or hot inlet."""

    at_s: float
    gpu: int | None
    factor: float

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        for g in _gpus(fleet, self.gpu):
            g.set_cooling(self.factor)

    def describe(self) -> str:
        return f"{_who(self.gpu)}: cooling x{self.factor:g}"


@dataclass(frozen=True, slots=True)
class ProcessStartStep:
    """A compute process opens a context on a GPU."""

    at_s: float
    gpu: int
    pid: int
    name: str
    memory_bytes: int

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        fleet.gpus[self.gpu].start_process(self.pid, self.memory_bytes, self.name)

    def describe(self) -> str:
        gib = self.memory_bytes / _GIB
        return f"GPU {self.gpu}: process {self.pid} ({self.name}) starts with {gib:g} GiB"


@dataclass(frozen=True, slots=True)
class ProcessStopStep:
    """A process exits cleanly."""

    at_s: float
    gpu: int
    pid: int

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        fleet.gpus[self.gpu].stop_process(self.pid)

    def describe(self) -> str:
        return f"GPU {self.gpu}: process {self.pid} exits"


@dataclass(frozen=True, slots=True)
class XidStep:
    """The driver raises an XID: side effects, an NVML event, and a kernel log line."""

    at_s: float
    gpu: int
    code: int
    pid: int | None = None
    process: str | None = None
    message: str | None = None
    nvml_code: int | None = None

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        line = fleet.gpus[self.gpu].inject_xid(
            self.code,
            pid=self.pid,
            process=self.process,
            message=self.message,
            nvml_code=self.nvml_code,
        )
        emit(line)

    def describe(self) -> str:
        pid = "" if self.pid is None else f" (pid {self.pid})"
        return f"GPU {self.gpu}: XID {self.code}{pid}"


@dataclass(frozen=True, slots=True)
class RecoverStep:
    """An operator resets the GPU."""

    at_s: float
    gpu: int

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        fleet.gpus[self.gpu].recover()

    def describe(self) -> str:
        return f"GPU {self.gpu}: reset"


@dataclass(frozen=True, slots=True)
class PcieErrorsStep:
    """A flaky PCIe link: the GPU's replay counter jumps."""

    at_s: float
    gpu: int
    replays: int

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        fleet.gpus[self.gpu].add_pcie_replays(self.replays)

    def describe(self) -> str:
        return f"GPU {self.gpu}: {self.replays} PCIe replays"


@dataclass(frozen=True, slots=True)
class PowerBrakeStep:
    """The board's power brake asserts (or releases): a failing PSU or power feed."""

    at_s: float
    gpu: int
    on: bool

    def apply(self, fleet: SimulatedFleet, emit: Callable[[str], None]) -> None:
        fleet.gpus[self.gpu].set_power_brake(self.on)

    def describe(self) -> str:
        return f"GPU {self.gpu}: power brake {'on' if self.on else 'off'}"


ScenarioStep = (
    LoadStep
    | CoolingStep
    | ProcessStartStep
    | ProcessStopStep
    | XidStep
    | RecoverStep
    | PcieErrorsStep
    | PowerBrakeStep
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario: build a fleet of ``gpus`` x ``model`` and run it."""

    name: str
    description: str
    gpus: int
    model: str
    duration_s: float
    events: tuple[ScenarioStep, ...]
    source: str


class ScenarioRunner:
    """Plays a scenario against a fleet, ``speed`` times faster than written.

    Build the fleet with ``time_scale=speed`` so the GPUs' physics keep pace with the
    timeline. ``sleep`` is injectable so tests can advance a fake clock instead of waiting.
    """

    def __init__(
        self,
        scenario: Scenario,
        fleet: SimulatedFleet,
        emit_kernel_line: Callable[[str], None],
        *,
        speed: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if len(fleet.gpus) < scenario.gpus:
            raise ScenarioError(
                f"needs {scenario.gpus} GPUs, the fleet has {len(fleet.gpus)}",
                source=scenario.source,
            )
        self.scenario = scenario
        self.fleet = fleet
        self.speed = speed
        self.applied: list[tuple[float, str]] = []
        self._emit = emit_kernel_line
        self._sleep = sleep

    async def run(self) -> None:
        """Apply every step at ``at_s / speed`` seconds; return when the timeline ends."""
        elapsed_s = 0.0
        for step in self.scenario.events:
            if step.at_s > elapsed_s:
                await self._sleep((step.at_s - elapsed_s) / self.speed)
                elapsed_s = step.at_s
            step.apply(self.fleet, self._emit)
            self.applied.append((step.at_s, step.describe()))
        if self.scenario.duration_s > elapsed_s:
            await self._sleep((self.scenario.duration_s - elapsed_s) / self.speed)


def bundled_scenarios() -> list[str]:
    """The names of the scenarios shipped with xidwatch."""
    folder = resources.files("watcher.sim").joinpath("scenarios")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A bundled scenario by name (``"thermal-runaway"``), or a scenario file by path."""
    if isinstance(name_or_path, str) and name_or_path in bundled_scenarios():
        source = f"{name_or_path}.yaml (bundled)"
        folder = resources.files("watcher.sim").joinpath("scenarios")
        return parse_scenario(folder.joinpath(f"{name_or_path}.yaml").read_text("utf-8"), source)
    path = Path(name_or_path)
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise ScenarioError(
            f"cannot read it ({e.strerror}); bundled scenarios: {', '.join(bundled_scenarios())}",
            source=str(path),
        ) from e
    return parse_scenario(text, str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate a scenario's YAML text; ``source`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ScenarioError(f"not valid YAML: {e}", source=source) from e
    return _Parser(source).scenario(data)


class _Parser:
    """Validation with the position of the value being checked, for the error message."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.entry: int | None = None
        self.gpus = _MAX_GPUS

    def fail(self, key: str | None, problem: str) -> NoReturn:
        raise ScenarioError(problem, source=self.source, entry=self.entry, key=key)

    def scenario(self, data: object) -> Scenario:
        top = self.mapping(None, data, required=_REQUIRED_TOP, allowed=_TOP_KEYS)
        name = self.text("name", top["name"])
        description = self.text("description", top.get("description", ""), empty=True)
        self.gpus = self.integer("gpus", top["gpus"], low=1, high=_MAX_GPUS)
        model = self.text("model", top["model"])
        if model not in PROFILES:
            self.fail("model", f"unknown model {model!r}; known: {', '.join(sorted(PROFILES))}")
        duration_s = self.duration("duration", top["duration"])
        if duration_s <= 0:
            self.fail("duration", "must be longer than 0s")
        timeline = top["timeline"]
        if not isinstance(timeline, list) or not timeline:
            self.fail("timeline", "must be a non-empty list of entries")
        events: list[ScenarioStep] = []
        for entry, item in enumerate(timeline):
            self.entry = entry
            step = self.step(item, PROFILES[model].memory_total_bytes)
            if step.at_s > duration_s:
                self.fail("at", f"{step.at_s:g}s is after the scenario's duration")
            if events and step.at_s < events[-1].at_s:
                self.fail("at", "entries must be in time order")
            events.append(step)
        self.entry = None
        return Scenario(name, description, self.gpus, model, duration_s, tuple(events), self.source)

    def step(self, item: object, memory_total_bytes: int) -> ScenarioStep:
        if not isinstance(item, dict):
            self.fail(None, "an entry must be a mapping with 'at' and one action")
        actions = [k for k in item if k != "at"]
        if "at" not in item:
            self.fail("at", "missing (when the step happens, e.g. 30s)")
        if len(actions) != 1:
            self.fail(None, f"needs exactly one action ({', '.join(sorted(_ACTIONS))})")
        action = actions[0]
        if action not in _ACTIONS:
            self.fail(action, f"unknown action; expected one of {', '.join(sorted(_ACTIONS))}")
        at_s = self.duration("at", item["at"])
        required, optional = _ACTIONS[action]
        body = self.mapping(action, item[action], required=required, allowed=required | optional)

        def one_gpu() -> int:
            return self.integer(f"{action}.gpu", body["gpu"], low=0, high=self.gpus - 1)

        def gpu_or_all() -> int | None:
            return None if body["gpu"] == "all" else one_gpu()

        def gib(key: str) -> int:
            size = self.number(f"{action}.{key}", body[key], low=0.0)
            if size * _GIB > memory_total_bytes:
                self.fail(f"{action}.{key}", f"{size:g} GiB is more than the GPU's memory")
            return round(size * _GIB)

        def opt_int(key: str, low: int) -> int | None:
            return None if key not in body else self.integer(f"{action}.{key}", body[key], low=low)

        def opt_text(key: str) -> str | None:
            return None if key not in body else self.text(f"{action}.{key}", body[key])

        match action:
            case "load":
                util = self.number("load.utilization", body["utilization"], low=0.0, high=100.0)
                memory = gib("memory_used_gib") if "memory_used_gib" in body else None
                return LoadStep(at_s, gpu_or_all(), util, memory)
            case "cooling":
                factor = self.number("cooling.factor", body["factor"], low=0.01, high=10.0)
                return CoolingStep(at_s, gpu_or_all(), factor)
            case "process_start":
                pid = self.integer("process_start.pid", body["pid"], low=1)
                name = self.text("process_start.name", body["name"])
                return ProcessStartStep(at_s, one_gpu(), pid, name, gib("memory_gib"))
            case "process_stop":
                pid = self.integer("process_stop.pid", body["pid"], low=1)
                return ProcessStopStep(at_s, one_gpu(), pid)
            case "xid":
                code = self.integer("xid.code", body["code"], low=1, high=999)
                return XidStep(
                    at_s,
                    one_gpu(),
                    code,
                    pid=opt_int("pid", 1),
                    process=opt_text("process"),
                    message=opt_text("message"),
                    nvml_code=opt_int("nvml_code", 0),
                )
            case "pcie_errors":
                replays = self.integer("pcie_errors.replays", body["replays"], low=1)
                return PcieErrorsStep(at_s, one_gpu(), replays)
            case "power_brake":
                active = body["active"]
                if not isinstance(active, bool):
                    self.fail("power_brake.active", f"must be true or false, got {active!r}")
                return PowerBrakeStep(at_s, one_gpu(), active)
            case _:
                return RecoverStep(at_s, one_gpu())

    def mapping(
        self, key: str | None, value: object, *, required: set[str], allowed: set[str]
    ) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping with keys {', '.join(sorted(allowed))}")
        prefix = "" if key is None else f"{key}."
        for k in value:
            if k not in allowed:
                self.fail(f"{prefix}{k}", f"unknown key; expected {', '.join(sorted(allowed))}")
        for k in sorted(required - value.keys()):
            self.fail(f"{prefix}{k}", "missing")
        return value

    def text(self, key: str, value: object, *, empty: bool = False) -> str:
        if not isinstance(value, str) or not (empty or value.strip()):
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, key: str, value: object, *, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"{low}..{high}"
            self.fail(key, f"{value} is out of range ({bounds})")
        return value

    def number(self, key: str, value: object, *, low: float, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f">= {low:g}" if high is None else f"{low:g}..{high:g}"
            self.fail(key, f"{value:g} is out of range ({bounds})")
        return float(value)

    def duration(self, key: str, value: object) -> float:
        compact = value.replace(" ", "") if isinstance(value, str) else ""
        if not _DURATION_RE.fullmatch(compact):
            self.fail(key, f"{value!r} is not a duration like 30s, 2m, 1m30s or 500ms")
        return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART_RE.findall(compact))


_ACTIONS: dict[str, tuple[set[str], set[str]]] = {
    "load": ({"gpu", "utilization"}, {"memory_used_gib"}),
    "cooling": ({"gpu", "factor"}, set()),
    "process_start": ({"gpu", "pid", "name", "memory_gib"}, set()),
    "process_stop": ({"gpu", "pid"}, set()),
    "xid": ({"gpu", "code"}, {"pid", "process", "message", "nvml_code"}),
    "recover": ({"gpu"}, set()),
    "pcie_errors": ({"gpu", "replays"}, set()),
    "power_brake": ({"gpu", "active"}, set()),
}
