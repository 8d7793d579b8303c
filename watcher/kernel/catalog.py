"""The XID catalog: what each code means and what to do, from a packaged data file.

``data/xid_catalog.json`` covers every XID NVIDIA publishes (1..162 in the reference
table). A code it does not know gets an explicit "unknown" entry, never a KeyError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from store.actions import LABEL_TEXT, UNKNOWN_LABEL, label_text
from store.records import EventKind
from watcher.errors import CatalogError

__all__ = ["UNKNOWN_ACTION", "XidCatalog", "XidInfo", "default_catalog"]

UNKNOWN_ACTION = UNKNOWN_LABEL


@dataclass(frozen=True, slots=True)
class XidInfo:
    """One catalog entry. ``known`` is False for codes the catalog does not list."""

    code: int
    kind: EventKind
    known: bool
    mnemonic: str | None
    title: str
    description: str
    immediate_action: str
    investigatory_action: str | None
    fatal: bool | None
    causes: tuple[str, ...]
    notes: str | None


class XidCatalog:
    """Lookup by code, plus the meaning of each action label and cause abbreviation.

    Action texts are :mod:`store.actions`' (the one place that knows actions); the data
    file holds the codes and the cause abbreviations.
    """

    actions = LABEL_TEXT

    def __init__(self, entries: dict[int, XidInfo], causes: dict[str, str]) -> None:
        self._entries = entries
        self.causes = causes

    @classmethod
    def from_json(cls, text: str) -> XidCatalog:
        try:
            data = json.loads(text)
            entries = {int(e["code"]): _entry(e) for e in data["entries"]}
            return cls(entries, dict(data["causes"]))
        except (ValueError, KeyError, TypeError) as e:
            raise CatalogError(f"the packaged XID catalog is malformed: {e}") from e

    def lookup(self, code: int, kind: EventKind = "xid") -> XidInfo:
        """The entry for ``code``; an explicit unknown entry for codes not in the catalog."""
        if kind == "xid" and (info := self._entries.get(code)) is not None:
            return info
        return _unknown(code, kind)

    def action_text(self, label: str) -> str:
        """What an action label asks an operator to do."""
        return label_text(label)

    def __iter__(self) -> Iterator[XidInfo]:
        return iter(sorted(self._entries.values(), key=lambda i: i.code))

    def __len__(self) -> int:
        return len(self._entries)


@cache
def default_catalog() -> XidCatalog:
    """The catalog shipped with xidwatch, loaded once."""
    text = resources.files("watcher.kernel").joinpath("data/xid_catalog.json").read_text("utf-8")
    return XidCatalog.from_json(text)


def _entry(e: dict[str, Any]) -> XidInfo:
    return XidInfo(
        code=int(e["code"]),
        kind="xid",
        known=True,
        mnemonic=e["mnemonic"],
        title=str(e["title"]),
        description=str(e["description"]),
        immediate_action=str(e["immediate_action"]),
        investigatory_action=e.get("investigatory_action"),
        fatal=bool(e["fatal"]),
        causes=tuple(e.get("causes") or ()),
        notes=e.get("notes"),
    )


def _unknown(code: int, kind: EventKind) -> XidInfo:
    if kind == "sxid":
        title = f"NVSwitch SXid {code}"
        description = (
            "An error reported by an NVSwitch (SXid). This catalog covers GPU XIDs only; "
            "the line's own text says whether it is fatal. See NVIDIA's Fabric Manager "
            "user guide for the SXid list."
        )
    else:
        title = f"Unknown XID {code}"
        description = (
            "This code is not in xidwatch's XID catalog: it may be newer than the catalog "
            "(upgrade xidwatch) or a driver-specific code."
        )
    return XidInfo(
        code=code,
        kind=kind,
        known=False,
        mnemonic=None,
        title=title,
        description=description,
        immediate_action=UNKNOWN_ACTION,
        investigatory_action=None,
        fatal=None,
        causes=(),
        notes=None,
    )
