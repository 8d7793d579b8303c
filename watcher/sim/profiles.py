"""GPU models the simulator can be: the limits a real board of that model reports through NVML.

Values are what ``nvidia-smi -q`` prints for the model (board name, framebuffer total and
reserve, power limits, temperature thresholds, maximum and idle clocks, PCI ids) on
production drivers; see docs/simulator.md for the sources. The thermal constants
(``ambient_c``, ``thermal_c_per_w``) are not published figures: they are chosen so that an
idle board sits near the temperature real ones report and a fully loaded one near 65-70 C.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["PROFILES", "GpuProfile"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GpuProfile:
    """One GPU model's fixed facts.

    ``full_load_power_w`` is what the board would draw at 100 % utilization with no limit;
    it sits a little above the default limit because busy training jobs do hit the power
    cap. ``unsupported`` names the NVML functions that answer NOT_SUPPORTED on this model.
    ``memory_max_temp_c`` is None where the board has no memory temperature sensor. A model
    without NVLink has ``nvlink_count`` 0 and lists the NVLink calls as unsupported; a model
    without MIG lists ``nvmlDeviceGetMigMode``.
    """

    key: str
    name: str
    memory_total_bytes: int
    memory_reserved_bytes: int
    power_min_w: float
    power_max_w: float
    power_default_w: float
    idle_power_w: float
    full_load_power_w: float
    slowdown_temp_c: int
    shutdown_temp_c: int
    max_operating_temp_c: int
    memory_max_temp_c: int | None
    max_sm_clock_mhz: int
    max_memory_clock_mhz: int
    max_video_clock_mhz: int
    idle_sm_clock_mhz: int
    idle_memory_clock_mhz: int
    idle_video_clock_mhz: int
    nvlink_count: int
    pci_device_id: int
    pci_subsystem_id: int
    serial_prefix: str
    ambient_c: float
    thermal_c_per_w: float
    unsupported: frozenset[str]


_NO_NVLINK = frozenset({"nvmlDeviceGetNvLinkState", "nvmlDeviceGetNvLinkErrorCounter"})

_A100_80GB = GpuProfile(
    key="A100-80GB",
    name="NVIDIA A100-SXM4-80GB",
    memory_total_bytes=81920 * _MIB,
    memory_reserved_bytes=620 * _MIB,
    power_min_w=100.0,
    power_max_w=400.0,
    power_default_w=400.0,
    idle_power_w=60.0,
    full_load_power_w=425.0,
    slowdown_temp_c=89,
    shutdown_temp_c=92,
    max_operating_temp_c=85,
    memory_max_temp_c=95,
    max_sm_clock_mhz=1410,
    max_memory_clock_mhz=1593,
    max_video_clock_mhz=1290,
    idle_sm_clock_mhz=210,
    idle_memory_clock_mhz=1593,
    idle_video_clock_mhz=585,
    nvlink_count=12,
    pci_device_id=0x20B210DE,
    pci_subsystem_id=0x147F10DE,
    serial_prefix="1323",
    ambient_c=27.0,
    thermal_c_per_w=0.095,
    unsupported=frozenset(),
)

_H100_80GB = GpuProfile(
    key="H100-80GB",
    name="NVIDIA H100 80GB HBM3",
    memory_total_bytes=81559 * _MIB,
    memory_reserved_bytes=454 * _MIB,
    power_min_w=200.0,
    power_max_w=700.0,
    power_default_w=700.0,
    idle_power_w=70.0,
    full_load_power_w=745.0,
    slowdown_temp_c=89,
    shutdown_temp_c=92,
    max_operating_temp_c=87,
    memory_max_temp_c=95,
    max_sm_clock_mhz=1980,
    max_memory_clock_mhz=2619,
    max_video_clock_mhz=1545,
    idle_sm_clock_mhz=345,
    idle_memory_clock_mhz=2619,
    idle_video_clock_mhz=765,
    nvlink_count=18,
    pci_device_id=0x233010DE,
    pci_subsystem_id=0x16C110DE,
    serial_prefix="1654",
    ambient_c=27.0,
    thermal_c_per_w=0.06,
    unsupported=frozenset(),
)

_T4 = GpuProfile(
    key="T4",
    name="Tesla T4",
    memory_total_bytes=15360 * _MIB,
    memory_reserved_bytes=393 * _MIB,
    power_min_w=60.0,
    power_max_w=70.0,
    power_default_w=70.0,
    idle_power_w=14.0,
    full_load_power_w=74.0,
    slowdown_temp_c=93,
    shutdown_temp_c=96,
    max_operating_temp_c=85,
    memory_max_temp_c=None,
    max_sm_clock_mhz=1590,
    max_memory_clock_mhz=5001,
    max_video_clock_mhz=1470,
    idle_sm_clock_mhz=300,
    idle_memory_clock_mhz=405,
    idle_video_clock_mhz=540,
    nvlink_count=0,
    pci_device_id=0x1EB810DE,
    pci_subsystem_id=0x12A210DE,
    serial_prefix="1323",
    ambient_c=27.0,
    thermal_c_per_w=0.6,
    unsupported=_NO_NVLINK | {"nvmlDeviceGetRemappedRows", "nvmlDeviceGetMigMode"},
)

PROFILES: Mapping[str, GpuProfile] = MappingProxyType(
    {p.key: p for p in (_A100_80GB, _H100_80GB, _T4)}
)
"""Every model the simulator knows, by key (``"H100-80GB"``, ``"A100-80GB"``, ``"T4"``)."""
