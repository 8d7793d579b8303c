"""Which of a GPU's XIDs still count, and what cleared the others.

A fatal state (reset, reboot, VM restart) clears three ways, and the finding says which:
the node rebooted since (the event's boot id is not the current one), the GPU was reset (it
answered NVML again after the event), or an operator acknowledged it. Other XIDs count
until acknowledged or out of the window. Resets and reboots fix a GPU's state, not its
record: repeats that point at bad hardware only go away when acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from store.acks import Ack
from store.actions import is_fatal_label, recovery_action
from store.records import StoredXid
from store.windows import format_ts

__all__ = ["Clearance", "XidState", "is_fatal", "label", "representatives", "xid_state"]


@dataclass(frozen=True, slots=True)
class Clearance:
    """What cleared some XIDs: a reboot, a GPU reset or an acknowledgement, in words."""

    by: Literal["reboot", "reset", "ack"]
    text: str


@dataclass(frozen=True, slots=True)
class XidState:
    """A GPU's XIDs split into those that still count and those cleared, by what."""

    active: tuple[StoredXid, ...]
    cleared: tuple[tuple[Clearance, tuple[StoredXid, ...]], ...]


def is_fatal(e: StoredXid) -> bool:
    """An XID that leaves the GPU out of service until reset, reboot or acknowledgement."""
    if e.xid == 154 and e.action == "XID_154":
        return recovery_action(e.message) not in (None, "None")
    return is_fatal_label(e.action)


def xid_state(
    events: Sequence[StoredXid],
    *,
    acks: Sequence[Ack] = (),
    recovered_ms: Sequence[int] = (),
    current_boot_id: str | None = None,
) -> XidState:
    """Split one GPU's ``events`` into active and cleared (by reboot, reset or ack)."""
    acks = sorted(acks, key=lambda a: (a.ts_ms, a.id))
    cleared: dict[Clearance, list[StoredXid]] = {}
    active: list[StoredXid] = []
    for e in sorted(events, key=lambda x: (x.ts_ms, x.id)):
        why = _cleared(e, acks, recovered_ms, current_boot_id)
        if why is None:
            active.append(e)
        else:
            cleared.setdefault(why, []).append(e)
    return XidState(tuple(active), tuple((c, tuple(es)) for c, es in cleared.items()))


def representatives(active: Iterable[StoredXid]) -> dict[int, list[StoredXid]]:
    """Active XIDs grouped by code; the last of each group is the one to judge."""
    groups: dict[int, list[StoredXid]] = {}
    for e in sorted(active, key=lambda x: (x.ts_ms, x.id)):
        groups.setdefault(e.xid, []).append(e)
    return groups


def _cleared(
    e: StoredXid, acks: Sequence[Ack], recovered_ms: Sequence[int], boot: str | None
) -> Clearance | None:
    ack = next((a for a in acks if a.ts_ms >= e.last_ts_ms), None)
    if is_fatal(e):
        if e.boot_id is not None and boot is not None and e.boot_id != boot:
            return Clearance("reboot", f"a reboot (boot {e.boot_id[:8]}, now {boot[:8]})")
        reset = min((t for t in recovered_ms if t > e.last_ts_ms), default=None)
        if reset is not None and (ack is None or reset <= ack.ts_ms):
            when = format_ts(reset)
            return Clearance("reset", f"a GPU reset (it answered NVML again at {when})")
    if ack is None:
        return None
    return Clearance("ack", f"{ack.who}'s acknowledgement at {format_ts(ack.ts_ms)}: {ack.reason}")


def label(es: Sequence[StoredXid]) -> str:
    """``XID 13 x4, last at ...``; per code, one time for mixed lists."""
    parts: dict[tuple[str, int], int] = {}
    for e in es:
        key = ("SXid" if e.kind == "sxid" else "XID", e.xid)
        parts[key] = parts.get(key, 0) + e.count
    text = ", ".join(f"{k} {c} x{n}" for (k, c), n in parts.items())
    return f"{text}, last at {format_ts(max(e.last_ts_ms for e in es))}"
