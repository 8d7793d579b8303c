"""GPU health from stored facts: the latest sample, the GPU's own limits, and recent XIDs.

Pure functions over query results, shared by ``xidwatch health`` and the MCP tools.
Thresholds come from each GPU's own slowdown temperature and power limit (never a
constant for all models); XIDs count by the catalog action stored with them, so a single
XID 79 (RESTART_BM) outranks a hundred XID 13s (RESTART_APP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from store.metrics import HW_POWER_BRAKE, HW_SLOWDOWN, HW_THERMAL, SW_THERMAL
from store.records import GpuSample, InventoryGpu, XidSummaryRow

__all__ = ["Finding", "GpuHealth", "Severity", "assess_gpu"]

Severity = Literal["ok", "warning", "critical"]
_RANK: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}

# Catalog actions that take the GPU (or node) out of service until done.
FATAL_ACTIONS = frozenset({"RESET_GPU", "RESTART_BM", "RESTART_VM", "XID_154"})
ATTENTION_ACTIONS = frozenset(
    {"CONTACT_SUPPORT", "CHECK_MECHANICALS", "UPDATE_SWFW", "WORKFLOW_XID_48", "UNKNOWN"}
)
TEMP_WARNING_MARGIN_C = 5
REPEAT_APP_XIDS = 3
STALE_AFTER_MS = 5 * 60_000


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a GPU is not simply OK, with what to do about it."""

    severity: Severity
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class GpuHealth:
    """A GPU's status (the worst of its findings) and the findings behind it."""

    gpu: InventoryGpu
    sample: GpuSample | None
    status: Severity
    findings: tuple[Finding, ...]


def assess_gpu(
    gpu: InventoryGpu,
    sample: GpuSample | None,
    xids: Sequence[XidSummaryRow],
    *,
    now_ms: int,
    stale_after_ms: int = STALE_AFTER_MS,
) -> GpuHealth:
    """Judge one GPU; ``xids`` are the recent summary rows for this GPU's PCI bus id."""
    findings = [
        *_liveness(gpu, sample, now_ms, stale_after_ms),
        *(_readings(gpu, sample) if sample is not None else ()),
        *_xid_findings(xids),
    ]
    findings.sort(key=lambda f: -_RANK[f.severity])
    status: Severity = findings[0].severity if findings else "ok"
    return GpuHealth(gpu, sample, status, tuple(findings))


def _liveness(
    gpu: InventoryGpu, sample: GpuSample | None, now_ms: int, stale_after_ms: int
) -> list[Finding]:
    if gpu.lost_since_ms is not None:
        return [
            Finding(
                "critical",
                "gpu_lost",
                "GPU stopped answering NVML (lost, e.g. fallen off the bus): drain the node "
                "and reset the GPU or reboot",
            )
        ]
    if sample is None:
        return [Finding("warning", "no_samples", "never sampled: is NVML sampling on?")]
    age_s = (now_ms - sample.ts_ms) / 1000
    if age_s * 1000 > stale_after_ms:
        return [
            Finding(
                "warning",
                "stale",
                f"last sample {age_s / 60:.0f} min old: is the xidwatch daemon running?",
            )
        ]
    return []


def _readings(gpu: InventoryGpu, s: GpuSample) -> list[Finding]:
    out: list[Finding] = []
    slowdown = gpu.info.slowdown_temp_c
    if s.temperature_c is not None and slowdown is not None:
        if s.temperature_c >= slowdown:
            out.append(
                Finding(
                    "critical",
                    "temperature_slowdown",
                    f"{s.temperature_c} °C is at or above its slowdown temperature "
                    f"({slowdown} °C): check cooling and airflow",
                )
            )
        elif s.temperature_c >= slowdown - TEMP_WARNING_MARGIN_C:
            out.append(
                Finding(
                    "warning",
                    "temperature_near_slowdown",
                    f"{s.temperature_c} °C is within {TEMP_WARNING_MARGIN_C} °C of its slowdown "
                    f"temperature ({slowdown} °C)",
                )
            )
    reasons = s.clocks_event_reasons or 0
    if reasons & (SW_THERMAL | HW_THERMAL | HW_SLOWDOWN):
        out.append(Finding("warning", "thermal_throttle", "clocks held back by thermal slowdown"))
    if reasons & HW_POWER_BRAKE:
        out.append(
            Finding(
                "warning", "power_brake", "hardware power brake asserted: check the PSU/power feed"
            )
        )
    if s.ecc_uncorrected_volatile:
        out.append(
            Finding(
                "critical",
                "ecc_uncorrected",
                f"{s.ecc_uncorrected_volatile} uncorrectable ECC error(s) since the driver "
                "loaded: drain and reset the GPU",
            )
        )
    if s.remap_failure:
        out.append(
            Finding(
                "critical",
                "remap_failure",
                "a row remap failed (no spare rows): the GPU needs service (RMA)",
            )
        )
    elif s.remap_pending:
        out.append(
            Finding(
                "warning",
                "remap_pending",
                "a row remap is pending: reset the GPU when drained to activate it",
            )
        )
    return out


def _xid_findings(xids: Sequence[XidSummaryRow]) -> list[Finding]:
    out: list[Finding] = []
    for row in sorted(xids, key=lambda r: (-r.count, r.xid)):
        label = f"{'SXid' if row.kind == 'sxid' else 'XID'} {row.xid} x{row.count} ({row.action})"
        if row.action in FATAL_ACTIONS:
            out.append(Finding("critical", f"xid_{row.xid}", label))
        elif row.action in ATTENTION_ACTIONS or row.action.startswith("WORKFLOW"):
            out.append(Finding("warning", f"xid_{row.xid}", label))
        elif row.action == "RESTART_APP" and row.count >= REPEAT_APP_XIDS:
            out.append(
                Finding(
                    "warning",
                    f"xid_{row.xid}",
                    f"{label} repeating on this GPU: if other GPUs running the same job are "
                    "clean, run diagnostics on this one",
                )
            )
        elif row.action not in ("IGNORE", "RESTART_APP"):
            out.append(Finding("warning", f"xid_{row.xid}", label))
    return out
