"""NVIDIA's XID workflows over one GPU's recent XIDs, and what cleared its fatal state.

The catalog's action labels (stored with each event) say what one XID asks for; the
workflows judge XIDs together: a 13 or 31 repeating on one GPU while its neighbours are
clean points at the GPU, the same codes spread over GPUs point at the job; a 45 right after
another XID is the driver cleaning up after it; a 48 with 63 or 64 asks for a drain; a 154
names the recovery action the driver now wants.

A fatal state (reset, reboot, VM restart) clears three ways, and the finding says which:
the node rebooted since (the event's boot id is not the current one), the GPU was reset (it
answered NVML again after the event), or an operator acknowledged it. Resets and reboots
fix a GPU's state, not its record: repeats that point at bad hardware (13/31 on one GPU,
64 again) only go away when acknowledged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from store.acks import Ack
from store.records import StoredXid
from store.windows import format_ts

__all__ = [
    "ACTION_TEXT",
    "FATAL_ACTIONS",
    "FOLLOW_MS",
    "REPEATS_ON_ONE_GPU",
    "Finding",
    "Severity",
    "follows",
    "recovery_action",
    "xid_findings",
]

Severity = Literal["info", "warning", "critical"]

FATAL_ACTIONS = frozenset({"RESET_GPU", "RESTART_BM", "RESTART_VM", "WORKFLOW_XID_48"})
REPEATS_ON_ONE_GPU = 3
FOLLOW_MS = 10_000  # an XID 45 this soon after another XID on the GPU is cleanup after it

ACTION_TEXT: dict[str, str] = {
    "RESTART_APP": "restart the application; the GPU needs nothing",
    "RESET_GPU": "drain the GPU and reset it (nvidia-smi -r); reboot only if the reset fails",
    "RESTART_BM": "drain the node and power-cycle it",
    "RESTART_VM": "restart the VM that owns the GPU",
    "CONTACT_SUPPORT": "collect nvidia-bug-report.sh and escalate to the vendor or NVIDIA",
    "CHECK_MECHANICALS": "check the GPU's seating and its power and signal connectors",
    "UPDATE_SWFW": "update the GPU driver and firmware",
    "CHECK_UVM": "reset the GPU if UVM or vGPU is in use on it; otherwise nothing",
    "WORKFLOW_NVLINK_ERR": "decode the NVLink registers in the message; escalate if it repeats",
    "WORKFLOW_NVLINK5_ERR": "decode the NVLink5 subcode and errorStatus; escalate if it repeats",
    "UNEXPECTED_ERR_REPORT_ISSUE": "collect nvidia-bug-report.sh and report it to NVIDIA",
    "UNKNOWN": "not in the XID catalog: collect nvidia-bug-report.sh and escalate",
}

# XID 154's recovery actions (NVML_GPU_RECOVERY_ACTION_*): severity and what to do.
_RECOVERY: dict[str, tuple[Severity, str]] = {
    "None": ("info", "nothing: the driver no longer asks for a recovery action"),
    "GPU Reset Required": ("critical", "drain the GPU and reset it (nvidia-smi -r)"),
    "Node Reboot Required": ("critical", "drain the node and reboot it"),
    "Drain P2P": ("warning", "stop peer-to-peer (NVLink/P2P) work on this GPU; let jobs finish"),
    "Drain and Reset": ("critical", "drain the GPU, then reset it (nvidia-smi -r)"),
}
_RECOVERY_BY_NUMBER = dict(enumerate(("None", "GPU Reset Required", "Node Reboot Required")))
_RECOVERY_BY_NUMBER |= {3: "Drain P2P", 4: "Drain and Reset"}
_RECOVERY_TO = re.compile(r"\bto\s+(0x[0-9a-fA-F]+|\d+)\s*(?:\(([^)]*)\))?")
_CAUSED_BY = re.compile(r"caused by previous Xid", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing health found about a GPU: how bad, a stable code, what and what to do.

    ``xid_ids`` are the stored events behind it (for correlation); ``action`` is empty when
    there is nothing to do.
    """

    severity: Severity
    code: str
    message: str
    action: str = ""
    xid_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Clearance:
    by: Literal["reboot", "reset", "ack"]
    text: str


def recovery_action(message: str) -> str | None:
    """The recovery action an XID 154 message says the driver now wants, by its NVML name.

    ``... changed from 0x0 (None) to 0x1 (GPU Reset Required)`` -> ``GPU Reset Required``;
    the label is trusted before the number, and None means neither was recognised.
    """
    m = _RECOVERY_TO.search(message)
    if m is not None:
        label = _canonical(m[2] or "")
        if label is not None:
            return label
        return _RECOVERY_BY_NUMBER.get(int(m[1], 0))
    found = [(message.lower().rfind(k.lower()), k) for k in _RECOVERY]
    at, label = max(found)
    return label if at >= 0 else None


def follows(event: StoredXid, earlier: Iterable[StoredXid]) -> StoredXid | None:
    """The XID on the same GPU that ``event`` (a 45) cleans up after, if any."""
    for other in sorted(earlier, key=lambda o: -o.last_ts_ms):
        if other.id == event.id or other.xid == 45 or other.pci_bus_id != event.pci_bus_id:
            continue
        if other.ts_ms <= event.ts_ms + 1000 and event.ts_ms - other.last_ts_ms <= FOLLOW_MS:
            return other
    return None


def xid_findings(
    events: Sequence[StoredXid],
    others: Sequence[StoredXid],
    *,
    acks: Sequence[Ack] = (),
    recovered_ms: Sequence[int] = (),
    current_boot_id: str | None = None,
) -> list[Finding]:
    """Findings for one GPU's ``events`` in the window; ``others`` are the other GPUs' XIDs."""
    acks = sorted(acks, key=lambda a: (a.ts_ms, a.id))
    cleared: dict[_Clearance, list[StoredXid]] = {}
    active: list[StoredXid] = []
    for e in sorted(events, key=lambda x: (x.ts_ms, x.id)):
        why = _cleared(e, acks, recovered_ms, current_boot_id)
        if why is None:
            active.append(e)
        else:
            cleared.setdefault(why, []).append(e)
    unacked = [*active, *(e for why, es in cleared.items() if why.by != "ack" for e in es)]
    out = [*_workflows(active, unacked, events, others)]
    out += [
        Finding(
            "info", f"cleared_by_{why.by}", f"{_label(es)}: cleared by {why.text}", "", _ids(es)
        )
        for why, es in cleared.items()
    ]
    return out


def _cleared(
    e: StoredXid, acks: Sequence[Ack], recovered_ms: Sequence[int], boot: str | None
) -> _Clearance | None:
    if _is_fatal(e):
        if e.boot_id is not None and boot is not None and e.boot_id != boot:
            return _Clearance("reboot", f"a reboot (boot {e.boot_id[:8]}, now {boot[:8]})")
        reset = min((t for t in recovered_ms if t > e.last_ts_ms), default=None)
        ack = next((a for a in acks if a.ts_ms >= e.last_ts_ms), None)
        if reset is not None and (ack is None or reset <= ack.ts_ms):
            when = format_ts(reset)
            return _Clearance("reset", f"a GPU reset (it answered NVML again at {when})")
    else:
        ack = next((a for a in acks if a.ts_ms >= e.last_ts_ms), None)
    if ack is None:
        return None
    return _Clearance("ack", f"{ack.who}'s acknowledgement at {format_ts(ack.ts_ms)}: {ack.reason}")


def _is_fatal(e: StoredXid) -> bool:
    if e.xid == 154 and e.action == "XID_154":
        return recovery_action(e.message) != "None"
    return e.action in FATAL_ACTIONS


def _workflows(
    active: list[StoredXid],
    unacked: list[StoredXid],
    every: Sequence[StoredXid],
    others: Sequence[StoredXid],
) -> list[Finding]:
    by_code: dict[int, list[StoredXid]] = {}
    for e in active:
        by_code.setdefault(e.xid, []).append(e)
    out: list[Finding] = []
    repeats_64 = [e for e in unacked if e.xid == 64]
    repeating_64 = sum(e.count for e in repeats_64) >= 2
    if repeating_64:
        out.append(
            Finding(
                "critical",
                "xid_64_repeating",
                f"{_label(repeats_64)}: row remapping failed more than once",
                "the GPU's memory is out of spare rows: drain it and send it for RMA",
                _ids(repeats_64),
            )
        )
    for code, es in sorted(by_code.items()):
        out += _code_findings(code, es, by_code, every, others, repeating_64=repeating_64)
    return out


def _code_findings(
    code: int,
    es: list[StoredXid],
    by_code: dict[int, list[StoredXid]],
    every: Sequence[StoredXid],
    others: Sequence[StoredXid],
    *,
    repeating_64: bool,
) -> list[Finding]:
    action, label, ids = es[-1].action, _label(es), _ids(es)
    if code == 45:
        solo = [e for e in es if not _CAUSED_BY.search(e.message) and follows(e, every) is None]
        if not solo:
            return []  # cleanup after other XIDs: those are reported, not the 45
        return [
            Finding(
                "info",
                "xid_45",
                f"{_label(solo)}: alone, so routine (a job was stopped or the GPU reset)",
                "nothing; if it repeats with no jobs stopped and NVSwitches are used, "
                "restart Fabric Manager",
                _ids(solo),
            )
        ]
    if code == 48:
        remaps = [e for c in (63, 64) for e in by_code.get(c, ())]
        if remaps:
            rma = " (send it for RMA if XID 64 repeats)" if 64 in by_code else ""
            return [
                Finding(
                    "critical",
                    "xid_48_with_remap",
                    f"{_label(es + remaps)}: uncorrectable memory error and row remapping",
                    f"drain the GPU and reset it to activate the remap{rma}",
                    ids + _ids(remaps),
                )
            ]
        return [Finding("critical", "xid_48", f"{label}: uncorrectable ECC error", _RESET, ids)]
    if code in (63, 64) and 48 in by_code:
        return []  # reported with the 48
    if code == 63:
        return [Finding("info", "xid_63", f"{label}: a row remap is pending", _REMAP, ids)]
    if code == 64:
        if repeating_64:
            return []
        why = f"{label}: row remapping failed"
        return [Finding("critical", "xid_64", why, _RESET + "; if it happens again, RMA", ids)]
    if code == 154 and action == "XID_154":
        return [_recovery_finding(es[-1])]
    if action in FATAL_ACTIONS:
        return [Finding("critical", f"xid_{code}", label, ACTION_TEXT.get(action, action), ids)]
    if action == "RESTART_APP":
        return [_app_finding(code, es, others)]
    if action in ("IGNORE", "WORKFLOW_XID_45"):
        return []
    severity: Severity = "info" if action == "CHECK_UVM" else "warning"
    return [Finding(severity, f"xid_{code}", label, ACTION_TEXT.get(action, action), ids)]


_RESET = "reset the GPU (nvidia-smi -r) once its jobs are stopped"
_REMAP = "reset the GPU when it is drained, to activate the remap"


def _recovery_finding(e: StoredXid) -> Finding:
    wanted = recovery_action(e.message)
    if wanted is None:
        return Finding(
            "warning",
            "xid_154",
            f"XID 154 at {format_ts(e.ts_ms)} names a recovery action xidwatch does not know",
            f"read the message and do what it asks: {e.message}",
            (e.id,),
        )
    severity, todo = _RECOVERY[wanted]
    text = f"XID 154 at {format_ts(e.ts_ms)}: the driver now wants recovery action {wanted!r}"
    return Finding(severity, "xid_154", text, todo, (e.id,))


def _app_finding(code: int, es: list[StoredXid], others: Sequence[StoredXid]) -> Finding:
    n = sum(e.count for e in es)
    elsewhere = [o for o in others if o.xid == code and o.pci_bus_id != es[0].pci_bus_id]
    gpus = sorted({o.pci_bus_id or "?" for o in elsewhere})
    if gpus:
        return Finding(
            "info",
            f"xid_{code}_application",
            f"{_label(es)}: also x{sum(o.count for o in elsewhere)} on {len(gpus)} other "
            f"GPU(s) ({', '.join(gpus)}); spread over GPUs, it points at the job, not this GPU",
            "check the application (its CUDA errors, illegal addresses, memory use)",
            _ids(es),
        )
    if n >= REPEATS_ON_ONE_GPU:
        return Finding(
            "warning",
            f"xid_{code}_repeating",
            f"{_label(es)}: on this GPU only, while the node's other GPUs have none, "
            "so it points at this GPU",
            "drain it and run diagnostics (dcgmi diag -r 3); replace it if they fail",
            _ids(es),
        )
    return Finding(
        "info", f"xid_{code}", f"{_label(es)}: a one-off, from the application", _APP, _ids(es)
    )


_APP = "check the application if it recurs; the GPU needs nothing"


def _label(es: Sequence[StoredXid]) -> str:
    """``XID 13 x4 (RESTART_APP), last at ...``; per code, one time for mixed lists."""
    parts: dict[tuple[str, int, str], int] = {}
    for e in es:
        key = ("SXid" if e.kind == "sxid" else "XID", e.xid, e.action)
        parts[key] = parts.get(key, 0) + e.count
    text = ", ".join(f"{k} {c} x{n} ({a})" for (k, c, a), n in parts.items())
    return f"{text}, last at {format_ts(max(e.last_ts_ms for e in es))}"


def _ids(es: Iterable[StoredXid]) -> tuple[int, ...]:
    return tuple(e.id for e in es)


def _canonical(label: str) -> str | None:
    wanted = label.strip().lower()
    return next((k for k in _RECOVERY if k.lower() == wanted), None)
