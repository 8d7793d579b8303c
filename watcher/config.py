"""The node daemon's configuration: one typed object, built once by the CLI and passed down."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from store.flood import FloodPolicy
from store.retention import RetentionPolicy
from watcher.kmsg import KMSG_PATH

__all__ = ["DaemonConfig", "SimulationSpec"]


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """What ``--simulate`` asks for: how many GPUs, which model, and an optional scenario."""

    gpus: int
    model: str | None = None
    scenario: str | None = None
    speed: float = 1.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``xidwatch run`` needs; defaults are the production ones.

    Built once by :func:`watcher.settings.daemon_config` from flags, environment and the
    config file. ``listen``, ``auth_token_file`` and ``allowed_hosts`` are for the HTTP
    port the CLI serves beside the daemon (``listen`` None: no port); ``config_file`` is
    the file the settings came from, watched for live changes.
    """

    db_path: Path
    node: str = field(default_factory=socket.gethostname)
    kmsg: bool = True
    kmsg_path: Path = KMSG_PATH
    kmsg_any_facility: bool = False
    accept_injected: bool = False
    log_files: tuple[Path, ...] = ()
    log_files_from_start: bool = False
    flood: FloodPolicy = field(default_factory=FloodPolicy)
    checkpoint_interval_s: float = 0.5
    shutdown_timeout_s: float = 20.0
    nvml: bool = True
    nvml_events: bool = True
    sample_interval_s: float = 10.0
    simulate: SimulationSpec | None = None
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    retention_interval_s: float = 3600.0
    log_level: str = "info"
    listen: str | None = "127.0.0.1:9400"
    auth_token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    config_file: Path | None = None
