"""``xidwatch run``: the node daemon, configured from flags > environment > config file.

Every option is a key of :class:`~watcher.settings.RunSettings`, which owns its default
and help; its variable is derived from the key (:func:`xidwatch.options.env_name`). The
options default to unset: typer says which of them the user gave
(``Context.get_parameter_source``: the command line or the environment), and those form
the top layer over the config file and the model's defaults, so a key in the file beats a
default but never a flag or a variable.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from mcp_server.http_settings import HttpSettings
from watcher.config import DaemonConfig, daemon_config
from watcher.daemon import Daemon
from watcher.logs import configure_logging
from watcher.records import Service
from watcher.reload import ConfigReloader
from watcher.settings import (
    RunSettings,
    layered,
    parse_settings,
    read_settings_file,
)
from xidwatch import serving
from xidwatch.options import env_name
from xidwatch.signals import stop_on_signal

__all__ = ["run"]

_EXPLICIT = ("COMMANDLINE", "ENVIRONMENT")  # ParameterSource names: what the user gave


def _setting(key: str, *decls: str) -> Any:
    """The option for setting ``key``: unset unless given; help, variable and the default
    shown all come from the settings model."""
    default = RunSettings.model_fields[key].default
    shown: str | bool = False if default is None else str(default)
    if isinstance(default, bool):
        flag = key.replace("_", "-")
        shown = flag if default else f"no-{flag}"
    elif isinstance(default, tuple):
        shown = ",".join(str(v) for v in default) or False
    return typer.Option(
        *decls,
        envvar=env_name(key),
        help=RunSettings.model_fields[key].description,
        show_default=shown,
    )


def run(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar=env_name("config"),
            dir_okay=False,
            help="YAML settings file (keys: the long flags with _ for -); flags and "
            "XIDWATCH_* variables win over it. Watched: sample_interval, retention_* and "
            "log_level apply without a restart.",
        ),
    ] = None,
    db: Annotated[Path | None, _setting("db", "--db")] = None,
    node: Annotated[str | None, _setting("node")] = None,
    kmsg: Annotated[bool | None, _setting("kmsg", "--kmsg/--no-kmsg")] = None,
    kmsg_path: Annotated[Path | None, _setting("kmsg_path")] = None,
    kmsg_any_facility: Annotated[bool | None, _setting("kmsg_any_facility")] = None,
    accept_injected: Annotated[bool | None, _setting("accept_injected")] = None,
    log_files: Annotated[list[Path] | None, _setting("log_files", "--log-file")] = None,
    log_file_from_start: Annotated[bool | None, _setting("log_file_from_start")] = None,
    nvml: Annotated[bool | None, _setting("nvml", "--nvml/--no-nvml")] = None,
    sample_interval: Annotated[float | None, _setting("sample_interval")] = None,
    simulate: Annotated[int | None, _setting("simulate")] = None,
    simulate_model: Annotated[str | None, _setting("simulate_model")] = None,
    scenario: Annotated[str | None, _setting("scenario")] = None,
    scenario_speed: Annotated[float | None, _setting("scenario_speed")] = None,
    retention_raw: Annotated[str | None, _setting("retention_raw")] = None,
    retention_1m: Annotated[str | None, _setting("retention_1m")] = None,
    retention_1h: Annotated[str | None, _setting("retention_1h")] = None,
    listen: Annotated[str | None, _setting("listen")] = None,
    http: Annotated[bool | None, _setting("http", "--http/--no-http")] = None,
    auth_token_file: Annotated[Path | None, _setting("auth_token_file")] = None,
    allowed_hosts: Annotated[list[str] | None, _setting("allowed_hosts", "--allowed-host")] = None,
    flood_burst: Annotated[int | None, _setting("flood_burst")] = None,
    flood_per_minute: Annotated[float | None, _setting("flood_per_minute")] = None,
    host_proc: Annotated[Path | None, _setting("host_proc")] = None,
    kubernetes: Annotated[
        bool | None, _setting("kubernetes", "--kubernetes/--no-kubernetes")
    ] = None,
    kubeconfig: Annotated[Path | None, _setting("kubeconfig")] = None,
    pod_refresh: Annotated[str | None, _setting("pod_refresh")] = None,
    gpu_resources: Annotated[list[str] | None, _setting("gpu_resources", "--gpu-resource")] = None,
    gpu_annotations: Annotated[
        list[str] | None, _setting("gpu_annotations", "--gpu-annotation")
    ] = None,
    k8s_events: Annotated[bool | None, _setting("k8s_events")] = None,
    k8s_event_actions: Annotated[str | None, _setting("k8s_event_actions")] = None,
    node_condition: Annotated[str | None, _setting("node_condition")] = None,
    node_condition_quiet: Annotated[str | None, _setting("node_condition_quiet")] = None,
) -> None:
    """Run the node daemon: record every XID and sample every GPU until SIGTERM."""
    given = _given(ctx)
    if config is not None:
        config = config.absolute()  # not resolve(): a ConfigMap swaps a symlink above it
    from_file = read_settings_file(config) if config is not None else RunSettings()
    settings = layered(from_file, given)
    cfg = daemon_config(settings, config_file=config)
    log_json: bool | None = ctx.parent.params.get("log_json") if ctx.parent else None
    if settings.log_level != given.log_level:  # the file set it (the command line's applies)
        configure_logging(cfg.log_level, json=log_json)
    daemon = Daemon(cfg)
    services: list[Service] = []
    http_settings = HttpSettings.of_run(settings)
    if http_settings is not None:
        services.append(serving.http_service(daemon, http_settings))
    if config is not None:

        def apply(new: DaemonConfig) -> None:
            daemon.reconfigure(new)
            configure_logging(new.log_level, json=log_json)

        services.append(ConfigReloader(config, above=given, current=settings, apply=apply))
    asyncio.run(_run_daemon(daemon, services))


def _given(ctx: typer.Context) -> RunSettings:
    """The settings given on the command line or in the environment, this command's and the
    global ``--log-level``; validated on their own, so an error names the flag or variable."""
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    # typer's contexts; the parent's is its vendored click's base class, hence Any
    owners: list[tuple[Any, str]] = [(ctx, name) for name in ctx.params if name != "config"]
    if ctx.parent is not None and "log_level" in ctx.parent.params:
        owners.append((ctx.parent, "log_level"))  # the global option
    for owner, key in owners:
        source = owner.get_parameter_source(key)
        if source is None or source.name not in _EXPLICIT:
            continue
        values[key] = owner.params[key]
        param = next(p for p in owner.command.params if p.name == key)
        envvar = getattr(param, "envvar", None)
        if source.name == "ENVIRONMENT" and isinstance(envvar, str):
            origins[key] = envvar
        else:
            origins[key] = param.opts[0] if param.opts else key
    return parse_settings(values, origin=lambda key: origins.get(key, key))


async def _run_daemon(daemon: Daemon, services: list[Service]) -> None:
    with stop_on_signal() as stop:  # a SIGTERM while starting: start, then stop cleanly
        await daemon.run(stop, services=services)
