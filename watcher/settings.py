"""``xidwatch run``'s settings: one model owns each setting's name, default, bounds and help.

A setting's key is the long flag's name with ``_`` for ``-`` (``--sample-interval`` is
``sample_interval`` in the YAML file and ``XIDWATCH_SAMPLE_INTERVAL`` in the environment);
the repeatable ``--log-file``, ``--allowed-host``, ``--gpu-resource`` and
``--gpu-annotation`` are the lists ``log_files``, ``allowed_hosts``, ``gpu_resources`` and
``gpu_annotations``. :class:`RunSettings` declares every key once, with its default and its
help (the flags' help is this text). A layer (the file; the flags and variables given) is
a :class:`RunSettings` that remembers which keys it set (``model_fields_set``);
:func:`layered` stacks layers over the defaults (defaults < file < environment < flags).
Errors name the key, where it came from and what is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from store.actions import FATAL_LABELS
from store.errors import XidwatchError
from store.flood import FloodPolicy
from store.paths import DB_HELP, DEFAULT_DB
from store.retention import RetentionPolicy
from store.windows import parse_duration_ms
from watcher.kernel.kmsg import KMSG_PATH
from watcher.log_levels import DEFAULT_LOG_LEVEL, LOG_LEVELS, LOG_LEVELS_TEXT

__all__ = [
    "DEFAULT_GPU_ANNOTATIONS",
    "RELOADABLE",
    "RunSettings",
    "SettingsError",
    "layered",
    "parse_listen",
    "parse_settings",
    "read_settings_file",
]

RELOADABLE = frozenset(
    {"sample_interval", "retention_raw", "retention_1m", "retention_1h", "log_level"}
)
"""Keys a changed config file applies without a restart; the rest log "restart to apply"."""

DEFAULT_GPU_ANNOTATIONS = (
    "xidwatch.io/gpus",
    "nvidia.com/use-gpuuuid",
    "hami.io/vgpu-devices-allocated",
    "ALIYUN_COM_GPU_IDX",
)
# The store owns folding's and retention's defaults (it imports nothing of ours); the
# settings take them from there.
_FLOOD = FloodPolicy()
_RETENTION = RetentionPolicy()
_UNITS_MS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


class SettingsError(XidwatchError):
    """A setting is malformed or unknown; the message names it and what is valid."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9607`` for IPv6) -> (host, port); port 0 picks a free one.

    An empty host means every address. A ValueError says what is wrong with ``text``.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: use HOST:PORT, e.g. 0.0.0.0:9607")
    return host.strip("[]") or "0.0.0.0", int(port)


def _duration_text(ms: int) -> str:
    """``172800000`` -> ``2d``: a duration in the largest unit that states it exactly."""
    unit, size = next(((u, s) for u, s in _UNITS_MS if ms % s == 0), ("s", 1_000))
    return f"{ms // size}{unit}"


DEFAULT_PORT = 9607
"""The HTTP port: free on GPU nodes (dcgm-exporter has 9400, node-exporter 9100).

The gateway dials it on pods whose port has no name."""


class RunSettings(BaseModel):
    """Settings of ``xidwatch run`` by key, each with its default and its help."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: Path = Field(default=DEFAULT_DB, description=DB_HELP)
    node: str | None = Field(default=None, description="Node name; default hostname.")
    kmsg: bool = Field(default=True, description="Read /dev/kmsg.")
    kmsg_path: Path = Field(default=KMSG_PATH, description="The kernel log device.")
    kmsg_any_facility: bool = Field(
        default=False,
        description="Also accept records user space wrote to /dev/kmsg "
        "(tests only: lets root forge XIDs).",
    )
    accept_injected: bool = Field(
        default=False,
        description="Store the synthetic XIDs `xidwatch inject` writes (marked injected); "
        "other user-space records stay ignored.",
    )
    log_files: tuple[Path, ...] = Field(
        default=(), description="Also tail this kernel log file (repeatable)."
    )
    log_file_from_start: bool = Field(
        default=False, description="Read tailed files from their start the first time."
    )
    nvml: bool = Field(default=True, description="Sample GPUs through NVML.")
    sample_interval: float = Field(
        default=10.0, ge=1.0, description="Seconds between NVML samples."
    )
    simulate: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Run N simulated GPUs (behind the real pynvml) and an in-memory kernel "
        "log instead of the host's.",
    )
    simulate_model: str | None = Field(
        default=None, description="Simulated GPU model: H100-80GB, A100-80GB or T4."
    )
    scenario: str | None = Field(
        default=None,
        description="With --simulate: a bundled scenario name or a scenario YAML file.",
    )
    scenario_speed: float = Field(
        default=1.0, ge=0.01, description="Scenario time runs this many times faster."
    )
    retention_raw: str = Field(
        default=_duration_text(_RETENTION.raw_ms), description="Keep raw samples this long."
    )
    retention_1m: str = Field(
        default=_duration_text(_RETENTION.minute_ms), description="Keep 1-minute rollups this long."
    )
    retention_1h: str = Field(
        default=_duration_text(_RETENTION.hour_ms), description="Keep 1-hour rollups this long."
    )
    listen: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORT}",
        description="HOST:PORT for /mcp, /metrics, /healthz and /readyz (port 0: any free port).",
    )
    http: bool = Field(default=True, description="Serve the HTTP port.")
    auth_token_file: Path | None = Field(
        default=None, description="Require this bearer token on /mcp."
    )
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Extra Host header names MCP accepts (Service name, pod IP); repeatable.",
    )
    flood_burst: int = Field(
        default=_FLOOD.burst, ge=1, description="Individual rows per GPU and code before folding."
    )
    flood_per_minute: float = Field(
        default=_FLOOD.per_minute,
        ge=0.0,
        description="Individual rows per GPU and code per minute after that; 0 = never fold.",
    )
    log_level: str = Field(default=DEFAULT_LOG_LEVEL, description="The global --log-level.")
    host_proc: Path = Field(
        default=Path("/proc"),
        description="The host's /proc (in a pod: mounted at /host/proc) for the names and "
        "cgroups of the host pids NVML and XID lines give.",
    )
    kubernetes: bool = Field(
        default=True,
        description="Attribute GPU processes and XIDs to pods when a cluster is found "
        "(in-cluster service account or kubeconfig).",
    )
    kubeconfig: Path | None = Field(default=None, description="kubeconfig to use off cluster.")
    pod_refresh: str = Field(default="30s", description="Re-list this node's pods this often.")
    gpu_resources: tuple[str, ...] = Field(
        default=("nvidia.com/gpu",), description="Extended resource that is a GPU; repeatable."
    )
    gpu_annotations: tuple[str, ...] = Field(
        default=DEFAULT_GPU_ANNOTATIONS,
        description="Pod annotation naming its GPUs by UUID or index (ours, HAMi's and "
        "gpushare's by default); repeatable.",
    )
    k8s_events: bool = Field(
        default=False,
        description="Post a Kubernetes Event on the Node (and pod) for fatal XIDs; needs the "
        "k8s-events RBAC component.",
    )
    k8s_event_actions: tuple[str, ...] = Field(
        default=tuple(sorted(FATAL_LABELS)),
        description="Catalog actions that post an Event, comma-separated.",
    )
    node_condition: str | None = Field(
        default=None,
        pattern=r"^([A-Z][A-Za-z0-9]{0,62})?$",
        description="Also set this Node condition (e.g. GpuXidFatal) on such an XID.",
    )
    node_condition_quiet: str = Field(
        default="1h", description="Clear the Node condition after this long without such an XID."
    )

    @field_validator(
        "retention_raw", "retention_1m", "retention_1h", "pod_refresh", "node_condition_quiet"
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration_ms(value)
        except XidwatchError as e:
            raise ValueError(str(e)) from e
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:  # empty: no HTTP port
            parse_listen(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in LOG_LEVELS:
            return value.lower()
        raise ValueError(f"{value!r}: use {LOG_LEVELS_TEXT}")

    @field_validator(
        "log_files", "allowed_hosts", "gpu_resources", "gpu_annotations", mode="before"
    )
    @classmethod
    def _listify(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("k8s_event_actions", mode="before")
    @classmethod
    def _actions(cls, value: object) -> object:
        """``RESET_GPU,RESTART_BM`` (a flag or variable) or a YAML list."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return [a.strip().upper() for v in value for a in str(v).split(",") if a.strip()]
        return value


def parse_settings(values: Mapping[str, object], *, origin: Callable[[str], str]) -> RunSettings:
    """Validate one layer; ``origin(key)`` says where a key came from, for the error."""
    try:
        return RunSettings.model_validate(dict(values))
    except ValidationError as e:
        raise SettingsError("; ".join(_describe(err, origin) for err in e.errors())) from e


def read_settings_file(path: Path) -> RunSettings:
    """The settings a YAML file sets (``key: value`` at the top level; ``-`` reads as ``_``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SettingsError(f"cannot read config file {path}: {e.strerror or e}") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SettingsError(f"config file {path} is not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"config file {path}: expected `key: value` lines at the top level, "
            f"not a {type(data).__name__}"
        )
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    return parse_settings(values, origin=lambda key: f"config file {path}: {key}")


def layered(*layers: RunSettings) -> RunSettings:
    """The layers stacked over the defaults in order: a key set in a later layer wins."""
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({key: getattr(layer, key) for key in layer.model_fields_set})
    return RunSettings.model_validate(values)


def _describe(err: ErrorDetails, origin: Callable[[str], str]) -> str:
    key = str(err["loc"][0]) if err["loc"] else "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{origin(key)}: unknown setting; valid keys: {', '.join(RunSettings.model_fields)}"
    ctx = err.get("ctx") or {}
    if err["type"] == "value_error" and "error" in ctx:
        return f"{origin(key)}: {ctx['error']}"  # our validators' messages quote the value
    return f"{origin(key)}: {err['msg']} (got {err['input']!r})"
