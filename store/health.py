"""GPU health from stored facts: one verdict per GPU and one per node, with the evidence.

Each thing wrong with a GPU is an *issue*: a cause, the one action it needs, how sure,
and evidence sentences with the numbers. XIDs become issues through the same judgement
``correlate_xid`` uses (:func:`store.correlation.judge_xid`); readings (temperature against
the GPU's own slowdown and shutdown limits, power, ECC, remapped rows) and liveness (lost,
stale) add their own. The verdict is the most disruptive issue; findings are every issue
and context line, as evidence, and carry no action of their own, so they cannot
contradict it. The node's verdict is the most disruptive action any GPU needs.

A fatal XID counts until a reboot, a GPU reset or an acknowledgement clears it, whatever
window was asked for; the verdict says which cleared it.

Score: 100 with no warning or critical finding; each warning costs 15 and each critical 50,
and a GPU with a critical finding never scores above 50 nor one with only warnings below 51,
so the score sorts GPUs the way their status does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import aiosqlite

from store.acks import Ack, list_acks
from store.actions import (
    FATAL_LABELS,
    Action,
    Cause,
    Confidence,
    action_rank,
    steps_for,
)
from store.causes import CauseInputs, Judgement, likely_cause
from store.correlation import gpu_of, judge_context, judge_xid
from store.coverage import Coverage, store_coverage
from store.errors import InvalidQueryError
from store.inventory import latest_samples, select_gpus
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import GpuSample, GpuStateEvent, InventoryGpu, StoredXid
from store.retention import RetentionPolicy
from store.telemetry import HW_POWER_BRAKE, HW_THERMAL, SW_THERMAL
from store.windows import format_ts
from store.xid_workflows import Clearance, label, representatives, xid_state

__all__ = [
    "Finding",
    "GpuHealth",
    "HealthReport",
    "Issue",
    "NodeFacts",
    "NodeVerdict",
    "Severity",
    "Status",
    "Verdict",
    "action_status",
    "assess_gpu",
    "current_boot_id",
    "events_to_judge",
    "health_report",
    "judge_from_xids",
    "node_health",
    "node_verdict",
]

Status = Literal["ok", "warning", "critical"]
Severity = Literal["info", "warning", "critical"]
_SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
_CONFIDENCE_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}

TEMP_WARNING_MARGIN_C = 5  # below the GPU's own slowdown temperature
POWER_OVER_LIMIT = 1.05  # drawing this share of the enforced limit means it is not enforced
STALE_AFTER_MS = 5 * 60_000
MAX_HEALTH_XIDS = 20_000  # rows; floods fold into bursts, so this is a lot of events


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of evidence about a GPU: how bad, a stable code, what, and the XIDs behind it.

    ``xid_ids`` are the stored events behind it (for correlate_xid).
    """

    severity: Severity
    code: str
    message: str
    xid_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Issue:
    """Something wrong with a GPU, judged: its cause, the one action it needs on its own."""

    code: str
    message: str
    judgement: Judgement
    xid_ids: tuple[int, ...] = ()
    ts_ms: int = 0

    @property
    def severity(self) -> Severity:
        return _severity(self.judgement.action)


def _reading(code: str, why: str, cause: Cause, action: Action, confidence: Confidence) -> Issue:
    """An issue a reading (or its absence) shows, its one sentence as the evidence."""
    return Issue(code, why, Judgement(cause, action, confidence, (why,)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What is wrong with a GPU and the one thing to do: the most disruptive issue's.

    ``because`` says why in a sentence or two with the numbers; ``steps`` are the ordered
    concrete steps; ``cleared`` says what cleared an earlier fatal state (reboot, reset,
    ack), when one did.
    """

    cause: Cause
    action: Action
    confidence: Confidence
    because: str
    steps: tuple[str, ...]
    xid_ids: tuple[int, ...] = ()
    cleared: Literal["reboot", "reset", "ack"] | None = None


@dataclass(frozen=True, slots=True)
class NodeVerdict:
    """The node's one action: the most disruptive any GPU needs, and the GPUs that drive it."""

    action: Action
    cause: Cause
    because: str
    gpus: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node saw, shared by every GPU's assessment.

    ``xids`` are the node's XIDs in the window plus fatal ones from before it (each GPU's
    own and its neighbours'); ``judged`` the judgement of each XID to be judged, by id;
    ``current_boot_id`` the node's newest boot, which makes events from earlier boots
    historical.
    """

    now_ms: int
    xids: tuple[StoredXid, ...] = ()
    gpu_events: tuple[GpuStateEvent, ...] = ()
    acks: tuple[Ack, ...] = ()
    current_boot_id: str | None = None
    judged: Mapping[int, Judgement] = field(default_factory=dict)
    node: str = ""


@dataclass(frozen=True, slots=True)
class GpuHealth:
    """A GPU's verdict, status (from the verdict's action), score 0-100 and evidence.

    ``gpu`` is None for a GPU known only from XID lines (NVML never listed it); ``sample``
    is None when there is no current reading (never sampled, or the GPU is lost).
    """

    pci_bus_id: str
    gpu: InventoryGpu | None
    sample: GpuSample | None
    status: Status
    score: int
    verdict: Verdict
    findings: tuple[Finding, ...]


def assess_gpu(
    pci_bus_id: str,
    facts: NodeFacts,
    *,
    gpu: InventoryGpu | None = None,
    sample: GpuSample | None = None,
    stale_after_ms: int = STALE_AFTER_MS,
) -> GpuHealth:
    """Judge the GPU at ``pci_bus_id`` from ``facts``, its inventory entry and latest sample."""
    own = [x for x in facts.xids if x.pci_bus_id == pci_bus_id and x.kind == "xid"]
    states = [e for e in facts.gpu_events if gpu is not None and e.uuid == gpu.info.uuid]
    acks = [a for a in facts.acks if a.pci_bus_id == pci_bus_id]
    state = xid_state(
        own,
        acks=acks,
        recovered_ms=[e.ts_ms for e in states if e.state == "recovered"],
        current_boot_id=facts.current_boot_id,
    )
    lost = _lost_since(gpu, sample)
    issues, notes = _liveness(gpu, sample, acks, facts, lost, stale_after_ms)
    if lost is None and sample is not None:
        issues += _readings(gpu, sample)
    for code, es in representatives(state.active).items():
        judged = facts.judged.get(es[-1].id)
        if judged is not None:
            issues.append(_xid_issue(code, es, judged))
    cleared = [
        Finding("info", f"cleared_by_{why.by}", f"{label(es)}: cleared by {why.text}", _ids(es))
        for why, es in state.cleared
    ]
    notes += _recoveries(states)
    verdict = _verdict(issues, state.cleared, pci_bus_id, facts.node)
    findings = [Finding(i.severity, i.code, i.message, i.xid_ids) for i in issues]
    findings = sorted(findings, key=lambda f: -_SEVERITY_RANK[f.severity]) + notes + cleared
    status = action_status(verdict.action)
    shown = None if lost is not None else sample
    return GpuHealth(
        pci_bus_id, gpu, shown, status, _score(findings, status), verdict, tuple(findings)
    )


def node_verdict(gpus: Sequence[GpuHealth]) -> NodeVerdict:
    """The most disruptive action any GPU needs, with the GPUs that need it."""
    if not gpus:
        return NodeVerdict("none", "none", "no GPUs known on this node", ())
    worst = max(action_rank(h.verdict.action) for h in gpus)
    driving = [h for h in gpus if action_rank(h.verdict.action) == worst]
    first = driving[0].verdict
    if first.action == "none":
        return NodeVerdict("none", "none", f"all {len(gpus)} GPU(s) need nothing", ())
    names = ", ".join(_gpu_name(h) for h in driving)
    return NodeVerdict(
        first.action,
        first.cause,
        f"{names} {'needs' if len(driving) == 1 else 'need'} {first.action} ({first.cause})",
        tuple(h.pci_bus_id for h in driving),
    )


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What ``get_gpu_health`` and ``xidwatch health`` answer: every GPU worst first, the
    node's verdict, and what time the store covers."""

    node: str
    since_ms: int
    gpus: tuple[GpuHealth, ...]
    node_verdict: NodeVerdict
    coverage: Coverage


async def health_report(
    conn: aiosqlite.Connection,
    *,
    since_ms: int,
    now_ms: int,
    node: str = "",
    selectors: Sequence[str] = (),
    retention: RetentionPolicy | None = None,
) -> HealthReport:
    """The health of the GPUs ``selectors`` name (all by default), worst first."""
    results = await node_health(
        conn, since_ms=since_ms, now_ms=now_ms, node=node, retention=retention
    )
    if selectors:
        chosen = await select_gpus(conn, selectors)
        wanted = {g.info.pci_bus_id for _, g in chosen.gpus} | set(chosen.xid_only)
        results = [h for h in results if h.pci_bus_id in wanted]
    ranked = sorted(results, key=lambda h: (-action_rank(h.verdict.action), h.score, h.pci_bus_id))
    coverage = await store_coverage(conn, since_ms=since_ms, until_ms=now_ms)
    return HealthReport(node, since_ms, tuple(ranked), node_verdict(ranked), coverage)


async def node_health(
    conn: aiosqlite.Connection,
    *,
    since_ms: int,
    now_ms: int,
    node: str = "",
    stale_after_ms: int = STALE_AFTER_MS,
    retention: RetentionPolicy | None = None,
) -> list[GpuHealth]:
    """Every GPU's health from XIDs since ``since_ms`` (and fatal ones still standing)."""
    if since_ms >= now_ms:
        raise InvalidQueryError(
            f"since ({format_ts(since_ms)}) is not before now: give a window like 24h"
        )
    latest = await latest_samples(conn)
    boot = await current_boot_id(conn)
    xids = await _window_xids(conn, XidFilter(since_ms=since_ms, until_ms=now_ms, kind="xid"))
    seen = {x.id for x in xids}
    xids += [x for x in await _standing_fatal(conn, since_ms, boot) if x.id not in seen]
    earliest = min((x.ts_ms for x in xids), default=since_ms)
    facts = NodeFacts(
        now_ms=now_ms,
        xids=tuple(xids),
        gpu_events=tuple(await _gpu_events(conn, min(earliest, since_ms))),
        acks=tuple(await list_acks(conn, since_ms=min(earliest, since_ms))),
        current_boot_id=boot,
        node=node,
    )
    judged = await _judge(
        conn, facts, [i.gpu for i in latest], now_ms, retention or RetentionPolicy()
    )
    facts = replace(facts, judged=judged)
    out = [
        assess_gpu(
            item.gpu.info.pci_bus_id,
            facts,
            gpu=item.gpu,
            sample=item.sample,
            stale_after_ms=stale_after_ms,
        )
        for item in latest
    ]
    known = {item.gpu.info.pci_bus_id for item in latest}
    unknown = sorted(
        {
            x.pci_bus_id
            for x in xids
            if x.kind == "xid" and x.pci_bus_id and x.pci_bus_id not in known
        }
    )
    return out + [assess_gpu(pci, facts) for pci in unknown]


def events_to_judge(facts: NodeFacts, gpus: Sequence[InventoryGpu]) -> list[StoredXid]:
    """The last active XID of each code on each GPU, and a lost GPU as the 79 it amounts to."""
    out: list[StoredXid] = []
    by_gpu: dict[str, list[StoredXid]] = {}
    for x in facts.xids:
        if x.kind == "xid" and x.pci_bus_id:
            by_gpu.setdefault(x.pci_bus_id, []).append(x)
    uuids = {g.info.pci_bus_id: g.info.uuid for g in gpus}
    for pci, own in by_gpu.items():
        recovered = [
            e.ts_ms for e in facts.gpu_events if e.state == "recovered" and e.uuid == uuids.get(pci)
        ]
        state = xid_state(
            own,
            acks=[a for a in facts.acks if a.pci_bus_id == pci],
            recovered_ms=recovered,
            current_boot_id=facts.current_boot_id,
        )
        out += [es[-1] for es in representatives(state.active).values()]
    out += [_lost_event(g, lost, facts.node) for g in gpus if (lost := g.lost_since_ms) is not None]
    return out


def judge_from_xids(facts: NodeFacts, gpus: Sequence[InventoryGpu]) -> dict[int, Judgement]:
    """Judgements from the XIDs in ``facts`` alone, without telemetry: for callers with no
    store (fixtures, the gateway benchmark's fake nodes). :func:`node_health` reads the
    telemetry around each XID too."""
    by_pci = {g.info.pci_bus_id: g for g in gpus}
    out: dict[int, Judgement] = {}
    for e in events_to_judge(facts, gpus):
        nearby = tuple(
            (n, (n.ts_ms - e.ts_ms) / 1000, n.kind == "xid" and n.pci_bus_id == e.pci_bus_id)
            for n in facts.xids
            if n.id != e.id
        )
        gpu = by_pci.get(e.pci_bus_id or "")
        out[e.id] = likely_cause(CauseInputs(e, gpu, nearby=nearby))
    return out


async def _judge(
    conn: aiosqlite.Connection,
    facts: NodeFacts,
    gpus: Sequence[InventoryGpu],
    now_ms: int,
    retention: RetentionPolicy,
) -> dict[int, Judgement]:
    events = events_to_judge(facts, gpus)
    if not events:
        return {}
    times = [e.ts_ms for e in events]
    context = await judge_context(conn, min(times), max(times), now_ms=now_ms)
    out: dict[int, Judgement] = {}
    for e in events:
        found = await gpu_of(conn, e)
        out[e.id] = await judge_xid(
            conn, e, found=found, now_ms=now_ms, retention=retention, context=context
        )
    return out


def _lost_id(gpu: InventoryGpu) -> int:
    """The id of the XID 79 a lost GPU amounts to: negative, so never a stored event's."""
    return -gpu.info.index - 1


def _lost_event(gpu: InventoryGpu, lost_ms: int, node: str) -> StoredXid:
    """A GPU NVML reports lost, as the XID 79 it amounts to (never stored)."""
    return StoredXid(
        id=_lost_id(gpu),
        ts_ms=lost_ms,
        last_ts_ms=lost_ms,
        received_ms=lost_ms,
        count=1,
        burst=False,
        node=node,
        kind="xid",
        xid=79,
        pci_bus_id=gpu.info.pci_bus_id,
        gpu_uuid=gpu.info.uuid,
        mig_gi=None,
        mig_ci=None,
        pid=None,
        process=None,
        message="the GPU stopped answering NVML (GPU is lost)",
        raw="",
        source="nvml",
        action="RESTART_BM",
        boot_id=None,
        seq=None,
    )


async def current_boot_id(conn: aiosqlite.Connection) -> str | None:
    """The node's newest boot: from the kmsg watermark written last or the newest XID.

    The watermark moves with every kernel record read, so a reboot shows even before the
    new boot's first XID.
    """
    candidates: list[tuple[int, str]] = []
    sql = (
        "SELECT updated_ms, substr(source_key, 6) FROM watermarks "
        "WHERE source_key LIKE 'kmsg:%' ORDER BY updated_ms DESC LIMIT 1"
    )
    async with conn.execute(sql) as cur:
        candidates += [(int(ts), str(boot)) async for ts, boot in cur]
    sql = (
        "SELECT ts_ms, boot_id FROM xid_events "
        "WHERE boot_id IS NOT NULL ORDER BY ts_ms DESC, id DESC LIMIT 1"
    )
    async with conn.execute(sql) as cur:
        candidates += [(int(ts), str(boot)) async for ts, boot in cur]
    return max(candidates)[1] if candidates else None


async def _window_xids(conn: aiosqlite.Connection, filters: XidFilter) -> list[StoredXid]:
    out: list[StoredXid] = []
    cursor = None
    while len(out) < MAX_HEALTH_XIDS:
        page = await list_xids(conn, filters, limit=MAX_PAGE, cursor=cursor)
        out += page.events
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return out


async def _standing_fatal(
    conn: aiosqlite.Connection, since_ms: int, boot: str | None
) -> list[StoredXid]:
    """Fatal XIDs of this boot from before the window: they stand until cleared."""
    actions = sorted(FATAL_LABELS | {"XID_154"})
    filters = XidFilter(since_ms=0, until_ms=since_ms, kind="xid", actions=actions)
    earlier = await _window_xids(conn, filters)
    # Only this boot's: a replayed capture's events (no boot id) say nothing about now.
    return [e for e in earlier if boot is not None and e.boot_id == boot]


async def _gpu_events(conn: aiosqlite.Connection, since_ms: int) -> list[GpuStateEvent]:
    sql = (
        "SELECT g.uuid, e.ts_ms, e.state, e.detail FROM gpu_events e JOIN gpus g ON g.id = e.gpu "
        "WHERE e.ts_ms >= ? ORDER BY e.ts_ms, e.id"
    )
    async with conn.execute(sql, (since_ms,)) as cur:
        return [GpuStateEvent(u, int(ts), state, detail) async for u, ts, state, detail in cur]


def _xid_issue(code: int, es: Sequence[StoredXid], j: Judgement) -> Issue:
    message = f"{label(es)}: {j.evidence[0]}" if j.evidence else label(es)
    return Issue(f"xid_{code}", message, j, _ids(es), es[-1].ts_ms)


def _verdict(
    issues: Sequence[Issue],
    cleared: Sequence[tuple[Clearance, Sequence[StoredXid]]],
    pci: str,
    node: str,
) -> Verdict:
    by = cleared[-1][0].by if cleared else None
    if not issues or all(i.judgement.action == "none" for i in issues):
        because = "no XIDs that need anything, and readings within the GPU's own limits"
        if cleared:
            why, es = cleared[-1]
            because = f"{label(es)} was cleared by {why.text}"
        elif issues:
            evidence = issues[-1].judgement.evidence
            because = evidence[0] if evidence else issues[-1].message
        return Verdict("none", "none", "high", because, (), (), by)
    worst = max(
        issues,
        # Ties go to an issue's own cause over one that follows another XID, then to the
        # surer, then to the newer.
        key=lambda i: (
            action_rank(i.judgement.action),
            i.judgement.cause != "follows_other_xid",
            _CONFIDENCE_RANK[i.judgement.confidence],
            i.ts_ms,
        ),
    )
    # One or two sentences: a second only when the first is short.
    j = worst.judgement
    first = j.evidence[0] if j.evidence else worst.message
    because = "; ".join(j.evidence[:2]) if len(first) < 120 else first
    return Verdict(
        j.cause,
        j.action,
        j.confidence,
        because,
        tuple(steps_for(j.action, j.cause, gpu=pci, node=node)),
        worst.xid_ids,
        by,
    )


def _severity(action: Action) -> Severity:
    """How bad a finding is, by the action it needs: taking the GPU out of service is critical."""
    if action_rank(action) >= action_rank("run_diagnostics"):
        return "critical"
    return "warning" if action != "none" else "info"


def action_status(action: Action) -> Status:
    """A GPU's status by its verdict's action (also for a verdict read back from Prometheus)."""
    severity = _severity(action)
    return "ok" if severity == "info" else severity


def _score(findings: Sequence[Finding], status: Status) -> int:
    critical = sum(f.severity == "critical" for f in findings) or int(status == "critical")
    warning = sum(f.severity == "warning" for f in findings) or int(status == "warning")
    score = 100 - 50 * critical - 15 * warning
    if status == "critical":
        return max(0, min(score, 50))
    return max(51, min(score, 85)) if status == "warning" else 100


def _gpu_name(h: GpuHealth) -> str:
    return f"GPU {h.gpu.info.index} ({h.pci_bus_id})" if h.gpu else f"GPU {h.pci_bus_id}"


def _ids(es: Sequence[StoredXid]) -> tuple[int, ...]:
    return tuple(e.id for e in es)


def _lost_since(gpu: InventoryGpu | None, sample: GpuSample | None) -> int | None:
    lost = gpu.lost_since_ms if gpu is not None else None
    if lost is not None and (sample is None or sample.ts_ms <= lost):
        return lost
    return None


def _liveness(
    gpu: InventoryGpu | None,
    sample: GpuSample | None,
    acks: Sequence[Ack],
    facts: NodeFacts,
    lost: int | None,
    stale_after_ms: int,
) -> tuple[list[Issue], list[Finding]]:
    if gpu is None:
        text = (
            "known only from kernel XID lines by its PCI bus id: NVML never listed it "
            "(it fell off the bus before xidwatch started, or NVML sampling is off)"
        )
        return [], [Finding("info", "not_in_inventory", text)]
    if lost is not None:
        since = (
            f"the GPU stopped answering NVML at {format_ts(lost)} (lost, e.g. fallen off the bus)"
        )
        ack = next((a for a in sorted(acks, key=lambda a: a.ts_ms) if a.ts_ms >= lost), None)
        if ack is not None:
            since += f"; acknowledged by {ack.who} at {format_ts(ack.ts_ms)}: {ack.reason}"
        has_79 = any(
            x.xid == 79 and x.pci_bus_id == gpu.info.pci_bus_id and abs(x.ts_ms - lost) < 600_000
            for x in facts.xids
        )
        j = facts.judged.get(_lost_id(gpu))
        if has_79 or j is None:
            return [], [Finding("critical", "gpu_lost", since)]
        judged = replace(j, evidence=(since, *j.evidence[1:]))  # NVML's word, not a kernel line
        return [Issue("gpu_lost", since, judged, (), lost)], []
    if sample is None:
        why = "never sampled: is NVML sampling on?"
        return [_reading("no_samples", why, "unknown", "watch", "low")], []
    age_ms = facts.now_ms - sample.ts_ms
    if age_ms > stale_after_ms:
        why = f"the last sample is {age_ms / 60_000:.0f} min old: is the xidwatch daemon running?"
        return [_reading("stale", why, "unknown", "watch", "low")], []
    return [], []


def _recoveries(states: Sequence[GpuStateEvent]) -> list[Finding]:
    out = []
    lost_at: int | None = None
    for e in states:
        if e.state == "lost":
            lost_at = e.ts_ms
        else:
            since = f"stopped answering NVML at {format_ts(lost_at)} and " if lost_at else ""
            text = f"{since}answered again at {format_ts(e.ts_ms)} (a GPU reset or reboot)"
            out.append(Finding("info", "gpu_recovered", text.capitalize()))
            lost_at = None
    return out


def _readings(gpu: InventoryGpu | None, s: GpuSample) -> list[Issue]:
    out = _temperature(gpu, s)
    limit = s.power_limit_w or (gpu.info.power_limit_default_w if gpu else None)
    if s.power_w is not None and limit and s.power_w > limit * POWER_OVER_LIMIT:
        why = f"drawing {s.power_w:.0f} W, over its {limit:.0f} W power limit"
        out.append(_reading("power_over_limit", why, "power", "watch", "medium"))
    reasons = s.clocks_event_reasons or 0
    if reasons & (SW_THERMAL | HW_THERMAL) and not out:
        why = "clocks are held back by thermal slowdown"
        out.append(_reading("thermal_throttle", why, "thermal", "watch", "medium"))
    if reasons & HW_POWER_BRAKE:
        why = "the hardware power brake is asserted: the board was told its power feed failed"
        out.append(_reading("power_brake", why, "power", "watch", "medium"))
    if s.ecc_uncorrected_volatile:
        why = f"{s.ecc_uncorrected_volatile} uncorrectable ECC error(s) since the driver loaded"
        out.append(_reading("ecc_uncorrected", why, "gpu_memory", "reset_gpu", "high"))
    if s.remap_failure:
        why = "a row remap failed: the GPU has no spare memory rows left"
        out.append(_reading("remap_failure", why, "gpu_memory", "replace_gpu", "high"))
    elif s.remap_pending:
        why = "a row remap is pending: a GPU reset activates it"
        out.append(_reading("remap_pending", why, "gpu_memory", "reset_gpu", "high"))
    return out


def _temperature(gpu: InventoryGpu | None, s: GpuSample) -> list[Issue]:
    """Temperature against the GPU's own slowdown and shutdown limits."""
    t = s.temperature_c
    slowdown = gpu.info.slowdown_temp_c if gpu else None
    shutdown = gpu.info.shutdown_temp_c if gpu else None
    if t is None or (slowdown is None and shutdown is None):
        return []
    limits = ", ".join(
        f"{name} {v} °C" for name, v in (("slowdown", slowdown), ("shutdown", shutdown)) if v
    )
    if shutdown is not None and t >= shutdown:
        why = f"{t} °C is past its shutdown temperature ({limits}): it may power off any moment"
        return [_reading("temperature_shutdown", why, "thermal", "run_diagnostics", "high")]
    if slowdown is not None and t >= slowdown:
        why = f"{t} °C is at or past its slowdown temperature ({limits}): clocks are cut"
        return [_reading("temperature_slowdown", why, "thermal", "watch", "high")]
    near = slowdown if slowdown is not None else shutdown
    if near is not None and t >= near - TEMP_WARNING_MARGIN_C:
        why = f"{t} °C is within {near - t} °C of its limits ({limits})"
        return [_reading("temperature_near_limit", why, "thermal", "watch", "medium")]
    return []
