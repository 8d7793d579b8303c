"""``xidwatch inject``: write a synthetic, clearly marked XID into the kernel log.

For checking a node end to end (kernel log, daemon, store, MCP, metrics, alerts) without
waiting for a GPU to fail. The line has the driver's shape and carries the tag
``[xidwatch inject <id>]`` (see :mod:`watcher.kernel.injection`); a daemon stores it only when run
with ``--accept-injected``, marked ``injected``. A second, plain record follows it: the
kernel makes the last record of a user-space burst readable only once a later one arrives.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from store.errors import XidwatchError
from watcher.kernel.injection import injected_xid_line
from watcher.kernel.kmsg import KMSG_PATH
from watcher.kernel.parser import normalize_pci

__all__ = ["DEFAULT_GPU", "DEFAULT_XID", "InjectRefusedError", "Injection", "inject", "write_xid"]

DEFAULT_XID = 13
"""Graphics engine exception: an application-level, non-fatal XID (catalog action
RESTART_APP), so a test on a live node does not read as a GPU to drain or reset the way 79
(fallen off the bus) or 48 (double-bit ECC) would. Pass ``--xid 79`` to test that path."""
DEFAULT_GPU = "0000:00:00.0"
"""The host bridge's address, never a GPU's: a default injection makes no real GPU look sick."""
NVIDIA_MARKERS = (Path("/dev/nvidiactl"), Path("/proc/driver/nvidia/version"))
PRINTK_DEVKMSG = Path("/proc/sys/kernel/printk_devkmsg")
_LEVEL = 4  # warning; the kernel files every user-space record under the user facility


class InjectRefusedError(XidwatchError):
    """``xidwatch inject`` will not write: not root, not confirmed, or writes are dropped."""


@dataclass(frozen=True, slots=True)
class Injection:
    """What was written: the injection id (the tag), the XID line and where."""

    id: str
    code: int
    pci_bus_id: str
    line: str
    path: Path


def write_xid(
    code: int,
    gpu: str,
    *,
    kmsg_path: Path = KMSG_PATH,
    confirmed: bool = False,
    euid: Callable[[], int] = os.geteuid,
    nvidia_markers: Sequence[Path] = NVIDIA_MARKERS,
    printk_devkmsg: Path = PRINTK_DEVKMSG,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> Injection:
    """Write one synthetic XID line and a flush record to ``kmsg_path``; refuse if unsafe."""
    if euid() != 0:
        raise InjectRefusedError(
            f"xidwatch inject writes to {kmsg_path}, which only root may write: "
            "run it with sudo, or as root in the daemon's pod"
        )
    try:
        pci = normalize_pci(gpu.strip())
    except ValueError as e:
        raise InjectRefusedError(f"--gpu {gpu!r}: give a PCI bus id like 0000:3b:00.0") from e
    driver = next((m for m in nvidia_markers if m.exists()), None)
    if driver is not None and not confirmed:
        raise InjectRefusedError(
            f"this node has an NVIDIA driver ({driver} exists): the synthetic XID {code} will "
            "show in its XID history, health, metrics and alerts (marked injected) wherever "
            "a daemon runs with --accept-injected. Pass --yes to write it"
        )
    if kmsg_path.is_char_device() and _devkmsg_off(printk_devkmsg):
        raise InjectRefusedError(
            f"kernel.printk_devkmsg is off ({printk_devkmsg}): the kernel drops what user "
            "space writes to /dev/kmsg. `sysctl kernel.printk_devkmsg=ratelimit` allows it"
        )
    injection_id = new_id()
    line = injected_xid_line(code, _driver_pci(pci), injection_id)
    try:
        fd = os.open(kmsg_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError as e:
        raise InjectRefusedError(f"cannot open {kmsg_path} for writing: {e.strerror}") from e
    try:
        os.write(fd, f"<{_LEVEL}>{line}\n".encode())
        os.write(fd, f"<{_LEVEL}>xidwatch-inject: end of synthetic XID {injection_id}\n".encode())
    except OSError as e:
        raise InjectRefusedError(f"writing to {kmsg_path} failed: {e.strerror}") from e
    finally:
        os.close(fd)
    return Injection(injection_id, code, pci, line, kmsg_path)


def inject(
    xid: Annotated[
        int,
        typer.Option(
            min=0, max=999_999, help="XID code to write (default 13: non-fatal, app-level)."
        ),
    ] = DEFAULT_XID,
    gpu: Annotated[
        str,
        typer.Option(
            help="PCI bus id the XID names (default 0000:00:00.0: the host bridge, no GPU)."
        ),
    ] = DEFAULT_GPU,
    kmsg_path: Annotated[Path, typer.Option(help="Where to write (tests).")] = KMSG_PATH,
    yes: Annotated[
        bool, typer.Option("--yes", help="Write even though this node has a real NVIDIA GPU.")
    ] = False,
) -> None:
    """Write a synthetic, marked test XID to the kernel log (root; see run --accept-injected)."""
    done = write_xid(xid, gpu, kmsg_path=kmsg_path, confirmed=yes)
    typer.echo(f"injected XID {done.code} on {done.pci_bus_id} into {done.path}: id {done.id}")
    typer.echo(f"  {done.line}")
    typer.echo(
        "  a daemon run with --accept-injected stores it marked injected; "
        "`xidwatch xids` shows it as [injected]"
    )


def _driver_pci(pci: str) -> str:
    """``00000000:3B:00.0`` -> ``0000:3b:00``, the way the driver prints it in an XID line."""
    domain, bus, rest = pci.split(":")
    return f"{domain[-4:]}:{bus}:{rest.split('.')[0]}".lower()


def _devkmsg_off(setting: Path) -> bool:
    try:
        return setting.read_text().strip() == "off"
    except OSError:
        return False
