"""The node daemon's configuration: one typed object, built once by the CLI and passed down."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from store.flood import FloodPolicy
from watcher.kmsg import KMSG_PATH

__all__ = ["DaemonConfig"]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``xidwatch run`` needs; defaults are the production ones."""

    db_path: Path
    node: str = field(default_factory=socket.gethostname)
    kmsg: bool = True
    kmsg_path: Path = KMSG_PATH
    kmsg_any_facility: bool = False
    log_files: tuple[Path, ...] = ()
    log_files_from_start: bool = False
    flood: FloodPolicy = field(default_factory=FloodPolicy)
    checkpoint_interval_s: float = 0.5
    shutdown_timeout_s: float = 20.0
