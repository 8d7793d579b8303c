"""Simulated NVIDIA GPUs behind the real ``pynvml`` bindings.

The simulator stands in for the driver library (``libnvidia-ml.so``), not for our code: a
:class:`SimulatedFleet` of :class:`SimulatedGpu` boards, installed with
:class:`SimulatedNvml`, answers the C calls pynvml makes, so every pynvml wrapper and
everything above it runs unchanged. Scenarios script incidents (thermal runaway, ECC
degradation, a crash-looping job) that reach both the NVML event path and, through a
callback, the kernel log path. See docs/simulator.md.
"""

from watcher.sim.gpu import GpuReading, ProcessInfo, SimulatedFleet, SimulatedGpu
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
