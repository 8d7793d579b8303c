"""The node daemon's configuration: one typed object, built once by the CLI and passed down."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from store.actions import FATAL_LABELS
from store.flood import FloodPolicy
from store.retention import RetentionPolicy
from watcher.kernel.kmsg import KMSG_PATH

__all__ = ["DaemonConfig", "KubernetesConfig", "SimulationSpec"]

DEFAULT_GPU_ANNOTATIONS = (
    "xidwatch.io/gpus",
    "nvidia.com/use-gpuuuid",
    "hami.io/vgpu-devices-allocated",
    "ALIYUN_COM_GPU_IDX",
)


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """What ``--simulate`` asks for: how many GPUs, which model, and an optional scenario."""

    gpus: int
    model: str | None = None
    scenario: str | None = None
    speed: float = 1.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """Pod attribution, Events and the Node condition; all off when no cluster is found.

    ``enabled`` False skips Kubernetes entirely; True uses it when an in-cluster service
    account or a kubeconfig is found. ``events`` posts an Event for XIDs whose action is
    in ``event_actions``; ``node_condition`` (a condition type, e.g. ``GpuXidFatal``) also
    sets that Node condition, cleared after ``node_condition_quiet_s`` without one.
    """

    enabled: bool = True
    kubeconfig: Path | None = None
    pod_refresh_s: float = 30.0
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu",)
    gpu_annotations: tuple[str, ...] = DEFAULT_GPU_ANNOTATIONS
    events: bool = False
    event_actions: tuple[str, ...] = tuple(sorted(FATAL_LABELS))
    node_condition: str | None = None
    node_condition_quiet_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``xidwatch run`` needs; defaults are the production ones.

    Built once by :func:`watcher.settings.daemon_config` from flags, environment and the
    config file. ``listen``, ``auth_token_file`` and ``allowed_hosts`` are for the HTTP
    port the CLI serves beside the daemon (``listen`` None: no port); ``config_file`` is
    the file the settings came from, watched for live changes. ``host_proc`` is the
    host's ``/proc`` (mounted at ``/host/proc`` in a pod): process names and cgroups of
    the pids NVML and XID lines name, which are host pids.
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
    listen: str | None = "127.0.0.1:9607"
    auth_token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    config_file: Path | None = None
    host_proc: Path = Path("/proc")
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
