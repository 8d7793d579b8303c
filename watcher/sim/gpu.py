"""One simulated GPU board: its state, physics and fault injection.

A :class:`SimulatedGpu` is the board a driver would talk to. Its physics advance lazily:
each read or change first integrates from the last fixed step to ``clock()`` (scaled by
``time_scale``) in steps of :data:`STEP_S` simulated seconds, so the state at any instant
depends only on the seed and the sequence of changes, never on how often it is read.
Everything is guarded by the fleet's lock, because the sampler reads from worker threads
while a scenario changes state on the event loop thread.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pynvml

from watcher.kernel.catalog import default_catalog
from watcher.sim.profiles import GpuProfile

if TYPE_CHECKING:
    from watcher.sim.fleet import SimulatedFleet

__all__ = [
    "STEP_S",
    "GpuReading",
    "ProcessInfo",
    "SimulatedGpu",
    "xid_kernel_line",
]

STEP_S = 1.0
"""Simulated seconds per integration step."""

_MAX_STEPS = 1800  # beyond 30 time constants the temperature has settled; counters jump
_THERMAL_TAU_S = 60.0
_HW_SLOWDOWN_CLOCK = 0.5  # HW slowdown halves the clocks (NVML: "by a factor of 2 or more")
_SW_THERMAL_CLOCK = 0.85
_SLOWDOWN_HYSTERESIS_C = 2  # HW slowdown holds until 2 C below the threshold
_POWER_NOISE = 0.01
_TEMPERATURE_NOISE_C = 0.05
_CLOCK_BIN_MHZ = 15
_MEMORY_UTIL_PER_GPU_UTIL = 0.6
_SBE_STORM_PER_HOUR = 1200.0

_IDLE = pynvml.nvmlClocksEventReasonGpuIdle
_POWER_CAP = pynvml.nvmlClocksEventReasonSwPowerCap
_HW_SLOWDOWN = (
    pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown
)
_SW_THERMAL = pynvml.nvmlClocksEventReasonSwThermalSlowdown
_POWER_BRAKE = pynvml.nvmlClocksThrottleReasonHwPowerBrakeSlowdown
_HW_SLOWDOWN_BIT = pynvml.nvmlClocksThrottleReasonHwSlowdown

_KILLS_PROCESS = frozenset({13, 31, 43})
_XID_MESSAGES = {
    13: "Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address",
    31: (
        "Ch 00000010, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ "
        "0x7f3a_2c000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ"
    ),
    43: "Ch 00000010",
    45: "Ch 00000010",
    48: (
        "An uncorrectable double bit error (DBE) has been detected on GPU in the "
        "framebuffer at partition 3, subpartition 0."
    ),
    62: "0000(0000) 00000000 00000000",
    63: (
        "Row Remapper: New row (0x00000000000a1d80) was marked for remapping, "
        "reset gpu to activate."
    ),
    64: "Row Remapper: Failed to remap row (0x00000000000a1d80), no spare rows left in bank.",
    74: "NVLink: fatal error detected on link 4(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)",
    79: "GPU has fallen off the bus.",
    92: "High single-bit ECC error rate",
    109: "Ch 00000010, errorString CTX SWITCH TIMEOUT, Info 0x3c001",
}


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A compute process with a context on a GPU."""

    pid: int
    name: str
    used_memory_bytes: int


@dataclass(frozen=True, slots=True)
class GpuReading:
    """Everything NVML reports about a GPU at one instant, in NVML's units."""

    temperature_c: int
    power_mw: int
    power_limit_mw: int
    utilization_gpu_pct: int
    utilization_memory_pct: int
    sm_clock_mhz: int
    memory_clock_mhz: int
    video_clock_mhz: int
    clocks_event_reasons: int
    memory_used_bytes: int
    ecc_corrected_volatile: int
    ecc_corrected_aggregate: int
    ecc_uncorrected_volatile: int
    ecc_uncorrected_aggregate: int
    remapped_rows_corrected: int
    remapped_rows_uncorrected: int
    remap_pending: bool
    remap_failure: bool
    pcie_replays: int
    processes: tuple[ProcessInfo, ...]


def xid_kernel_line(
    pci_bus_id: str, code: int, message: str, *, pid: int | None = None, process: str | None = None
) -> str:
    """The line the driver prints: ``NVRM: Xid (PCI:0000:3b:00): 79, pid=..., name=..., msg``.

    The PCI field is lowercase domain:bus:device with no function, as the open kernel
    modules print it; pid and name are left out when the driver knows no process.
    """
    domain, bus, rest = pci_bus_id.split(":")
    device = rest.partition(".")[0]
    address = f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}"
    who = "" if pid is None else f", pid={pid}, name={process or '<unknown>'}"
    return f"NVRM: Xid (PCI:{address}): {code}{who}, {message}"


class SimulatedGpu:
    """One simulated board. Build fleets with :meth:`SimulatedFleet.build`, not this directly.

    ``unsupported`` holds the NVML function names that answer NOT_SUPPORTED for this GPU;
    it starts as the profile's set and tests may add to it.
    """

    def __init__(
        self, fleet: SimulatedFleet, index: int, profile: GpuProfile, pci_bus_id: str
    ) -> None:
        self._fleet = fleet
        self._rng = random.Random(f"xidwatch-sim:{fleet.seed}:{index}")
        self.index = index
        self.profile = profile
        self.pci_bus_id = pci_bus_id
        u = f"{self._rng.getrandbits(128):032x}"
        self.uuid = f"GPU-{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
        self.serial = f"{profile.serial_prefix}{self._rng.randrange(10**9):09d}"
        self.unsupported: set[str] = set(profile.unsupported)
        self._lost = False
        self._util_pct = 0.0
        self._load_memory_bytes = 0
        self._cooling = 1.0
        self._power_limit_w = profile.power_default_w
        self._processes: dict[int, ProcessInfo] = {}
        self._power_w = profile.idle_power_w
        self._temperature_c = profile.ambient_c + profile.thermal_c_per_w * profile.idle_power_w
        self._clock_factor = 1.0
        self._reasons = _IDLE
        self._hw_slowdown = False
        self._ecc = [0, self._rng.randrange(13), 0, 0]  # corr vol/agg, uncorr vol/agg
        self._corrected_per_s = self._rng.choice((0.0, 0.0, 0.5, 1.0, 4.0)) / 3600.0
        self._replays_per_s = self._rng.choice((0.0, 0.1, 0.5)) / 3600.0
        self._ecc_carry = 0.0
        self._replay_carry = 0.0
        self._pcie_replays = 0
        self._remapped = [0, 0]
        self._remap_pending = False
        self._remap_failure = False
        self._power_brake = False
        self._sim_s = 0.0

    @property
    def lost(self) -> bool:
        """True after the GPU fell off the bus, until :meth:`recover`."""
        return self._lost

    # -- observation ---------------------------------------------------------------------

    def reading(self) -> GpuReading:
        """The GPU's state now, after advancing its physics to the fleet clock."""
        with self._fleet.lock:
            self._advance()
            p = self.profile
            busy = self._util_pct > 0
            sm = p.max_sm_clock_mhz * self._clock_factor if busy else p.idle_sm_clock_mhz
            video = p.max_video_clock_mhz * self._clock_factor if busy else p.idle_video_clock_mhz
            used = self._load_memory_bytes + sum(
                x.used_memory_bytes for x in self._processes.values()
            )
            return GpuReading(
                temperature_c=round(self._temperature_c),
                power_mw=round(self._power_w * 1000),
                power_limit_mw=round(self._power_limit_w * 1000),
                utilization_gpu_pct=round(self._util_pct),
                utilization_memory_pct=round(self._util_pct * _MEMORY_UTIL_PER_GPU_UTIL),
                sm_clock_mhz=_bin(sm),
                memory_clock_mhz=p.max_memory_clock_mhz if busy else p.idle_memory_clock_mhz,
                video_clock_mhz=_bin(video),
                clocks_event_reasons=(self._reasons & ~_IDLE) | (0 if busy else _IDLE),
                memory_used_bytes=min(used, p.memory_total_bytes - p.memory_reserved_bytes),
                ecc_corrected_volatile=self._ecc[0],
                ecc_corrected_aggregate=self._ecc[1],
                ecc_uncorrected_volatile=self._ecc[2],
                ecc_uncorrected_aggregate=self._ecc[3],
                remapped_rows_corrected=self._remapped[0],
                remapped_rows_uncorrected=self._remapped[1],
                remap_pending=self._remap_pending,
                remap_failure=self._remap_failure,
                pcie_replays=self._pcie_replays,
                processes=tuple(self._processes.values()),
            )

    # -- workload ------------------------------------------------------------------------

    def set_load(self, util_pct: float, memory_used_bytes: int | None = None) -> None:
        """Run work at ``util_pct`` %; ``memory_used_bytes`` (if given) is memory held
        outside any listed process. Power, temperature and clocks follow from the next step.
        """
        if not 0 <= util_pct <= 100:
            raise ValueError(f"utilization must be 0..100 %, got {util_pct}")
        if memory_used_bytes is not None and memory_used_bytes < 0:
            raise ValueError(f"memory used must be >= 0 bytes, got {memory_used_bytes}")
        with self._fleet.lock:
            self._advance()
            self._util_pct = float(util_pct)
            if memory_used_bytes is not None:
                self._load_memory_bytes = memory_used_bytes

    def set_cooling(self, factor: float) -> None:
        """Scale the heat sink's effectiveness: 1.0 normal, below 1 a failing fan or inlet."""
        if not factor > 0:
            raise ValueError(f"cooling factor must be > 0, got {factor}")
        with self._fleet.lock:
            self._advance()
            self._cooling = float(factor)

    def start_process(self, pid: int, used_memory_bytes: int, name: str = "python3") -> None:
        """A compute process opens a context holding ``used_memory_bytes`` of framebuffer."""
        if pid <= 0 or used_memory_bytes < 0:
            raise ValueError(f"bad process pid={pid} memory={used_memory_bytes}")
        with self._fleet.lock:
            self._advance()
            self._processes[pid] = ProcessInfo(pid, name, used_memory_bytes)

    def stop_process(self, pid: int) -> None:
        """The process exits and frees its memory; unknown pids are ignored."""
        with self._fleet.lock:
            self._advance()
            self._processes.pop(pid, None)

    # -- faults --------------------------------------------------------------------------

    def add_pcie_replays(self, count: int) -> None:
        """A flaky link: the PCIe replay counter jumps by ``count`` (a riser, slot or cable)."""
        if count < 0:
            raise ValueError(f"replays must be >= 0, got {count}")
        with self._fleet.lock:
            self._advance()
            self._pcie_replays += count

    def set_power_brake(self, on: bool) -> None:
        """The board's external power brake (a PSU or power feed failing): clocks held low."""
        with self._fleet.lock:
            self._advance()
            self._power_brake = on

    def inject_xid(
        self,
        code: int,
        *,
        pid: int | None = None,
        process: str | None = None,
        message: str | None = None,
        nvml_code: int | None = None,
    ) -> str:
        """Raise XID ``code``: apply its side effects, queue the NVML event, return the
        kernel log line the driver would print for it.

        ``nvml_code`` is the event's ``eventData`` when it differs from ``code`` (drivers
        sometimes deliver 999, unknown). ``process`` defaults to the name of the running
        process ``pid``. Side effects: 48 uncorrected ECC +1; 63 a row remap pending; 64
        remap failure; 79 off the bus; 92 a burst of corrected ECC and a raised corrected
        rate; 13/31/43 kill process ``pid``, and a GPU with no process left goes idle.
        """
        if code <= 0 or (nvml_code is not None and nvml_code < 0):
            raise ValueError(f"bad XID code={code} nvml_code={nvml_code}")
        with self._fleet.lock:
            self._advance()
            if pid is not None and process is None and pid in self._processes:
                process = self._processes[pid].name
            self._apply_xid(code, pid)
            self._fleet._publish_xid(self.index, code if nvml_code is None else nvml_code)
        text = message if message is not None else _default_message(code)
        return xid_kernel_line(self.pci_bus_id, code, text, pid=pid, process=process)

    def fall_off_bus(self) -> None:
        """The GPU stops answering: every NVML call with its handle returns GPU_IS_LOST.
        Its processes are gone and it draws no power until :meth:`recover`.
        """
        with self._fleet.lock:
            self._advance()
            self._lost = True
            self._processes.clear()
            self._util_pct = 0.0
            self._load_memory_bytes = 0

    def recover(self) -> None:
        """A GPU reset: it answers again, idle and empty, with volatile ECC counts cleared
        and any pending row remap applied. A remap failure is permanent and stays.
        """
        with self._fleet.lock:
            self._advance()
            self._lost = False
            self._processes.clear()
            self._util_pct = 0.0
            self._load_memory_bytes = 0
            self._ecc[0] = self._ecc[2] = 0
            self._remap_pending = False
            self._hw_slowdown = False

    def _apply_xid(self, code: int, pid: int | None) -> None:
        if code == 48:
            self._ecc[2] += 1
            self._ecc[3] += 1
        elif code == 63:
            self._remapped[1] += 1
            self._remap_pending = True
        elif code == 64:
            self._remap_failure = True
        elif code == 79:
            self.fall_off_bus()
        elif code == 92:
            burst = self._rng.randint(40, 120)
            self._ecc[0] += burst
            self._ecc[1] += burst
            self._corrected_per_s = max(self._corrected_per_s, _SBE_STORM_PER_HOUR / 3600.0)
        elif code in _KILLS_PROCESS and pid is not None and pid in self._processes:
            del self._processes[pid]
            if not self._processes:
                self._util_pct = 0.0
                self._load_memory_bytes = 0

    # -- physics -------------------------------------------------------------------------

    def _advance(self) -> None:
        now_s = (self._fleet.clock() - self._fleet.started_at) * self._fleet.time_scale
        steps = int((now_s - self._sim_s) // STEP_S)
        if steps <= 0:
            return
        if steps > _MAX_STEPS:
            skipped_s = (steps - _MAX_STEPS) * STEP_S
            self._count(skipped_s)
            self._sim_s += skipped_s
            steps = _MAX_STEPS
        for _ in range(steps):
            self._step(STEP_S)
            self._sim_s += STEP_S

    def _step(self, dt_s: float) -> None:
        """Heat flows first (from the last step's power), then the firmware reacts to the
        new temperature, in whole degrees as its sensor reads it, and sets clocks and power.
        """
        p = self.profile
        target_c = p.ambient_c + p.thermal_c_per_w * self._power_w / self._cooling
        settle = 1.0 - math.exp(-dt_s / _THERMAL_TAU_S)
        self._temperature_c += (target_c - self._temperature_c) * settle
        self._temperature_c += self._rng.gauss(0.0, _TEMPERATURE_NOISE_C)
        sensor_c = round(self._temperature_c)
        util = 0.0 if self._lost else self._util_pct
        reasons = 0
        factor = 1.0
        if sensor_c >= p.slowdown_temp_c or (
            self._hw_slowdown and sensor_c > p.slowdown_temp_c - _SLOWDOWN_HYSTERESIS_C
        ):
            self._hw_slowdown = True
            factor = _HW_SLOWDOWN_CLOCK
            reasons |= _HW_SLOWDOWN | _SW_THERMAL
        else:
            self._hw_slowdown = False
            if sensor_c >= p.max_operating_temp_c:
                factor = _SW_THERMAL_CLOCK
                reasons |= _SW_THERMAL
        if self._power_brake:
            factor = min(factor, _HW_SLOWDOWN_CLOCK)
            reasons |= _POWER_BRAKE | _HW_SLOWDOWN_BIT
        dynamic_w = (p.full_load_power_w - p.idle_power_w) * util / 100.0 * factor
        headroom_w = self._power_limit_w - p.idle_power_w
        if dynamic_w > headroom_w:
            factor *= headroom_w / dynamic_w
            dynamic_w = headroom_w
            reasons |= _POWER_CAP
        power_w = (p.idle_power_w + dynamic_w) * (1.0 + self._rng.gauss(0.0, _POWER_NOISE))
        self._power_w = 0.0 if self._lost else min(max(power_w, 0.0), self._power_limit_w)
        self._clock_factor = factor
        self._reasons = reasons
        self._count(dt_s)

    def _count(self, dt_s: float) -> None:
        """Grow the slow counters (corrected ECC, PCIe replays) over ``dt_s`` seconds."""
        self._ecc_carry += self._corrected_per_s * dt_s * self._rng.uniform(0.0, 2.0)
        self._replay_carry += self._replays_per_s * dt_s * self._rng.uniform(0.0, 2.0)
        if (whole := int(self._ecc_carry)) > 0:
            self._ecc_carry -= whole
            self._ecc[0] += whole
            self._ecc[1] += whole
        if (whole := int(self._replay_carry)) > 0:
            self._replay_carry -= whole
            self._pcie_replays += whole


def _bin(mhz: float) -> int:
    """Clocks move in 15 MHz bins on these boards."""
    return int(mhz // _CLOCK_BIN_MHZ * _CLOCK_BIN_MHZ)


def _default_message(code: int) -> str:
    return _XID_MESSAGES.get(code) or default_catalog().lookup(code).title
