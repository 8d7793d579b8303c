"""GPU health from stored facts: latest sample, the GPU's own limits, XIDs and what cleared them.

:func:`assess_gpu` is pure (testable without SQLite); :func:`node_health` gathers its inputs
from the store for every GPU, including GPUs known only by the PCI bus id of their XIDs.
Thresholds come from each GPU's own slowdown and shutdown temperatures and power limit,
never from a constant for all models; XIDs are judged by NVIDIA's workflows
(:mod:`store.xid_workflows`), so one XID 79 outranks a hundred XID 13s spread over a job.

Score: 100 with no warning or critical finding; each warning costs 15 and each critical 50,
and a GPU with a critical finding never scores above 50 nor one with only warnings below 51,
so the score sorts GPUs the way their status does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import aiosqlite

from store.acks import Ack, list_acks
from store.errors import InvalidQueryError
from store.inventory import latest_samples
from store.metrics import HW_POWER_BRAKE, HW_SLOWDOWN, HW_THERMAL, SW_THERMAL
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import GpuSample, GpuStateEvent, InventoryGpu, StoredXid
from store.windows import format_ts
from store.xid_workflows import Finding, Severity, xid_findings

__all__ = [
    "Finding",
    "GpuHealth",
    "NodeFacts",
    "Severity",
    "Status",
    "assess_gpu",
    "current_boot_id",
    "node_health",
]

Status = Literal["ok", "warning", "critical"]
_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

TEMP_WARNING_MARGIN_C = 5  # below the GPU's own slowdown (or shutdown) temperature
POWER_OVER_LIMIT = 1.05  # drawing this share of the enforced limit means it is not enforced
STALE_AFTER_MS = 5 * 60_000
MAX_HEALTH_XIDS = 20_000  # rows; floods fold into bursts, so this is a lot of events
_COOLING = "check cooling and airflow; lower the load until it cools"
_POWER_FEED = "check the PSU and the node's power feed"


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node saw, shared by every GPU's assessment.

    ``xids`` are all the node's XIDs in the window (each GPU's own and its neighbours', so
    spread can be told from repeats); ``current_boot_id`` is the node's newest boot, which
    makes events from earlier boots historical.
    """

    now_ms: int
    xids: tuple[StoredXid, ...] = ()
    gpu_events: tuple[GpuStateEvent, ...] = ()
    acks: tuple[Ack, ...] = ()
    current_boot_id: str | None = None


@dataclass(frozen=True, slots=True)
class GpuHealth:
    """A GPU's status (its worst finding), score 0-100, and every finding, worst first.

    ``gpu`` is None for a GPU known only from XID lines (NVML never listed it).
    """

    pci_bus_id: str
    gpu: InventoryGpu | None
    sample: GpuSample | None
    status: Status
    score: int
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
    own = [x for x in facts.xids if x.pci_bus_id == pci_bus_id]
    others = [x for x in facts.xids if x.pci_bus_id is not None and x.pci_bus_id != pci_bus_id]
    states = [e for e in facts.gpu_events if gpu is not None and e.uuid == gpu.info.uuid]
    acks = sorted((a for a in facts.acks if a.pci_bus_id == pci_bus_id), key=lambda a: a.ts_ms)
    findings = [
        *_liveness(gpu, sample, acks, facts.now_ms, stale_after_ms),
        *_recoveries(states),
        *(_readings(gpu, sample) if sample is not None else ()),
        *xid_findings(
            own,
            others,
            acks=acks,
            recovered_ms=[e.ts_ms for e in states if e.state == "recovered"],
            current_boot_id=facts.current_boot_id,
        ),
    ]
    findings.sort(key=lambda f: -_RANK[f.severity])
    seen = {f.severity for f in findings}
    status: Status = "critical" if "critical" in seen else "warning" if "warning" in seen else "ok"
    return GpuHealth(pci_bus_id, gpu, sample, status, _score(findings), tuple(findings))


async def node_health(
    conn: aiosqlite.Connection,
    *,
    since_ms: int,
    now_ms: int,
    stale_after_ms: int = STALE_AFTER_MS,
) -> list[GpuHealth]:
    """Every GPU's health from XIDs since ``since_ms``: sampled GPUs by index, then XID-only."""
    if since_ms >= now_ms:
        raise InvalidQueryError("'since' must be before now: give a window like 24h")
    latest = await latest_samples(conn)
    xids = await _window_xids(conn, since_ms, now_ms)
    facts = NodeFacts(
        now_ms=now_ms,
        xids=tuple(xids),
        gpu_events=tuple(await _gpu_events(conn, since_ms)),
        acks=tuple(await list_acks(conn, since_ms=since_ms)),
        current_boot_id=await current_boot_id(conn),
    )
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
    unknown = sorted({x.pci_bus_id for x in xids if x.pci_bus_id and x.pci_bus_id not in known})
    return out + [assess_gpu(pci, facts) for pci in unknown]


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


async def _window_xids(conn: aiosqlite.Connection, since_ms: int, until_ms: int) -> list[StoredXid]:
    filters = XidFilter(since_ms=since_ms, until_ms=until_ms, kind="xid")
    out: list[StoredXid] = []
    cursor = None
    while len(out) < MAX_HEALTH_XIDS:
        page = await list_xids(conn, filters, limit=MAX_PAGE, cursor=cursor)
        out += page.events
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return out


async def _gpu_events(conn: aiosqlite.Connection, since_ms: int) -> list[GpuStateEvent]:
    sql = (
        "SELECT g.uuid, e.ts_ms, e.state, e.detail FROM gpu_events e JOIN gpus g ON g.id = e.gpu "
        "WHERE e.ts_ms >= ? ORDER BY e.ts_ms, e.id"
    )
    async with conn.execute(sql, (since_ms,)) as cur:
        return [GpuStateEvent(u, int(ts), state, detail) async for u, ts, state, detail in cur]


def _score(findings: list[Finding]) -> int:
    critical = sum(f.severity == "critical" for f in findings)
    warning = sum(f.severity == "warning" for f in findings)
    score = 100 - 50 * critical - 15 * warning
    if critical:
        return max(0, min(score, 50))
    return max(51, score) if warning else 100


def _liveness(
    gpu: InventoryGpu | None,
    sample: GpuSample | None,
    acks: list[Ack],
    now_ms: int,
    stale_after_ms: int,
) -> list[Finding]:
    if gpu is None:
        return [
            Finding(
                "info",
                "not_in_inventory",
                "known only from kernel XID lines by its PCI bus id: NVML never listed it "
                "(it fell off the bus before xidwatch started, or NVML sampling is off)",
                "check `nvidia-smi -L` lists it",
            )
        ]
    lost = gpu.lost_since_ms
    if lost is not None and (sample is None or sample.ts_ms <= lost):
        ack = next((a for a in acks if a.ts_ms >= lost), None)
        since = f"GPU stopped answering NVML at {format_ts(lost)} (lost, e.g. fallen off the bus)"
        if ack is not None:
            return [
                Finding(
                    "warning",
                    "gpu_lost_acknowledged",
                    f"{since}; acknowledged by {ack.who} at {format_ts(ack.ts_ms)}: {ack.reason}",
                    "the GPU is still lost: reset it or reboot the node when ready",
                )
            ]
        return [Finding("critical", "gpu_lost", since, "drain the node; reset the GPU or reboot")]
    if sample is None:
        return [Finding("warning", "no_samples", "never sampled", "is NVML sampling on?")]
    age_ms = now_ms - sample.ts_ms
    if age_ms > stale_after_ms:
        why = f"last sample {age_ms / 60_000:.0f} min old"
        return [Finding("warning", "stale", why, "is the xidwatch daemon running?")]
    return []


def _recoveries(states: list[GpuStateEvent]) -> list[Finding]:
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


def _readings(gpu: InventoryGpu | None, s: GpuSample) -> list[Finding]:
    out = _temperature(gpu, s)
    limit = s.power_limit_w or (gpu.info.power_limit_default_w if gpu else None)
    if s.power_w is not None and limit and s.power_w > limit * POWER_OVER_LIMIT:
        out.append(
            Finding(
                "warning",
                "power_over_limit",
                f"drawing {s.power_w:.0f} W, over its {limit:.0f} W power limit",
                "check the power limit (nvidia-smi -q -d POWER) and the board's power sensor",
            )
        )
    reasons = s.clocks_event_reasons or 0
    out += [f for bits, f in _THROTTLE_FINDINGS if reasons & bits]
    if s.ecc_uncorrected_volatile:
        why = f"{s.ecc_uncorrected_volatile} uncorrectable ECC error(s) since the driver loaded"
        out.append(Finding("critical", "ecc_uncorrected", why, "drain the GPU and reset it"))
    if s.remap_failure:
        out.append(_REMAP_FAILED)
    elif s.remap_pending:
        out.append(_REMAP_PENDING)
    return out


_THROTTLE_FINDINGS = (
    (
        SW_THERMAL | HW_THERMAL | HW_SLOWDOWN,
        Finding("warning", "thermal_throttle", "clocks held back by thermal slowdown", _COOLING),
    ),
    (
        HW_POWER_BRAKE,
        Finding("warning", "power_brake", "hardware power brake asserted", _POWER_FEED),
    ),
)
_REMAP_FAILED = Finding(
    "critical",
    "remap_failure",
    "a row remap failed: no spare rows left",
    "drain the GPU; send it for RMA",
)
_REMAP_PENDING = Finding(
    "warning",
    "remap_pending",
    "a row remap is pending",
    "reset the GPU when drained to activate it",
)


def _temperature(gpu: InventoryGpu | None, s: GpuSample) -> list[Finding]:
    """Temperature against the GPU's own slowdown (else shutdown) limit; unjudged without one."""
    t = s.temperature_c
    if t is None:
        return []
    slowdown = gpu.info.slowdown_temp_c if gpu else None
    shutdown = gpu.info.shutdown_temp_c if gpu else None
    margin = TEMP_WARNING_MARGIN_C
    if slowdown is not None:
        limit, name, hot, warm = slowdown, "slowdown", slowdown, slowdown - margin
    elif shutdown is not None:
        limit, name, hot, warm = shutdown, "shutdown", shutdown - margin, shutdown - 2 * margin
    else:
        why = f"{t} °C, not judged: the GPU reports no slowdown or shutdown temperature"
        return [Finding("info", "no_thermal_limits", why)]
    if t >= hot:
        why = f"{t} °C is at or near its {name} temperature ({limit} °C)"
        return [Finding("critical", f"temperature_{name}", why, _COOLING)]
    if t >= warm:
        why = f"{t} °C is within {limit - t} °C of its {name} temperature ({limit} °C)"
        return [Finding("warning", f"temperature_near_{name}", why, _COOLING)]
    return []
