"""``xidwatch run``: the node daemon, configured from flags > environment > config file.

Typer parses the flags and their ``XIDWATCH_*`` variables and says which of them the user
gave (``Context.get_parameter_source``: the command line or the environment). Those form
the top layer, the config file the middle one and typer's defaults the bottom one, so a
key in the file beats a default but never a flag or a variable (see
:mod:`watcher.settings`).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from store.actions import FATAL_LABELS
from watcher.config import DaemonConfig
from watcher.daemon import Daemon
from watcher.logs import configure_logging
from watcher.records import Service
from watcher.reload import ConfigReloader
from watcher.settings import (
    RunSettings,
    daemon_config,
    layered,
    parse_settings,
    read_settings_file,
)
from xidwatch import serving
from xidwatch.options import DEFAULT_DB, DbOption
from xidwatch.signals import termination_requested

__all__ = ["run"]

_EXPLICIT = ("COMMANDLINE", "ENVIRONMENT")  # ParameterSource names: what the user gave
_KEYS = {  # parameter -> setting, where a repeatable flag's name is singular
    "log_file": "log_files",
    "allowed_host": "allowed_hosts",
    "gpu_resource": "gpu_resources",
    "gpu_annotation": "gpu_annotations",
}


def run(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="XIDWATCH_CONFIG",
            dir_okay=False,
            help="YAML settings file (keys: the long flags with _ for -); flags and "
            "XIDWATCH_* variables win over it. Watched: sample_interval, retention_* and "
            "log_level apply without a restart.",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB,
    node: Annotated[
        str | None, typer.Option(envvar="XIDWATCH_NODE", help="Node name; default hostname.")
    ] = None,
    kmsg: Annotated[
        bool, typer.Option("--kmsg/--no-kmsg", envvar="XIDWATCH_KMSG", help="Read /dev/kmsg.")
    ] = True,
    kmsg_path: Annotated[Path, typer.Option(envvar="XIDWATCH_KMSG_PATH")] = Path("/dev/kmsg"),
    kmsg_any_facility: Annotated[
        bool,
        typer.Option(
            envvar="XIDWATCH_KMSG_ANY_FACILITY",
            help="Also accept records user space wrote to /dev/kmsg "
            "(tests only: lets root forge XIDs).",
        ),
    ] = False,
    accept_injected: Annotated[
        bool,
        typer.Option(
            envvar="XIDWATCH_ACCEPT_INJECTED",
            help="Store the synthetic XIDs `xidwatch inject` writes (marked injected); "
            "other user-space records stay ignored.",
        ),
    ] = False,
    log_file: Annotated[
        list[Path] | None,
        typer.Option(
            envvar="XIDWATCH_LOG_FILES", help="Also tail this kernel log file (repeatable)."
        ),
    ] = None,
    log_file_from_start: Annotated[
        bool,
        typer.Option(
            envvar="XIDWATCH_LOG_FILE_FROM_START",
            help="Read tailed files from their start the first time.",
        ),
    ] = False,
    nvml: Annotated[
        bool,
        typer.Option("--nvml/--no-nvml", envvar="XIDWATCH_NVML", help="Sample GPUs through NVML."),
    ] = True,
    sample_interval: Annotated[
        float,
        typer.Option(
            envvar="XIDWATCH_SAMPLE_INTERVAL", min=1.0, help="Seconds between NVML samples."
        ),
    ] = 10.0,
    simulate: Annotated[
        int,
        typer.Option(
            envvar="XIDWATCH_SIMULATE",
            min=0,
            max=64,
            help="Run N simulated GPUs (behind the real pynvml) and an in-memory kernel log "
            "instead of the host's.",
        ),
    ] = 0,
    simulate_model: Annotated[
        str | None,
        typer.Option(
            envvar="XIDWATCH_SIMULATE_MODEL",
            help="Simulated GPU model: H100-80GB, A100-80GB or T4.",
        ),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            envvar="XIDWATCH_SCENARIO",
            help="With --simulate: a bundled scenario name or a scenario YAML file.",
        ),
    ] = None,
    scenario_speed: Annotated[
        float,
        typer.Option(
            envvar="XIDWATCH_SCENARIO_SPEED",
            min=0.01,
            help="Scenario time runs this many times faster.",
        ),
    ] = 1.0,
    retention_raw: Annotated[
        str,
        typer.Option(envvar="XIDWATCH_RETENTION_RAW", help="Keep raw samples this long (48h)."),
    ] = "48h",
    retention_1m: Annotated[
        str,
        typer.Option(envvar="XIDWATCH_RETENTION_1M", help="Keep 1-minute rollups this long."),
    ] = "30d",
    retention_1h: Annotated[
        str,
        typer.Option(envvar="XIDWATCH_RETENTION_1H", help="Keep 1-hour rollups this long."),
    ] = "400d",
    listen: Annotated[
        str,
        typer.Option(
            envvar="XIDWATCH_LISTEN",
            help="HOST:PORT for /mcp, /metrics, /healthz and /readyz (port 0: any free port).",
        ),
    ] = "127.0.0.1:9607",
    http: Annotated[
        bool,
        typer.Option("--http/--no-http", envvar="XIDWATCH_HTTP", help="Serve the HTTP port."),
    ] = True,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(envvar="XIDWATCH_AUTH_TOKEN_FILE", help="Require this bearer token on /mcp."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="XIDWATCH_ALLOWED_HOSTS",
            help="Extra Host header names MCP accepts (Service name, pod IP); repeatable.",
        ),
    ] = None,
    flood_burst: Annotated[
        int,
        typer.Option(
            envvar="XIDWATCH_FLOOD_BURST",
            min=1,
            help="Individual rows per GPU and code before folding.",
        ),
    ] = 20,
    flood_per_minute: Annotated[
        float,
        typer.Option(
            envvar="XIDWATCH_FLOOD_PER_MINUTE",
            min=0.0,
            help="Individual rows per GPU and code per minute after that; 0 = never fold.",
        ),
    ] = 6.0,
    host_proc: Annotated[
        Path,
        typer.Option(
            envvar="XIDWATCH_HOST_PROC",
            help="The host's /proc (in a pod: mounted at /host/proc) for the names and "
            "cgroups of the host pids NVML and XID lines give.",
        ),
    ] = Path("/proc"),
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes/--no-kubernetes",
            envvar="XIDWATCH_KUBERNETES",
            help="Attribute GPU processes and XIDs to pods when a cluster is found "
            "(in-cluster service account or kubeconfig).",
        ),
    ] = True,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(envvar="XIDWATCH_KUBECONFIG", help="kubeconfig to use off cluster."),
    ] = None,
    pod_refresh: Annotated[
        str,
        typer.Option(envvar="XIDWATCH_POD_REFRESH", help="Re-list this node's pods this often."),
    ] = "30s",
    gpu_resource: Annotated[
        list[str] | None,
        typer.Option(
            envvar="XIDWATCH_GPU_RESOURCES",
            help="Extended resource that is a GPU (default nvidia.com/gpu); repeatable.",
        ),
    ] = None,
    gpu_annotation: Annotated[
        list[str] | None,
        typer.Option(
            envvar="XIDWATCH_GPU_ANNOTATIONS",
            help="Pod annotation naming its GPUs by UUID or index; repeatable "
            "(default: xidwatch.io/gpus and the HAMi and gpushare keys).",
        ),
    ] = None,
    k8s_events: Annotated[
        bool,
        typer.Option(
            envvar="XIDWATCH_K8S_EVENTS",
            help="Post a Kubernetes Event on the Node (and pod) for fatal XIDs; needs the "
            "k8s-events RBAC component.",
        ),
    ] = False,
    k8s_event_actions: Annotated[
        str,
        typer.Option(
            envvar="XIDWATCH_K8S_EVENT_ACTIONS",
            help="Catalog actions that post an Event, comma-separated.",
        ),
    ] = ",".join(sorted(FATAL_LABELS)),
    node_condition: Annotated[
        str | None,
        typer.Option(
            envvar="XIDWATCH_NODE_CONDITION",
            help="Also set this Node condition (e.g. GpuXidFatal) on such an XID.",
        ),
    ] = None,
    node_condition_quiet: Annotated[
        str,
        typer.Option(
            envvar="XIDWATCH_NODE_CONDITION_QUIET",
            help="Clear the Node condition after this long without such an XID.",
        ),
    ] = "1h",
) -> None:
    """Run the node daemon: record every XID and sample every GPU until SIGTERM."""
    defaults, explicit = _layers(ctx)
    if config is not None:
        config = config.absolute()  # not resolve(): a ConfigMap swaps a symlink above it
    from_file = read_settings_file(config) if config is not None else RunSettings()
    settings = layered(defaults, from_file, explicit)
    cfg = daemon_config(settings, config_file=config)
    log_json: bool | None = ctx.parent.params.get("log_json") if ctx.parent else None
    if settings.log_level != defaults.log_level:  # the file set it (a flag already applied)
        configure_logging(cfg.log_level, json=log_json)
    daemon = Daemon(cfg)
    services: list[Service] = []
    if cfg.listen:
        services.append(
            serving.http_service(
                daemon,
                cfg.listen,
                token_file=cfg.auth_token_file,
                extra_hosts=list(cfg.allowed_hosts),
            )
        )
    if config is not None:

        def apply(new: DaemonConfig) -> None:
            daemon.reconfigure(new)
            configure_logging(new.log_level, json=log_json)

        services.append(
            ConfigReloader(config, below=defaults, above=explicit, current=settings, apply=apply)
        )
    asyncio.run(_run_daemon(daemon, services))


def _layers(ctx: typer.Context) -> tuple[RunSettings, RunSettings]:
    """(defaults, given): this command's and the global ``--log-level``, by where they came from.

    Each layer is validated on its own, so an error names the flag or variable at fault.
    """
    below: dict[str, object] = {}
    above: dict[str, object] = {}
    origins: dict[str, str] = {}
    # typer's contexts; the parent's is its vendored click's base class, hence Any
    owners: list[tuple[Any, str]] = [(ctx, name) for name in ctx.params if name != "config"]
    if ctx.parent is not None and "log_level" in ctx.parent.params:
        owners.append((ctx.parent, "log_level"))  # the global option
    for owner, name in owners:
        key = _KEYS.get(name, name)
        source = owner.get_parameter_source(name)
        if source is not None and source.name in _EXPLICIT:
            above[key] = owner.params[name]
            param = next(p for p in owner.command.params if p.name == name)
            envvar = getattr(param, "envvar", None)
            if source.name == "ENVIRONMENT" and isinstance(envvar, str):
                origins[key] = envvar
            else:
                origins[key] = param.opts[0] if param.opts else name
        else:
            below[key] = owner.params[name]
    return (
        parse_settings(below, origin=lambda key: f"default {key}"),
        parse_settings(above, origin=lambda key: origins.get(key, key)),
    )


async def _run_daemon(daemon: Daemon, services: list[Service]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if termination_requested():  # SIGTERM while starting: start, then stop cleanly
        stop.set()
    await daemon.run(stop, services=services)
