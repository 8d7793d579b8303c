"""Synthetic XIDs written by ``xidwatch inject``: the line they carry and how to know one.

An injected line is an ordinary driver-shaped XID line (so it travels the same path as a
real one: kernel log, parser, catalog, store, MCP) whose message carries a tag,
``[xidwatch inject <id>]``. The daemon stores tagged lines only with ``accept_injected``,
marked ``injected``; the kernel gives every record user space writes the user facility,
so a tagged line can never pass for the driver's own.
"""

from __future__ import annotations

import re

__all__ = ["INJECTED_PROCESS", "injected_id", "injected_xid_line"]

INJECTED_PROCESS = "xidwatch-inject"
_TAG_RE = re.compile(r"\[xidwatch inject (?P<id>[0-9a-f]{8,32})\]")


def injected_xid_line(code: int, pci: str, injection_id: str) -> str:
    """The driver-shaped line for a synthetic XID ``code`` on ``pci`` (``0000:18:00``)."""
    return (
        f"NVRM: Xid (PCI:{pci}): {code}, pid='<unknown>', name={INJECTED_PROCESS}, "
        f"[xidwatch inject {injection_id}] synthetic test XID, not a GPU error"
    )


def injected_id(text: str) -> str | None:
    """The injection id if ``text`` carries the ``xidwatch inject`` tag, else None."""
    if "[xidwatch inject " not in text:
        return None
    m = _TAG_RE.search(text)
    return m["id"] if m is not None else None
