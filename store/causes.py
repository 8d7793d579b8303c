"""One XID judged in its context: a cause, one action, how sure, and the evidence with numbers.

Pure functions over what :mod:`store.correlation` gathered, shared by ``correlate_xid`` and
every GPU's verdict in ``get_gpu_health``, so the two cannot disagree. The rules are
NVIDIA's XID workflows:

- 13/31/43 (and 94) are judged by *workload identity*: the same workload failing, again
  and again or on several GPUs (often at the same fault address), is the application; a
  GPU on which *different* workloads fail, while those workloads run clean on other GPUs,
  is the GPU.
- Memory: 92 is watched; 48 (alone or with 63) and 95 ask for a reset; 63 is a remap a
  reset activates; 64 is a remap that failed, so the GPU is replaced; 94 is contained.
- 79 (and a GPU NVML reports lost) needs the node power-cycled; the cause is what came
  before: heat or thermal throttling, a power brake or power over the limit, PCIe replays
  or NVLink errors, else the GPU itself (its slot, riser or board), never "unknown".
- 45 and 154 right after another XID on the GPU follow it; a 154 takes the recovery
  action its message names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from store.actions import Action, Cause, Confidence, code_action, recovery_action
from store.processes import ProcessSpan
from store.records import GpuStateEvent, InventoryGpu, StoredXid

__all__ = [
    "APP_CODES",
    "FOLLOW_MS",
    "MEMORY_CODES",
    "CauseInputs",
    "Judgement",
    "MetricAround",
    "MetricStats",
    "follows",
    "likely_cause",
    "workload",
]

MEMORY_CODES = frozenset({48, 63, 64, 92, 94, 95, 140})
APP_CODES = frozenset({13, 31, 43})
LINK_CODES = frozenset({74, 136, 137, 144, 145, 146, 147, 148, 149, 150, 155})
OFF_THE_BUS_CODES = frozenset({79})
FOLLOW_MS = 10_000  # an XID 45 this soon after another XID on the GPU is cleanup after it
RECOVERY_FOLLOW_MS = 60_000
CRASH_GAP_MS = 30_000  # XIDs of one pid (or of no pid) this close together are one crash
TEMP_MARGIN_C = 5
THROTTLE_SHARE = 0.05  # throttled at least this share of the time before counts
POWER_OVER_LIMIT = 1.02
REPEATS_UNNAMED = 3  # crashes on one GPU, of workloads the log does not name

_ADDRESS = re.compile(r"(?:@|\bVA\b|address|addr)\s*:?\s*(0x[0-9a-fA-F_]{4,})", re.IGNORECASE)
_POD_HASH = re.compile(r"(?:-[0-9a-f]{6,10})?-[0-9a-z]{5}$")
_GENERIC_NAMES = frozenset({"", "<unknown>", "?"})


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
    """What the rules look at.

    ``nearby`` holds (event, offset in s, same GPU) for the node's XIDs in the context
    window; ``workloads`` the processes seen on any of the node's GPUs in that window.
    """

    event: StoredXid
    gpu: InventoryGpu | None
    metrics: Mapping[str, MetricAround] = field(default_factory=dict)
    nearby: tuple[tuple[StoredXid, float, bool], ...] = ()
    workloads: tuple[ProcessSpan, ...] = ()
    gpu_events: tuple[GpuStateEvent, ...] = ()
    before_ms: int = 15 * 60_000


@dataclass(frozen=True, slots=True)
class Judgement:
    """What one XID says: its likely cause, the one action it needs, and why."""

    cause: Cause
    action: Action
    confidence: Confidence
    evidence: tuple[str, ...]


def likely_cause(c: CauseInputs) -> Judgement:
    """The likely cause of ``c.event``, the action it needs, the evidence and the confidence."""
    cause, action, evidence, confidence = _rule(c)
    return Judgement(cause, action, confidence, tuple(evidence + _context(c)))


def follows(event: StoredXid, earlier: Iterable[StoredXid]) -> StoredXid | None:
    """The XID on the same GPU that ``event`` (a 45 or 154) follows, if any."""
    within = FOLLOW_MS if event.xid == 45 else RECOVERY_FOLLOW_MS
    prior = [
        n
        for n in earlier
        if n.id != event.id
        and n.kind == "xid"
        and n.xid not in (45, 154)
        and n.pci_bus_id == event.pci_bus_id
        and n.ts_ms <= event.ts_ms + 1000
        and event.ts_ms - n.last_ts_ms <= within
    ]
    return max(prior, key=lambda n: (n.last_ts_ms, n.id), default=None)


def workload(e: StoredXid | ProcessSpan) -> str | None:
    """What ran: the pod's workload (its name without the ReplicaSet and pod suffixes) and
    container when Kubernetes named it, else the process name; None when nothing names it.
    """
    pod = e.pod
    if pod is not None:
        base = _POD_HASH.sub("", pod.pod) or pod.pod
        return f"{pod.namespace}/{base}" + (f":{pod.container}" if pod.container else "")
    name = e.process if isinstance(e, StoredXid) else e.name
    return None if name is None or name.strip() in _GENERIC_NAMES else name.strip()


Rule = tuple[Cause, Action, list[str], Confidence]


def _rule(c: CauseInputs) -> Rule:
    code = c.event.xid
    if c.event.kind == "sxid":
        return _sxid(c)
    if code in (45, 154):
        earlier = follows(c.event, (n for n, _, _ in c.nearby))
        if earlier is not None:
            return _following(c, earlier)
        if code == 45:
            routine = (
                "XID 45 with no other XID on this GPU in the 10 s before: a job was stopped "
                "(kill, Ctrl-C) or the GPU was reset, which is routine"
            )
            return "none", "none", [routine], "medium"
        return _recovery(c)
    if code in MEMORY_CODES:
        return _memory(c)
    if code in APP_CODES:
        return _application(c)
    return _physical(c)


def _following(c: CauseInputs, p: StoredXid) -> Rule:
    e = c.event
    dt = max(0.0, (e.ts_ms - p.last_ts_ms) / 1000)
    evidence = [
        f"XID {e.xid} came {dt:.1f} s after XID {p.xid} (id {p.id}) on this GPU: it follows "
        f"that one, so judge XID {p.xid}"
    ]
    action: Action = "none"
    if e.xid == 154:
        wanted = recovery_action(e.message)
        evidence.append(f"the driver now wants recovery action {wanted!r}")
        action = code_action(154, e.action, e.message)
    return "follows_other_xid", action, evidence, "high"


def _recovery(c: CauseInputs) -> Rule:
    wanted = recovery_action(c.event.message)
    action = code_action(154, c.event.action, c.event.message)
    if wanted is None:
        text = f"XID 154 names a recovery action xidwatch does not read: {c.event.message[:200]}"
        return "unknown", action, [text], "low"
    text = f"XID 154: the driver now wants recovery action {wanted!r}"
    return "unknown" if action != "none" else "none", action, [text], "high"


def _sxid(c: CauseInputs) -> Rule:
    text = (
        f"NVSwitch SXid {c.event.xid}: the switch fabric, not a GPU; check Fabric Manager's "
        "log and run diagnostics on the fabric if it repeats"
    )
    return "bus_or_link", "run_diagnostics", [text], "medium"


def _memory(c: CauseInputs) -> Rule:
    e = c.event
    same = [n for n, _, same in c.nearby if same and n.xid in MEMORY_CODES and n.id != e.id]
    codes = {n.xid for n in same} | {e.xid}
    evidence = [f"XID {e.xid} reports GPU memory trouble"]
    evidence += [
        f"XID {n.xid} (id {n.id}) {abs(off):.0f} s {'before' if off < 0 else 'after'} on this GPU"
        for n, off, is_same in c.nearby
        if is_same and n in same
    ][:4]
    evidence += _ecc_evidence(c)
    action: Action
    if 64 in codes:
        action = "replace_gpu"
        evidence.insert(0, "a row remap failed (XID 64): the GPU is out of spare memory rows")
    elif e.xid in (48, 63, 95, 140):
        action = "reset_gpu"
        if 63 in codes:
            evidence.insert(0, "a row remap is pending (XID 63): a GPU reset activates it")
    elif e.xid == 94:
        action = "restart_application"
        evidence.append("contained: only the application that touched the memory is affected")
    else:
        action = code_action(e.xid, e.action, e.message)
    confidence: Confidence = "high" if e.xid != 92 or len(codes) > 1 else "medium"
    return "gpu_memory", action, evidence, confidence


def _ecc_evidence(c: CauseInputs) -> list[str]:
    out = []
    for metric, what in (
        ("ecc_uncorrected_volatile", "uncorrectable"),
        ("ecc_corrected_volatile", "corrected"),
    ):
        sides = [x for x in (_side(c, metric, "before"), _side(c, metric, "after")) if x]
        sides = [s for s in sides if s.min is not None and s.max is not None]
        if sides and sides[-1].max is not None and sides[0].min is not None:
            lo, hi = sides[0].min, sides[-1].max
            if hi > lo:
                out.append(f"{what} ECC errors went from {lo:.0f} to {hi:.0f} around it")
    return out


@dataclass(frozen=True, slots=True)
class _Crash:
    """One failure of a workload: the app XIDs of one pid (or nearby ones of no pid)."""

    gpu: str
    workload: str | None
    pids: frozenset[int]
    address: str | None
    ts_ms: int
    count: int
    codes: frozenset[int]


def _crashes(events: Iterable[StoredXid]) -> list[_Crash]:
    out: list[_Crash] = []
    for e in sorted(events, key=lambda x: (x.ts_ms, x.id)):
        gpu = e.pci_bus_id or "?"
        m = _ADDRESS.search(e.message)
        address = m[1].lower().replace("_", "") if m else None
        last = out[-1] if out else None
        same_pid = last is not None and e.pid is not None and e.pid in last.pids
        close = last is not None and e.pid is None and e.ts_ms - last.ts_ms <= CRASH_GAP_MS
        if last is not None and last.gpu == gpu and (same_pid or close):
            out[-1] = _Crash(
                gpu,
                last.workload or workload(e),
                last.pids,
                last.address or address,
                e.ts_ms,
                last.count + e.count,
                last.codes | {e.xid},
            )
            continue
        pids = frozenset({e.pid} if e.pid is not None else ())
        out.append(_Crash(gpu, workload(e), pids, address, e.ts_ms, e.count, frozenset({e.xid})))
    return out


def _application(c: CauseInputs) -> Rule:
    e, here = c.event, c.event.pci_bus_id or "?"
    app = [n for n, _, _ in c.nearby if n.kind == "xid" and n.xid in APP_CODES]
    crashes = _crashes([*app, e] if all(n.id != e.id for n in app) else app)
    mine = [k for k in crashes if k.gpu == here]
    others = [k for k in crashes if k.gpu != here]
    named = {k.workload for k in mine if k.workload is not None}
    # Only exceptions and faults (13, 31) speak for the GPU: a 43 alone is the application's
    # channel being stopped, and the GPU stays healthy.
    faulted = {k.workload for k in mine if k.workload is not None and k.codes & {13, 31}}
    evidence = _process_evidence(c)
    this = workload(e)

    spread = sorted({k.gpu for k in others if this is not None and k.workload == this})
    if spread:
        text = (
            f"the same workload ({this}) also failed on {len(spread)} other GPU(s) "
            f"({', '.join(spread)}): it is the application, not a GPU"
        )
        return "application", "restart_application", [text, *evidence], "high"
    if len(faulted) >= 2:
        clean = _clean_elsewhere(c, faulted, here)
        listed = ", ".join(sorted(faulted))
        text = f"{len(faulted)} different workloads faulted on this GPU ({listed})"
        if clean:
            text += f", while {', '.join(clean)} ran clean on other GPUs"
        text += ": the GPU is the common factor, so test it"
        return "gpu_hardware", "run_diagnostics", [text, *evidence], "high" if clean else "medium"
    if len(mine) >= 2 and named:
        tally = Counter(k.workload for k in mine if k.workload)
        # This event's own workload when it crash-loops, else the one that failed most.
        name, times = tally.most_common(1)[0]
        if this is not None and tally[this] >= 2:
            name, times = this, tally[this]
        rest = sorted(set(tally) - {name})
        own = [k for k in mine if k.workload == name]
        text = f"the same workload ({name}) failed {times} times on this GPU"
        pids = sorted({p for k in own for p in k.pids})
        if len(pids) > 1:
            text += f" (pids {', '.join(map(str, pids[:6]))}: restarted each time)"
        if len(addresses := {k.address for k in own if k.address}) == 1:
            text += f", faulting at the same address {next(iter(addresses))}"
        text += ": a crash loop in the application, not the GPU"
        if rest:
            text += f"; {', '.join(rest)} failed here too, but only one workload faulted"
        return "application", "restart_application", [text, *evidence], "high"
    if others and not named:
        gpus = sorted({k.gpu for k in others})
        text = (
            f"application XIDs also on {len(gpus)} other GPU(s) ({', '.join(gpus)}) in the "
            "window: spread over GPUs, they point at the job, not a GPU"
        )
        return "application", "restart_application", [text, *evidence], "medium"
    if len(mine) >= REPEATS_UNNAMED:
        text = (
            f"{len(mine)} failures on this GPU and none on the others, and the kernel log "
            "names no workload to tell a crash loop from a bad GPU: test the GPU"
        )
        return "gpu_hardware", "run_diagnostics", [text, *evidence], "low"
    what = f"of {this}" if this else "of a workload the log does not name"
    text = f"a single failure {what} on this GPU: most often the application"
    return "application", "restart_application", [text, *evidence], "low"


def _clean_elsewhere(c: CauseInputs, named: set[str], here: str) -> list[str]:
    """The failing workloads that also ran on other GPUs without an XID there."""
    failed = {(n.pci_bus_id, n.pid) for n, _, _ in c.nearby if n.xid in APP_CODES}
    return sorted(
        {
            w
            for p in c.workloads
            if p.pci_bus_id != here
            and (w := workload(p)) in named
            and (p.pci_bus_id, p.pid) not in failed
        }
    )


def _process_evidence(c: CauseInputs) -> list[str]:
    e = c.event
    if e.process or e.pid is not None:
        pod = f", pod {e.pod.namespace}/{e.pod.pod}" if e.pod else ""
        return [f"the XID names process {e.process or '?'} (pid {e.pid}{pod})"]
    return []


def _physical(c: CauseInputs) -> Rule:
    """Thermal, power or bus by the strongest precursor; else the code's own suspect."""
    e = c.event
    action = code_action(e.xid, e.action, e.message)
    if e.xid in OFF_THE_BUS_CODES:
        action = "reboot_node"
    # Ties go to the earlier entry: heat is the commonest precursor, then the link.
    candidates: list[tuple[Cause, tuple[int, list[str]]]] = [
        ("thermal", _thermal(c)),
        ("bus_or_link", _bus(c)),
        ("power", _power(c)),
    ]
    cause, (strength, evidence) = max(candidates, key=lambda k: k[1][0])
    if strength == 0:
        return _no_precursor(c, action)
    confidence: Confidence = "high" if strength >= 2 else "medium"
    if e.xid in OFF_THE_BUS_CODES:
        evidence.insert(0, "XID 79: the GPU fell off the bus; only a power-cycle brings it back")
    return cause, action, evidence, confidence


def _no_precursor(c: CauseInputs, action: Action) -> Rule:
    e = c.event
    mins = c.before_ms // 60_000
    temp = _side(c, "temperature", "before")
    peak = f" (temperature peaked at {temp.max:.0f} °C)" if temp and temp.max is not None else ""
    none = f"no thermal, power or PCIe/NVLink precursor in the {mins} min before{peak}"
    blind = not c.metrics or all(
        m.before is None or not m.before.samples for m in c.metrics.values()
    )
    if blind:
        none = "no telemetry from before it to look for heat, power or link trouble"
    if e.xid in LINK_CODES:
        return "bus_or_link", action, [f"XID {e.xid} is an NVLink error", none], "medium"
    if e.xid == 54:
        return "power", action, ["XID 54: the GPU's auxiliary power is not connected"], "high"
    if e.xid in OFF_THE_BUS_CODES:
        text = (
            "XID 79: the GPU fell off the bus with " + none + ": suspect the GPU itself, "
            "its PCIe slot or riser"
        )
        return "gpu_hardware", action, [text], "low" if blind else "medium"
    if action in ("reset_gpu", "reboot_node", "replace_gpu", "run_diagnostics"):
        text = f"XID {e.xid} is a GPU-side error ({e.action}) with {none}"
        return "gpu_hardware", action, [text], "low"
    return "unknown", action, [f"XID {e.xid} ({e.action}) with {none}"], "low"


def _side(c: CauseInputs, metric: str, side: str) -> MetricStats | None:
    around = c.metrics.get(metric)
    if around is None:
        return None
    return around.before if side == "before" else around.after


def _thermal(c: CauseInputs) -> tuple[int, list[str]]:
    strength, evidence = 0, []
    temp, mins = _side(c, "temperature", "before"), c.before_ms // 60_000
    slowdown = c.gpu.info.slowdown_temp_c if c.gpu else None
    shutdown = c.gpu.info.shutdown_temp_c if c.gpu else None
    if (
        temp
        and temp.max is not None
        and slowdown is not None
        and temp.max >= slowdown - TEMP_MARGIN_C
    ):
        strength += 2 if temp.max >= slowdown else 1
        where = "above" if temp.max >= slowdown else f"{slowdown - temp.max:.0f} °C below"
        text = (
            f"temperature {_movement(temp, '°C')} in the {mins} min before, peaking at "
            f"{temp.max:.0f} °C, {where} its slowdown temperature {slowdown} °C"
        )
        if shutdown is not None and temp.max >= shutdown:
            text += f" and past its shutdown temperature {shutdown} °C"
        evidence.append(text)
    throttled = _side(c, "throttle_thermal", "before")
    if throttled and throttled.avg is not None and throttled.avg >= THROTTLE_SHARE:
        strength += 1
        evidence.append(f"clocks were thermally throttled {throttled.avg:.0%} of the time before")
    clock = _side(c, "sm_clock", "before")
    if strength and clock and clock.first and clock.last and clock.last < 0.9 * clock.first:
        evidence.append(f"the SM clock fell from {clock.first:.0f} MHz to {clock.last:.0f} MHz")
    return strength, evidence


def _bus(c: CauseInputs) -> tuple[int, list[str]]:
    strength, evidence = 0, []
    for metric, what in (("pcie_replays", "PCIe replay"), ("nvlink_errors", "NVLink error")):
        before, after = _side(c, metric, "before"), _side(c, metric, "after")
        if before is None or before.min is None or before.max is None:
            continue
        grew = before.max - before.min
        if grew <= 0:
            continue
        text = (
            f"the {what} counter rose by {grew:.0f} in the {c.before_ms // 60_000} min before "
            f"(from {before.min:.0f} to {before.max:.0f})"
        )
        if after is not None and after.max is not None and after.max > before.max:
            text += f" and by {after.max - before.max:.0f} more after"
        strength = max(strength, 2 if grew >= 10 else 1)
        evidence.append(text)
    return strength, evidence


def _power(c: CauseInputs) -> tuple[int, list[str]]:
    """A power brake (hardware slowdown with no heat behind it) or power over the limit.

    The power cap alone is not a precursor: a fully loaded board sits at its cap.
    """
    strength, evidence = 0, []
    slowdown = _side(c, "throttle_hw_slowdown", "before")
    thermal = _side(c, "throttle_thermal", "before")
    hot = thermal is not None and thermal.avg is not None and thermal.avg >= THROTTLE_SHARE
    if slowdown and slowdown.avg is not None and slowdown.avg >= THROTTLE_SHARE and not hot:
        strength += 2
        evidence.append(
            f"hardware slowdown was asserted {slowdown.avg:.0%} of the time before with no "
            "thermal throttling: the power brake (PSU or power feed)"
        )
    power, limit = _side(c, "power", "before"), c.gpu.info.power_limit_default_w if c.gpu else None
    if power and power.max is not None and limit and power.max > limit * POWER_OVER_LIMIT:
        strength += 1
        evidence.append(f"power peaked at {power.max:.0f} W, over its {limit:.0f} W limit")
    return strength, evidence


def _context(c: CauseInputs) -> list[str]:
    """What happened to the GPU after the event, and what telemetry is missing."""
    if c.gpu is None:
        return ["NVML never listed this GPU, so there is no telemetry: the XIDs are the evidence"]
    out = []
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
    if s.first is None or s.last is None or s.min is None or s.max is None:
        return "was measured"
    if s.max - s.min >= 2 and (s.points == 1 or abs(s.last - s.first) < (s.max - s.min) / 2):
        return f"ranged from {s.min:.0f} {unit} to {s.max:.0f} {unit}"
    if s.last - s.first >= 2:
        return f"rose from {s.first:.0f} {unit} to {s.last:.0f} {unit}"
    if s.first - s.last >= 2:
        return f"fell from {s.first:.0f} {unit} to {s.last:.0f} {unit}"
    return f"held at about {s.avg if s.avg is not None else s.last:.0f} {unit}"
