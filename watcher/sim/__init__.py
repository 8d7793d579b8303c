"""Simulated NVIDIA GPUs behind the real ``pynvml`` bindings.

The simulator stands in for the driver library (``libnvidia-ml.so``), not for our code: a
:class:`SimulatedFleet` of :class:`SimulatedGpu` boards, installed with
:class:`SimulatedNvml`, answers the C calls pynvml makes, so every pynvml wrapper and
everything above it runs unchanged. Scenarios script incidents (thermal runaway, ECC
degradation, a crash-looping job) that reach both the NVML event path and, through a
callback, the kernel log path. See docs/simulator.md.

Modules: ``profiles`` (board models), ``gpu`` (one board's physics and faults), ``fleet``
(the node and its XID queue), ``library`` (the object pynvml calls, and its plumbing),
``functions`` (the NVML symbols it exports), ``scenario`` (scripted incidents).
"""

from watcher.sim import functions as _functions  # noqa: F401  (registers the NVML symbols)
from watcher.sim.fleet import SimulatedFleet
from watcher.sim.gpu import GpuReading, ProcessInfo, SimulatedGpu
from watcher.sim.library import SimulatedNvml
from watcher.sim.profiles import PROFILES, GpuProfile
from watcher.sim.scenario import (
    Scenario,
    ScenarioError,
    ScenarioRunner,
    ScenarioStep,
    bundled_scenarios,
    load_scenario,
    parse_scenario,
)

__all__ = [
    "PROFILES",
    "GpuProfile",
    "GpuReading",
    "ProcessInfo",
    "Scenario",
    "ScenarioError",
    "ScenarioRunner",
    "ScenarioStep",
    "SimulatedFleet",
    "SimulatedGpu",
    "SimulatedNvml",
    "bundled_scenarios",
    "load_scenario",
    "parse_scenario",
]
