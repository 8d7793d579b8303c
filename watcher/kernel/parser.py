"""Parsing NVIDIA XID and NVSwitch SXid kernel log lines into events.

Handles every published shape (see docs/xid-lines.md): with and without the ``PCI:``
prefix, MIG ``GPU-I``/``GPU-CI``, pid/name present, ``'<unknown>'`` or absent, the old
channel forms, SXid lines with a function number, and "fallen off the bus" messages as an
implied XID 79. Anything else, including other NVRM lines, is not an event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from store.pci import normalize_pci
from store.records import EventKind

__all__ = ["FALLEN_OFF_BUS_XID", "ParsedXid", "normalize_pci", "parse_xid"]

FALLEN_OFF_BUS_XID = 79

_ADDR = r"(?P<addr>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)"
_XID_RE = re.compile(
    rf"NVRM: Xid \((?:PCI:)?{_ADDR}(?P<mig>(?: GPU-C?I:[0-9]{{1,3}})*)\): "
    r"(?P<code>[0-9]{1,6})(?!\w)(?:\s*[,;:]?\s*(?P<rest>.*))?$",
    re.S,
)
_MIG_RE = re.compile(r"GPU-(?P<which>C?I):(?P<n>[0-9]{1,3})")
# Fields are normally ", "-separated; some lines drop a comma. A name is quoted, <unknown>,
# one word, or (comm allows it) two words followed by a comma.
_PID_RE = re.compile(
    r"pid=(?P<pid>'[^']*'|[^,\s]*)"
    r"(?:\s*,?\s*name=(?P<name>'[^']*'|<[^>]*>|[^\s,]+ [^\s,]+(?=,)|[^\s,]*))?"
    r"(?:\s*,?\s*(?P<msg>.*))?",
    re.S,
)
_SXID_RE = re.compile(
    rf"nvidia-nvswitch[0-9]{{0,4}}: SXid \((?:PCI:)?{_ADDR}\): (?P<code>[0-9]{{1,6}})(?!\w)"
    r"(?:\s*[,;:]?\s*(?P<msg>.*))?$",
    re.S,
)
# Follow-on lines of one SXid: "Severity 1 Engine instance 30 ...", "Data {0x..., ...}".
_SXID_DETAIL_RE = re.compile(r"(?:severity\s*[0-9]|data\s*[{\[])", re.I)
_FALLEN_RES = (
    re.compile(rf"NVRM: GPU {_ADDR}: GPU has fallen off the bus"),
    re.compile(rf"NVRM: The NVIDIA GPU {_ADDR}\b.{{0,300}}?fallen off the bus", re.S),
)


@dataclass(frozen=True, slots=True)
class ParsedXid:
    """What one log line says about an XID or SXid.

    ``implied`` marks an XID 79 inferred from a "fallen off the bus" message rather than an
    ``Xid`` line. ``detail`` marks an SXid follow-on line (``Severity ...``, ``Data {...}``)
    that elaborates the line before it rather than reporting a new error.
    """

    kind: EventKind
    xid: int
    pci_bus_id: str | None
    message: str
    pid: int | None = None
    process: str | None = None
    mig_gi: int | None = None
    mig_ci: int | None = None
    implied: bool = False
    detail: bool = False


def parse_xid(text: str) -> ParsedXid | None:
    """The event a kernel log message reports, or None if it reports none. Never raises."""
    if "Xid" not in text and "fallen off" not in text:
        return None
    if (m := _XID_RE.search(text)) is not None:
        return _xid(m)
    if (m := _SXID_RE.search(text)) is not None:
        message = (m["msg"] or "").strip()
        return ParsedXid(
            "sxid",
            int(m["code"]),
            normalize_pci(m["addr"]),
            message,
            detail=_SXID_DETAIL_RE.match(message) is not None,
        )
    for pattern in _FALLEN_RES:
        if (m := pattern.search(text)) is not None:
            message = " ".join(line.removeprefix("NVRM: ").strip() for line in text.splitlines())
            return ParsedXid(
                "xid", FALLEN_OFF_BUS_XID, normalize_pci(m["addr"]), message.strip(), implied=True
            )
    return None


def _xid(m: re.Match[str]) -> ParsedXid:
    gi = ci = None
    for mig in _MIG_RE.finditer(m["mig"]):
        if mig["which"] == "I":
            gi = int(mig["n"])
        else:
            ci = int(mig["n"])
    rest = (m["rest"] or "").strip()
    pid = process = None
    if (p := _PID_RE.fullmatch(rest)) is not None:
        pid = _pid(p["pid"])
        process = _name(p["name"])
        rest = (p["msg"] or "").strip()
    return ParsedXid("xid", int(m["code"]), normalize_pci(m["addr"]), rest, pid, process, gi, ci)


def _pid(text: str) -> int | None:
    text = text.strip().strip("'")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def _name(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip().strip("'")
    return None if text in ("", "<unknown>") else text
