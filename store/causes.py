"""Rules that name an XID's likely cause from its context, each with evidence carrying numbers.

Pure functions over what :mod:`store.correlation` gathered. The rules follow NVIDIA's XID
guidance: a 79 or 62 after heat or thermal throttling is thermal, after PCIe replays the
bus or link, after power throttling power; 48/63/64/92/94/95 are GPU memory; a 13, 31 or
43 on several GPUs at once is the job, repeating on one GPU only, the GPU; a 45 (or 154)
right after another XID on the GPU follows it. Thresholds come from the GPU's own limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from store.processes import ProcessSpan
from store.records import GpuStateEvent, InventoryGpu, StoredXid
from store.xid_workflows import FOLLOW_MS, recovery_action

__all__ = [
    "Cause",
    "CauseInputs",
    "Confidence",
    "MetricAround",
    "MetricStats",
    "likely_cause",
]

Cause = Literal[
    "thermal",
    "power",
    "bus_or_link",
    "gpu_memory",
    "gpu_hardware",
    "application",
    "follows_other_xid",
    "unknown",
]
Confidence = Literal["high", "medium", "low"]
Verdict = tuple[Cause, list[str], Confidence]

MEMORY_CODES = frozenset({48, 63, 64, 92, 94, 95, 140})
APP_CODES = frozenset({13, 31, 43})
OFF_THE_BUS_CODES = frozenset({79, 62})
TEMP_MARGIN_C = 5
THROTTLE_SHARE = 0.05  # throttled at least this share of the time before counts
POWER_OVER_LIMIT = 1.02
RECOVERY_FOLLOW_MS = 60_000
_LOWER: dict[Confidence, Confidence] = {"high": "medium", "medium": "low", "low": "low"}


@dataclass(frozen=True, slots=True)
class MetricStats:
    """One metric over one side of the event: extremes, first and last bucket, slope per hour."""

    since_ms: int
    until_ms: int
    tier: str
    step_ms: int
    points: int
    samples: int
    min: float | None
    avg: float | None
    max: float | None
    first: float | None
    last: float | None
    slope_per_hour: float | None


@dataclass(frozen=True, slots=True)
class MetricAround:
    """A metric before and after the event; a side is None when its window is empty."""

    metric: str
    unit: str
    before: MetricStats | None
    after: MetricStats | None


@dataclass(frozen=True, slots=True)
class CauseInputs:
    """What the rules look at; ``nearby`` holds (event, offset in s, same GPU) triples."""

    event: StoredXid
    gpu: InventoryGpu | None
    metrics: Mapping[str, MetricAround] = field(default_factory=dict)
    nearby: tuple[tuple[StoredXid, float, bool], ...] = ()
    processes: tuple[ProcessSpan, ...] = ()
    gpu_events: tuple[GpuStateEvent, ...] = ()
    before_ms: int = 15 * 60_000


def likely_cause(c: CauseInputs) -> Verdict:
    """The likely cause of ``c.event``, the evidence for it, and how far to trust it."""
    cause, evidence, confidence = _rule(c)
    return cause, evidence + _context(c), confidence


def _rule(c: CauseInputs) -> Verdict:
    code = c.event.xid
    follows = _follows(c) if code in (45, 154) else None
    if follows is not None:
        return follows
    if code == 45:
        routine = (
            "no other XID on this GPU in the 10 s before: a job was stopped (kill, Ctrl-C) "
            "or the GPU was reset, which is routine"
        )
        return "application", [routine], "medium"
    if code in MEMORY_CODES:
        return _memory(c)
    if code in APP_CODES:
        return _application(c)
    return _physical(c)


def _before(c: CauseInputs, metric: str) -> MetricStats | None:
    around = c.metrics.get(metric)
    return around.before if around is not None else None


def _after(c: CauseInputs, metric: str) -> MetricStats | None:
    around = c.metrics.get(metric)
    return around.after if around is not None else None


def _follows(c: CauseInputs) -> Verdict | None:
    e = c.event
    within = FOLLOW_MS if e.xid == 45 else RECOVERY_FOLLOW_MS
    prior = [
        n
        for n, _, same in c.nearby
        if same
        and n.xid not in (45, 154)
        and n.ts_ms <= e.ts_ms + 1000
        and e.ts_ms - n.last_ts_ms <= within
    ]
    if not prior:
        return None
    p = max(prior, key=lambda n: n.last_ts_ms)
    dt = max(0.0, (e.ts_ms - p.last_ts_ms) / 1000)
    evidence = [
        f"XID {e.xid} came {dt:.1f} s after XID {p.xid} (id {p.id}) on this GPU: "
        f"it follows that one; correlate XID {p.xid} instead"
    ]
    if e.xid == 154:
        evidence.append(f"the driver now wants recovery action {recovery_action(e.message)!r}")
    return "follows_other_xid", evidence, "high"


def _memory(c: CauseInputs) -> Verdict:
    evidence: list[str] = []
    ecc = "ecc_uncorrected_volatile"
    sides = [x for x in (_before(c, ecc), _after(c, ecc)) if x and x.min is not None]
    lo, hi = (sides[0].min, sides[-1].max) if sides else (None, None)
    rose = lo is not None and hi is not None and hi > lo
    if rose:
        evidence.append(
            f"uncorrectable ECC errors (volatile count) went from {lo:.0f} to {hi:.0f} "
            "around the event"
        )
    elif lo is not None:
        evidence.append(f"the uncorrectable ECC count stayed at {lo:.0f} around the event")
    companions = [(n, off) for n, off, same in c.nearby if same and n.xid in MEMORY_CODES]
    evidence += [
        f"XID {n.xid} (id {n.id}) {abs(off):.1f} s {'before' if off < 0 else 'after'} on this GPU"
        for n, off in companions[:5]
    ]
    evidence.insert(0, f"XID {c.event.xid} reports GPU memory trouble")
    return "gpu_memory", evidence, "high" if rose or companions else "medium"


def _application(c: CauseInputs) -> Verdict:
    e = c.event
    elsewhere: dict[str, int] = {}
    for n, _, same in c.nearby:
        if not same and n.kind == "xid" and n.xid == e.xid and n.pci_bus_id:
            elsewhere[n.pci_bus_id] = elsewhere.get(n.pci_bus_id, 0) + n.count
    evidence = _process_evidence(c)
    if elsewhere:
        gpus = ", ".join(f"{pci} x{n}" for pci, n in sorted(elsewhere.items()))
        evidence.insert(
            0,
            f"XID {e.xid} also on {len(elsewhere)} other GPU(s) in the window ({gpus}): "
            "spread over GPUs, it points at the job, not a GPU",
        )
        return "application", evidence, "high" if len(elsewhere) >= 2 else "medium"
    here = e.count + sum(n.count for n, _, same in c.nearby if same and n.xid == e.xid)
    if here >= 3:
        evidence.insert(
            0,
            f"XID {e.xid} x{here} on this GPU in the window and on no other GPU: repeats on "
            "one GPU point at the GPU (drain it and run dcgmi diag)",
        )
        return "gpu_hardware", evidence, "medium"
    evidence.insert(0, f"a one-off XID {e.xid}, on no other GPU in the window: most often the job")
    return "application", evidence, "low"


def _process_evidence(c: CauseInputs) -> list[str]:
    out = []
    if c.event.process or c.event.pid is not None:
        out.append(f"the XID names process {c.event.process or '?'} (pid {c.event.pid})")
    if c.processes:
        listed = ", ".join(
            f"{p.name or '?'} (pid {p.pid}, {p.used_mib if p.used_mib is not None else '?'} MiB)"
            for p in c.processes[:5]
        )
        out.append(f"on the GPU at the time: {listed}")
    return out


def _physical(c: CauseInputs) -> Verdict:
    """Thermal, bus or power, by the strongest precursor; unknown when there is none."""
    # Ties go to the earlier entry: heat is the commonest precursor, then the link.
    candidates: list[tuple[Cause, tuple[int, list[str]]]] = [
        ("thermal", _thermal(c)),
        ("bus_or_link", _bus(c)),
        ("power", _power(c)),
    ]
    cause, (strength, evidence) = max(candidates, key=lambda k: k[1][0])
    if strength == 0:
        return "unknown", [_no_precursor(c)], "low"
    confidence: Confidence = "high" if strength >= 2 else "medium"
    if c.event.xid not in OFF_THE_BUS_CODES:
        confidence = _LOWER[confidence]
    return cause, evidence, confidence


def _thermal(c: CauseInputs) -> tuple[int, list[str]]:
    strength, evidence = 0, []
    temp, mins = _before(c, "temperature"), c.before_ms // 60_000
    slowdown = c.gpu.info.slowdown_temp_c if c.gpu else None
    if (
        temp
        and temp.max is not None
        and slowdown is not None
        and (temp.max >= slowdown - TEMP_MARGIN_C)
    ):
        strength += 2 if temp.max >= slowdown else 1
        where = "above" if temp.max >= slowdown else f"{slowdown - temp.max:.0f} °C below"
        evidence.append(
            f"temperature {_movement(temp, '°C')} in the {mins} min before"
            f"{_slope(temp, '°C')}, peaking at {temp.max:.0f} °C, {where} its slowdown "
            f"temperature {slowdown} °C"
        )
    throttled = _before(c, "throttle_thermal")
    if throttled and throttled.avg is not None and throttled.avg >= THROTTLE_SHARE:
        strength += 1
        evidence.append(f"clocks were thermally throttled {throttled.avg:.0%} of the time before")
    clock = _before(c, "sm_clock")
    if strength and clock and clock.first and clock.last and clock.last < 0.9 * clock.first:
        evidence.append(f"the SM clock fell from {clock.first:.0f} MHz to {clock.last:.0f} MHz")
    return strength, evidence


def _bus(c: CauseInputs) -> tuple[int, list[str]]:
    before, after = _before(c, "pcie_replays"), _after(c, "pcie_replays")
    if before is None or before.min is None or before.max is None:
        return 0, []
    grew = before.max - before.min
    if grew <= 0:
        return 0, []
    text = (
        f"the PCIe replay counter rose by {grew:.0f} in the {c.before_ms // 60_000} min before "
        f"(from {before.min:.0f} to {before.max:.0f})"
    )
    if after is not None and after.max is not None and after.max > before.max:
        text += f" and by {after.max - before.max:.0f} more after"
    return (2 if grew >= 10 else 1), [text]


def _power(c: CauseInputs) -> tuple[int, list[str]]:
    strength, evidence = 0, []
    throttled = _before(c, "throttle_power")
    if throttled and throttled.avg is not None and throttled.avg >= THROTTLE_SHARE:
        strength += 1
        evidence.append(
            f"clocks were held back by the power cap or power brake {throttled.avg:.0%} of the "
            "time before"
        )
    power, limit = _before(c, "power"), c.gpu.info.power_limit_default_w if c.gpu else None
    if power and power.max is not None and limit and power.max > limit * POWER_OVER_LIMIT:
        strength += 1
        evidence.append(f"power peaked at {power.max:.0f} W, over its {limit:.0f} W limit")
    return strength, evidence


def _no_precursor(c: CauseInputs) -> str:
    temp = _before(c, "temperature")
    slowdown = c.gpu.info.slowdown_temp_c if c.gpu else None
    parts = []
    if temp and temp.max is not None:
        limit = f" (slowdown {slowdown} °C)" if slowdown is not None else ""
        parts.append(f"temperature peaked at {temp.max:.0f} °C{limit}")
    text = f"no thermal, power or PCIe precursor in the {c.before_ms // 60_000} min before"
    text += f": {', '.join(parts)}" if parts else ""
    if c.event.xid in OFF_THE_BUS_CODES:
        text += "; without precursors suspect the slot, riser or GPU: check mechanicals"
    return text


def _context(c: CauseInputs) -> list[str]:
    """What happened to the GPU after the event, and what telemetry is missing."""
    out = []
    if c.gpu is None:
        return ["NVML never listed this GPU, so there is no telemetry: the XIDs are the evidence"]
    t = c.event.ts_ms
    for e in c.gpu_events:
        if e.ts_ms >= t:
            what = "lost" if e.state == "lost" else "answering again"
            out.append(f"NVML reported the GPU {what} {(e.ts_ms - t) / 1000:.0f} s after the event")
    sides = [m for m in c.metrics.values() if m.before is not None]
    if sides and all(m.before is not None and m.before.samples == 0 for m in sides):
        out.append("no telemetry stored before the event (past retention, or sampling was off)")
    elif any(m.before and m.before.samples for m in sides) and all(
        m.after is not None
        and m.after.samples == 0
        and m.after.until_ms - m.after.since_ms >= 60_000
        for m in c.metrics.values()
    ):
        out.append("no samples after the event: the GPU stopped answering NVML")
    return out


def _movement(s: MetricStats, unit: str) -> str:
    if s.first is None or s.last is None:
        return "was measured"
    if s.points == 1 and s.min is not None and s.max is not None and s.max - s.min >= 2:
        # One bucket holds the whole window: its average says nothing about the direction.
        return f"ranged from {s.min:.0f} {unit} to {s.max:.0f} {unit}"
    if s.last - s.first >= 2:
        return f"rose from {s.first:.0f} {unit} to {s.last:.0f} {unit}"
    if s.first - s.last >= 2:
        return f"fell from {s.first:.0f} {unit} to {s.last:.0f} {unit}"
    return f"held at about {s.avg if s.avg is not None else s.last:.0f} {unit}"


def _slope(s: MetricStats, unit: str) -> str:
    return "" if s.slope_per_hour is None else f" (slope {s.slope_per_hour:+.0f} {unit}/h)"
