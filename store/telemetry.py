"""The metric registry: every telemetry metric xidwatch keeps, its unit and where it is stored.

One entry per metric a user can ask for (``xidwatch trend --metric NAME``, the MCP history
tools). Raw samples keep NVML's readings in compact integer columns (milliwatts, MiB);
``scale`` turns a stored value into the metric's unit. Throttle metrics are derived from
NVML's clocks-event bitmask, so their average over a bucket is the fraction of the time
the GPU was held back for that reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from store.errors import InvalidQueryError
from store.records import GpuSample

__all__ = [
    "METRICS",
    "RAW_COLUMNS",
    "GpuLimit",
    "Metric",
    "MetricKind",
    "get_metric",
    "raw_row",
    "sample_from_raw",
]

MetricKind = Literal["gauge", "counter", "flag"]
# A limit each GPU reports for itself (GpuInfo's slowdown_temp_c, shutdown_temp_c,
# power_limit_default_w), usable as a trend threshold.
GpuLimit = Literal["slowdown_temp", "shutdown_temp", "power_limit"]

# NVML clocks event (throttle) reason bits.
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL = 0x20
HW_THERMAL = 0x40
HW_POWER_BRAKE = 0x80

# Columns of ``samples`` after (gpu, ts), in table order, and the GpuSample field each holds.
RAW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("temp_c", "temperature_c"),
    ("power_mw", "power_w"),
    ("power_limit_mw", "power_limit_w"),
    ("sm_clock_mhz", "sm_clock_mhz"),
    ("mem_clock_mhz", "memory_clock_mhz"),
    ("util_gpu_pct", "gpu_util_pct"),
    ("util_mem_pct", "memory_util_pct"),
    ("mem_used_mib", "memory_used_bytes"),
    ("mem_total_mib", "memory_total_bytes"),
    ("ecc_corr_vol", "ecc_corrected_volatile"),
    ("ecc_unc_vol", "ecc_uncorrected_volatile"),
    ("ecc_corr_agg", "ecc_corrected_aggregate"),
    ("ecc_unc_agg", "ecc_uncorrected_aggregate"),
    ("remap_corr", "remapped_rows_corrected"),
    ("remap_unc", "remapped_rows_uncorrected"),
    ("remap_pending", "remap_pending"),
    ("remap_failure", "remap_failure"),
    ("throttle_reasons", "clocks_event_reasons"),
    ("pcie_replays", "pcie_replays"),
    ("nvlink_active", "nvlink_active"),
    ("nvlink_errors", "nvlink_errors"),
    ("processes", "process_count"),
)

_MIB = 1 << 20
# How a GpuSample field becomes its stored integer (fields not listed are stored as is).
_TO_STORED: Mapping[str, float] = {
    "power_w": 1000.0,
    "power_limit_w": 1000.0,
    "memory_used_bytes": 1 / _MIB,
    "memory_total_bytes": 1 / _MIB,
}
_FLAGS = frozenset({"remap_pending", "remap_failure"})


@dataclass(frozen=True, slots=True)
class Metric:
    """One queryable metric.

    ``column`` names it in the rollup tables (``<column>_min``/``_max``/``_sum``/``_n``);
    ``source`` is the raw ``samples`` column it comes from, and ``mask`` (for throttle flags)
    the bits of that column that make it 1.

    ``default_threshold`` (a value) or ``default_limit`` (the GPU's own limit) is the line a
    trend is judged against when none is asked for, where NVIDIA gives one; ``threshold_basis``
    says where it comes from. A threshold is crossed at or above it.
    """

    name: str
    column: str
    unit: str
    kind: MetricKind
    description: str
    scale: float = 1.0
    source: str = ""
    mask: int | None = None
    default_threshold: float | None = None
    default_limit: GpuLimit | None = None
    threshold_basis: str = ""

    @property
    def raw_column(self) -> str:
        return self.source or self.column

    def raw_sql(self) -> str:
        """The SQL expression for this metric's stored value over a ``samples`` row."""
        if self.mask is not None:
            return f"(({self.raw_column} & {self.mask}) != 0)"
        return self.raw_column

    def stored_value(self, row: Mapping[str, int | None]) -> int | None:
        """This metric's stored value from a raw row (column -> stored integer)."""
        value = row.get(self.raw_column)
        if value is None or self.mask is None:
            return value
        return int(value & self.mask != 0)


METRICS: tuple[Metric, ...] = (
    Metric(
        "temperature",
        "temp_c",
        "°C",
        "gauge",
        "GPU core temperature.",
        default_limit="slowdown_temp",
        threshold_basis="the GPU's own slowdown temperature: clocks are cut from there",
    ),
    Metric("power", "power_mw", "W", "gauge", "Board power draw.", scale=0.001),
    Metric("power_limit", "power_limit_mw", "W", "gauge", "Enforced power limit.", scale=0.001),
    Metric("sm_clock", "sm_clock_mhz", "MHz", "gauge", "SM (graphics) clock."),
    Metric("memory_clock", "mem_clock_mhz", "MHz", "gauge", "Memory clock."),
    Metric("utilization", "util_gpu_pct", "%", "gauge", "Time a kernel was running (GPU util)."),
    Metric("memory_utilization", "util_mem_pct", "%", "gauge", "Time memory was read or written."),
    Metric("memory_used", "mem_used_mib", "MiB", "gauge", "Frame buffer memory in use."),
    Metric("memory_total", "mem_total_mib", "MiB", "gauge", "Frame buffer memory in total."),
    Metric(
        "ecc_corrected_volatile",
        "ecc_corr_vol",
        "errors",
        "counter",
        "Single-bit ECC errors corrected since the last driver load.",
    ),
    Metric(
        "ecc_uncorrected_volatile",
        "ecc_unc_vol",
        "errors",
        "counter",
        "Double-bit (uncorrectable) ECC errors since the last driver load.",
        default_threshold=1,
        threshold_basis="any uncorrectable ECC error is a problem (XID 48/94/95)",
    ),
    Metric(
        "ecc_corrected_aggregate",
        "ecc_corr_agg",
        "errors",
        "counter",
        "Corrected ECC errors over the GPU's lifetime.",
    ),
    Metric(
        "ecc_uncorrected_aggregate",
        "ecc_unc_agg",
        "errors",
        "counter",
        "Uncorrectable ECC errors over the GPU's lifetime.",
    ),
    Metric(
        "remapped_rows_corrected",
        "remap_corr",
        "rows",
        "counter",
        "Rows remapped after correctable errors.",
    ),
    Metric(
        "remapped_rows_uncorrected",
        "remap_unc",
        "rows",
        "counter",
        "Rows remapped after uncorrectable errors.",
        default_threshold=8,
        # NVIDIA's RMA policy for row remapping: a remap for an uncorrectable error on a bank
        # that already has eight such rows remapped fails (the remap-failure flag). NVML counts
        # per GPU, not per bank, so 8 is the first count at which a bank can be full.
        threshold_basis="a bank with 8 rows remapped for uncorrectable errors cannot remap more",
    ),
    Metric(
        "remap_pending",
        "remap_pending",
        "flag",
        "flag",
        "1 while a row remap waits for a GPU reset to take effect (XID 63).",
        default_threshold=1,
        threshold_basis="a pending remap needs a GPU reset to take effect",
    ),
    Metric(
        "remap_failure",
        "remap_failure",
        "flag",
        "flag",
        "1 once a row remap has failed (XID 64): the GPU needs service.",
        default_threshold=1,
        threshold_basis="a row-remap failure meets NVIDIA's RMA criteria",
    ),
    Metric(
        "throttle_power",
        "thr_power",
        "fraction",
        "flag",
        "Clocks held back by the power cap or power brake (avg = share of time).",
        source="throttle_reasons",
        mask=SW_POWER_CAP | HW_POWER_BRAKE,
    ),
    Metric(
        "throttle_thermal",
        "thr_thermal",
        "fraction",
        "flag",
        "Clocks held back by software or hardware thermal slowdown (avg = share of time).",
        source="throttle_reasons",
        mask=SW_THERMAL | HW_THERMAL,
    ),
    Metric(
        "throttle_hw_slowdown",
        "thr_hw_slowdown",
        "fraction",
        "flag",
        "Hardware slowdown asserted (temperature or power brake; avg = share of time).",
        source="throttle_reasons",
        mask=HW_SLOWDOWN,
    ),
    Metric(
        "pcie_replays", "pcie_replays", "replays", "counter", "PCIe replay counter (link errors)."
    ),
    Metric("nvlink_active", "nvlink_active", "links", "gauge", "NVLinks in the active state."),
    Metric(
        "nvlink_errors",
        "nvlink_errors",
        "errors",
        "counter",
        "NVLink CRC, replay and recovery errors, summed over links.",
    ),
    Metric("processes", "processes", "processes", "gauge", "Compute processes on the GPU."),
)

_BY_NAME = {m.name: m for m in METRICS}


def get_metric(name: str) -> Metric:
    """The metric called ``name``; an error listing the valid names otherwise."""
    metric = _BY_NAME.get(name)
    if metric is None:
        raise InvalidQueryError(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(_BY_NAME))}"
        )
    return metric


def raw_row(sample: GpuSample) -> dict[str, int | None]:
    """A GpuSample as stored: raw column -> integer (scaled, bools as 0/1, None kept)."""
    row: dict[str, int | None] = {}
    for column, field_name in RAW_COLUMNS:
        value = getattr(sample, field_name)
        if value is None:
            row[column] = None
        elif field_name in _TO_STORED:
            row[column] = round(value * _TO_STORED[field_name])
        else:
            row[column] = int(value)
    return row


def sample_from_raw(uuid: str, ts_ms: int, stored: Sequence[int | None]) -> GpuSample:
    """Inverse of :func:`raw_row`: stored integers (RAW_COLUMNS order) back to a GpuSample."""
    values: dict[str, Any] = {}
    for (_, field_name), value in zip(RAW_COLUMNS, stored, strict=True):
        if value is None:
            values[field_name] = None
        elif field_name in _TO_STORED:
            factor = _TO_STORED[field_name]
            values[field_name] = value / factor if factor > 1 else round(value / factor)
        elif field_name in _FLAGS:
            values[field_name] = bool(value)
        else:
            values[field_name] = value
    return GpuSample(uuid=uuid, ts_ms=ts_ms, **values)
