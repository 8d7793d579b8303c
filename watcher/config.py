"""The node daemon's configuration: one typed object, built once from the run settings.

:func:`daemon_config` turns the layered :class:`~watcher.settings.RunSettings` into the
:class:`DaemonConfig` the daemon runs with. The dataclasses' defaults are the settings'
defaults (read from the model, never restated), so a test or a bench that builds a
:class:`DaemonConfig` by hand gets what ``xidwatch run`` would; the fields without a
setting (checkpoint and shutdown timing, NVML events) are the daemon's own.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from store.flood import FloodPolicy
from store.retention import RetentionPolicy
from store.windows import parse_duration_ms
from watcher.settings import DEFAULT_GPU_ANNOTATIONS, RunSettings, SettingsError

__all__ = [
    "DEFAULT_GPU_ANNOTATIONS",
    "DaemonConfig",
    "KubernetesConfig",
    "SimulationSpec",
    "daemon_config",
]

_DEFAULTS = RunSettings()


def _seconds(duration: str) -> float:
    return parse_duration_ms(duration) / 1000


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """What ``--simulate`` asks for: how many GPUs, which model, and an optional scenario."""

    gpus: int
    model: str | None = _DEFAULTS.simulate_model
    scenario: str | None = _DEFAULTS.scenario
    speed: float = _DEFAULTS.scenario_speed
    seed: int = 0


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """Pod attribution, Events and the Node condition; all off when no cluster is found.

    ``enabled`` False skips Kubernetes entirely; True uses it when an in-cluster service
    account or a kubeconfig is found. ``events`` posts an Event for XIDs whose action is
    in ``event_actions``; ``node_condition`` (a condition type, e.g. ``GpuXidFatal``) also
    sets that Node condition, cleared after ``node_condition_quiet_s`` without one.
    """

    enabled: bool = _DEFAULTS.kubernetes
    kubeconfig: Path | None = _DEFAULTS.kubeconfig
    pod_refresh_s: float = _seconds(_DEFAULTS.pod_refresh)
    gpu_resources: tuple[str, ...] = _DEFAULTS.gpu_resources
    gpu_annotations: tuple[str, ...] = _DEFAULTS.gpu_annotations
    events: bool = _DEFAULTS.k8s_events
    event_actions: tuple[str, ...] = _DEFAULTS.k8s_event_actions
    node_condition: str | None = _DEFAULTS.node_condition
    node_condition_quiet_s: float = _seconds(_DEFAULTS.node_condition_quiet)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything the node daemon needs; defaults are the settings' (the production ones).

    ``config_file`` is the file the settings came from, watched for live changes.
    ``host_proc`` is the host's ``/proc`` (mounted at ``/host/proc`` in a pod): process
    names and cgroups of the pids NVML and XID lines name, which are host pids. The HTTP
    port is not the daemon's: see :class:`mcp_server.http_settings.HttpSettings`.
    """

    db_path: Path
    node: str = field(default_factory=socket.gethostname)
    kmsg: bool = _DEFAULTS.kmsg
    kmsg_path: Path = _DEFAULTS.kmsg_path
    kmsg_any_facility: bool = _DEFAULTS.kmsg_any_facility
    accept_injected: bool = _DEFAULTS.accept_injected
    log_files: tuple[Path, ...] = _DEFAULTS.log_files
    log_files_from_start: bool = _DEFAULTS.log_file_from_start
    flood: FloodPolicy = field(default_factory=FloodPolicy)
    checkpoint_interval_s: float = 0.5
    shutdown_timeout_s: float = 20.0
    nvml: bool = _DEFAULTS.nvml
    nvml_events: bool = True
    sample_interval_s: float = _DEFAULTS.sample_interval
    simulate: SimulationSpec | None = None
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    retention_interval_s: float = 3600.0
    log_level: str = _DEFAULTS.log_level
    config_file: Path | None = None
    host_proc: Path = _DEFAULTS.host_proc
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)


def daemon_config(s: RunSettings, *, config_file: Path | None = None) -> DaemonConfig:
    """The daemon's configuration from layered settings; refuses settings that contradict."""
    if s.scenario and not s.simulate:
        raise SettingsError(
            "--scenario needs --simulate N (scenarios drive simulated GPUs); "
            "in a config file, set simulate beside scenario"
        )
    if s.node_condition and not s.k8s_events:
        raise SettingsError(
            "--node-condition needs --k8s-events (the condition is set with the Events, "
            "under the same RBAC); in a config file, set k8s_events: true beside it"
        )
    simulated = (
        SimulationSpec(s.simulate, s.simulate_model, s.scenario, s.scenario_speed)
        if s.simulate
        else None
    )
    return DaemonConfig(
        db_path=s.db,
        node=s.node or socket.gethostname(),
        kmsg=s.kmsg,
        kmsg_path=s.kmsg_path,
        kmsg_any_facility=s.kmsg_any_facility,
        accept_injected=s.accept_injected,
        log_files=s.log_files,
        log_files_from_start=s.log_file_from_start,
        flood=FloodPolicy(burst=s.flood_burst, per_minute=s.flood_per_minute),
        nvml=s.nvml or simulated is not None,  # simulated GPUs are read through NVML
        sample_interval_s=s.sample_interval,
        simulate=simulated,
        retention=RetentionPolicy(
            raw_ms=parse_duration_ms(s.retention_raw),
            minute_ms=parse_duration_ms(s.retention_1m),
            hour_ms=parse_duration_ms(s.retention_1h),
        ),
        log_level=s.log_level,
        config_file=config_file,
        host_proc=s.host_proc,
        kubernetes=KubernetesConfig(
            enabled=s.kubernetes,
            kubeconfig=s.kubeconfig,
            pod_refresh_s=_seconds(s.pod_refresh),
            gpu_resources=s.gpu_resources,
            gpu_annotations=s.gpu_annotations,
            events=s.k8s_events,
            event_actions=s.k8s_event_actions,
            node_condition=s.node_condition or None,
            node_condition_quiet_s=_seconds(s.node_condition_quiet),
        ),
    )
