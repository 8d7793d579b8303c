"""``--simulate N``: simulated GPUs under the real pynvml, and a scenario telling their story.

The simulated driver library is installed into pynvml for the daemon's lifetime, so the
sampler and the NVML event source run exactly as on a GPU node. The kernel side of the
story goes into an in-memory /dev/kmsg that the daemon's real KmsgSource reads: an XID in
the scenario reaches the store through both witnesses, as on real hardware.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog

from watcher.clock import now_ms
from watcher.config import SimulationSpec
from watcher.errors import SourceError
from watcher.sim import Scenario, ScenarioRunner, SimulatedFleet, SimulatedNvml, load_scenario
from watcher.sim.kmsgdev import MemoryKmsgDevice

__all__ = ["Simulation"]

log = structlog.get_logger("watcher.sim.simulate")


class Simulation:
    """A simulated fleet installed into pynvml, its kmsg device and scenario runner."""

    def __init__(self, spec: SimulationSpec, *, boot_wall_ms: Callable[[], int]) -> None:
        self.spec = spec
        self.scenario: Scenario | None = load_scenario(spec.scenario) if spec.scenario else None
        count = max(spec.gpus, self.scenario.gpus if self.scenario else 0)
        model = spec.model or (self.scenario.model if self.scenario else None) or "H100-80GB"
        try:
            self.fleet = SimulatedFleet.build(count, model, seed=spec.seed, time_scale=spec.speed)
        except ValueError as e:
            raise SourceError(f"cannot simulate GPUs: {e}") from e
        self.kmsg = MemoryKmsgDevice()
        # The in-memory kernel log starts again at sequence 0 each run: give it a boot id of
        # its own so the real kmsg watermark never skips (or is moved by) simulated records.
        self.boot_id = f"sim-{uuid.uuid4()}"
        self._nvml = SimulatedNvml(self.fleet)
        self._boot_wall_ms = boot_wall_ms
        self.runner: ScenarioRunner | None = None
        if self.scenario is not None:
            self.runner = ScenarioRunner(
                self.scenario, self.fleet, self.emit_kernel_line, speed=spec.speed
            )

    def install(self) -> None:
        self._nvml.install()
        log.info(
            "simulated_gpus",
            count=len(self.fleet.gpus),
            model=self.fleet.gpus[0].profile.name if self.fleet.gpus else None,
            scenario=self.scenario.name if self.scenario else None,
        )

    def uninstall(self) -> None:
        self._nvml.uninstall()
        self.kmsg.dispose()

    def emit_kernel_line(self, text: str) -> None:
        """Print ``text`` into the simulated kernel log, stamped with the current time."""
        self.kmsg.write(text, ts_usec=(now_ms() - self._boot_wall_ms()) * 1000)
