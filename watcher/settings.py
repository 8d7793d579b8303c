"""``xidwatch run``'s settings: validated layers (defaults < file < environment < flags).

Every setting has one name, the long flag's with ``_`` for ``-`` (``--sample-interval``
is ``sample_interval`` in the YAML file and ``XIDWATCH_SAMPLE_INTERVAL`` in the
environment); the repeatable ``--log-file`` and ``--allowed-host`` are the lists
``log_files`` and ``allowed_hosts``. Each layer is a :class:`RunSettings` with only the
keys it sets; :func:`layered` stacks them and :func:`daemon_config` turns the result into
the one :class:`DaemonConfig`. Errors name the key, where it came from and what is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from store.errors import XidwatchError
from store.flood import FloodPolicy
from store.retention import RetentionPolicy
from store.windows import parse_duration_ms
from watcher.config import DaemonConfig, KubernetesConfig, SimulationSpec

__all__ = [
    "RELOADABLE",
    "RunSettings",
    "SettingsError",
    "daemon_config",
    "layered",
    "parse_settings",
    "read_settings_file",
]

T = TypeVar("T")

RELOADABLE = frozenset(
    {"sample_interval", "retention_raw", "retention_1m", "retention_1h", "log_level"}
)
"""Keys a changed config file applies without a restart; the rest log "restart to apply"."""


class SettingsError(XidwatchError):
    """A setting is malformed or unknown; the message names it and what is valid."""


class RunSettings(BaseModel):
    """Settings of ``xidwatch run`` by key; None means "not set in this layer"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: Path | None = None
    node: str | None = None
    kmsg: bool | None = None
    kmsg_path: Path | None = None
    kmsg_any_facility: bool | None = None
    accept_injected: bool | None = None
    log_files: list[Path] | None = None
    log_file_from_start: bool | None = None
    nvml: bool | None = None
    sample_interval: float | None = Field(default=None, ge=1.0)
    simulate: int | None = Field(default=None, ge=0, le=64)
    simulate_model: str | None = None
    scenario: str | None = None
    scenario_speed: float | None = Field(default=None, ge=0.01)
    retention_raw: str | None = None
    retention_1m: str | None = None
    retention_1h: str | None = None
    listen: str | None = None
    http: bool | None = None
    auth_token_file: Path | None = None
    allowed_hosts: list[str] | None = None
    flood_burst: int | None = Field(default=None, ge=1)
    flood_per_minute: float | None = Field(default=None, ge=0.0)
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    host_proc: Path | None = None
    kubernetes: bool | None = None
    kubeconfig: Path | None = None
    pod_refresh: str | None = None
    gpu_resources: list[str] | None = None
    gpu_annotations: list[str] | None = None
    k8s_events: bool | None = None
    k8s_event_actions: list[str] | None = None
    node_condition: str | None = Field(default=None, pattern=r"^([A-Z][A-Za-z0-9]{0,62})?$")
    node_condition_quiet: str | None = None

    @field_validator(
        "retention_raw", "retention_1m", "retention_1h", "pod_refresh", "node_condition_quiet"
    )
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration_ms(value)
            except XidwatchError as e:
                raise ValueError(str(e)) from e
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value:
            _, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"{value!r}: use HOST:PORT, e.g. 0.0.0.0:9607")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

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
        if isinstance(value, list):
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
    """The layers stacked in order: a key set in a later layer wins."""
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(layer.model_dump(exclude_none=True))
    return RunSettings.model_validate(values)


def daemon_config(s: RunSettings, *, config_file: Path | None = None) -> DaemonConfig:
    """The daemon's configuration; keys no layer set keep :class:`DaemonConfig`'s defaults."""
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
    if s.db is None:
        raise SettingsError("no store path: give --db, XIDWATCH_DB or db in the config file")
    defaults, flood, retention = DaemonConfig(s.db), FloodPolicy(), RetentionPolicy()
    simulate = s.simulate or 0
    return DaemonConfig(
        db_path=s.db,
        node=s.node or defaults.node,
        kmsg=_pick(s.kmsg, defaults.kmsg),
        kmsg_path=s.kmsg_path or defaults.kmsg_path,
        kmsg_any_facility=_pick(s.kmsg_any_facility, defaults.kmsg_any_facility),
        accept_injected=_pick(s.accept_injected, defaults.accept_injected),
        log_files=tuple(s.log_files or ()),
        log_files_from_start=_pick(s.log_file_from_start, defaults.log_files_from_start),
        flood=FloodPolicy(
            burst=_pick(s.flood_burst, flood.burst),
            per_minute=_pick(s.flood_per_minute, flood.per_minute),
        ),
        nvml=_pick(s.nvml, defaults.nvml) or simulate > 0,
        sample_interval_s=_pick(s.sample_interval, defaults.sample_interval_s),
        simulate=SimulationSpec(simulate, s.simulate_model, s.scenario, s.scenario_speed or 1.0)
        if simulate
        else None,
        retention=RetentionPolicy(
            raw_ms=_duration_ms(s.retention_raw, retention.raw_ms),
            minute_ms=_duration_ms(s.retention_1m, retention.minute_ms),
            hour_ms=_duration_ms(s.retention_1h, retention.hour_ms),
        ),
        log_level=s.log_level or defaults.log_level,
        listen=(_pick(s.listen, defaults.listen) or None) if _pick(s.http, True) else None,
        auth_token_file=s.auth_token_file,
        allowed_hosts=tuple(s.allowed_hosts or ()),
        config_file=config_file,
        host_proc=s.host_proc or defaults.host_proc,
        kubernetes=_kubernetes(s),
    )


def _kubernetes(s: RunSettings) -> KubernetesConfig:
    k = KubernetesConfig()
    return KubernetesConfig(
        enabled=_pick(s.kubernetes, k.enabled),
        kubeconfig=s.kubeconfig,
        pod_refresh_s=_duration_ms(s.pod_refresh, round(k.pod_refresh_s * 1000)) / 1000,
        gpu_resources=tuple(s.gpu_resources or k.gpu_resources),
        gpu_annotations=tuple(s.gpu_annotations or k.gpu_annotations),
        events=_pick(s.k8s_events, k.events),
        event_actions=tuple(s.k8s_event_actions or k.event_actions),
        node_condition=s.node_condition or None,
        node_condition_quiet_s=_duration_ms(
            s.node_condition_quiet, round(k.node_condition_quiet_s * 1000)
        )
        / 1000,
    )


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value


def _duration_ms(text: str | None, default_ms: int) -> int:
    return default_ms if text is None else parse_duration_ms(text)


def _describe(err: ErrorDetails, origin: Callable[[str], str]) -> str:
    key = str(err["loc"][0]) if err["loc"] else "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{origin(key)}: unknown setting; valid keys: {', '.join(RunSettings.model_fields)}"
    ctx = err.get("ctx") or {}
    if err["type"] == "value_error" and "error" in ctx:
        return f"{origin(key)}: {ctx['error']}"  # our validators' messages quote the value
    return f"{origin(key)}: {err['msg']} (got {err['input']!r})"
