"""PCI bus ids in one spelling: NVML's ``00000000:3B:00.0``, which the store keys GPUs by."""

from __future__ import annotations

import re

__all__ = ["normalize_pci"]

_PCI_RE = re.compile(
    r"^(?:(?P<dom>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<dev>[0-9a-fA-F]{1,2})"
    r"(?:\.(?P<fn>[0-7]))?$"
)


def normalize_pci(addr: str) -> str:
    """``0000:3b:00``, ``3b:00.0`` or ``00000000:3B:00.0`` -> ``00000000:3B:00.0``.

    Raises ValueError for anything that is not a PCI address.
    """
    m = _PCI_RE.match(addr.strip())
    if m is None:
        raise ValueError(f"not a PCI bus id: {addr!r}")
    dom = int(m["dom"] or "0", 16)
    return f"{dom:08X}:{int(m['bus'], 16):02X}:{int(m['dev'], 16):02X}.{m['fn'] or '0'}"
