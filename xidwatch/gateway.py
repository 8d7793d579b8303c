"""``xidwatch gateway``: one MCP endpoint for the cluster, answering by asking every node."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from mcp_server.gateway import (
    DEFAULT_NAMESPACE,
    DEFAULT_NODE_PORT,
    DEFAULT_SELECTOR,
    CallPolicy,
    Fleet,
    GatewayError,
    NodeRef,
    RetryPolicy,
    build_gateway_server,
    parse_node_spec,
)
from mcp_server.gateway.connect import KubeTarget, kube_fleet
from mcp_server.gateway.discovery import DEFAULT_REFRESH_S
from mcp_server.gateway.history import PrometheusHistory, PrometheusSource
from mcp_server.http import HttpService, allowed_hosts, build_http_app, read_token
from store.errors import XidwatchError
from watcher.settings import parse_listen
from xidwatch.options import env_name
from xidwatch.signals import stop_on_signal

__all__ = ["gateway"]

_POLICY = CallPolicy()  # the defaults of how hard each node is tried


def gateway(
    listen: Annotated[
        str,
        typer.Option(
            envvar=env_name("gateway_listen"),
            help="HOST:PORT for /mcp, /metrics, /healthz and /readyz (port 0: any free port).",
        ),
    ] = "127.0.0.1:9410",
    stdio: Annotated[
        bool, typer.Option("--stdio", help="Serve MCP over stdio instead of HTTP.")
    ] = False,
    node: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=URL of a node daemon (repeatable); given, Kubernetes is not asked.",
        ),
    ] = None,
    namespace: Annotated[
        str, typer.Option(envvar=env_name("gateway_namespace"), help="Namespace of the daemons.")
    ] = DEFAULT_NAMESPACE,
    selector: Annotated[
        str,
        typer.Option(envvar=env_name("gateway_selector"), help="Label selector of their pods."),
    ] = DEFAULT_SELECTOR,
    node_port: Annotated[
        int,
        typer.Option(
            envvar=env_name("gateway_node_port"),
            min=1,
            max=65535,
            help="Port of a daemon pod without a container port named http.",
        ),
    ] = DEFAULT_NODE_PORT,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Kubeconfig for discovery; default: in-cluster, then $KUBECONFIG, ~/.kube/config.",
        ),
    ] = None,
    context: Annotated[
        list[str] | None,
        typer.Option(
            help="Kubeconfig context (default: its current context); repeat it for several "
            "clusters, whose nodes are then named CLUSTER/NODE."
        ),
    ] = None,
    all_contexts: Annotated[
        bool,
        typer.Option("--all-contexts", help="Every context in the kubeconfig, as --context."),
    ] = False,
    via: Annotated[
        str,
        typer.Option(
            envvar=env_name("gateway_via"),
            help="How node calls travel: direct (pod IPs), api-proxy (the API server's pod "
            "proxy, with the kubeconfig's credentials), or auto: direct in a pod, else api-proxy.",
        ),
    ] = "auto",
    refresh: Annotated[
        float,
        typer.Option(
            envvar=env_name("gateway_refresh"), min=1.0, help="Seconds between pod listings."
        ),
    ] = DEFAULT_REFRESH_S,
    concurrency: Annotated[
        int,
        typer.Option(
            envvar=env_name("gateway_concurrency"), min=1, max=1024, help="Node calls at once."
        ),
    ] = _POLICY.concurrency,
    node_timeout: Annotated[
        float,
        typer.Option(
            envvar=env_name("gateway_node_timeout"),
            min=0.1,
            max=120.0,
            help="Seconds one node may take, retries included.",
        ),
    ] = _POLICY.node_timeout_s,
    retries: Annotated[
        int,
        typer.Option(
            envvar=env_name("gateway_retries"),
            min=0,
            max=10,
            help="Retries of a node call after a connection error, timeout or HTTP 5xx.",
        ),
    ] = _POLICY.retry.retries,
    breaker_failures: Annotated[
        int,
        typer.Option(
            envvar=env_name("gateway_breaker_failures"),
            min=1,
            max=100,
            help="Failed calls in a row that open a node's circuit breaker.",
        ),
    ] = _POLICY.breaker_threshold,
    breaker_cooldown: Annotated[
        float,
        typer.Option(
            envvar=env_name("gateway_breaker_cooldown"),
            min=0.1,
            max=3600.0,
            help="Seconds an open breaker waits before one trial call.",
        ),
    ] = _POLICY.breaker_cooldown_s,
    node_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar=env_name("gateway_node_token_file"),
            help="Bearer token the node daemons require on /mcp.",
        ),
    ] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar=env_name("auth_token_file"),
            help="Require this bearer token on the gateway's /mcp.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar=env_name("allowed_hosts"),
            help="Extra Host header names the gateway's /mcp accepts (Service name); repeatable.",
        ),
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            envvar=env_name("gateway_prometheus_url"),
            help="Prometheus (or Thanos, Mimir, VictoriaMetrics) that scrapes the daemons: "
            "fleet history for nodes that are down, fleet_metric_trend.",
        ),
    ] = None,
    prometheus_node_label: Annotated[
        str,
        typer.Option(
            envvar=env_name("gateway_prometheus_node_label"),
            help="The target label that names the node on the daemons' series.",
        ),
    ] = "node",
    prometheus_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar=env_name("gateway_prometheus_token_file"),
            help="Bearer token for the Prometheus API.",
        ),
    ] = None,
    prometheus_user: Annotated[
        str | None,
        typer.Option(
            envvar=env_name("gateway_prometheus_user"),
            help="Basic-auth user for the Prometheus API (with --prometheus-password-file).",
        ),
    ] = None,
    prometheus_password_file: Annotated[
        Path | None,
        typer.Option(
            envvar=env_name("gateway_prometheus_password_file"),
            help="Basic-auth password for the Prometheus API.",
        ),
    ] = None,
    prometheus_ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar=env_name("gateway_prometheus_ca_file"),
            help="CA bundle that signed the Prometheus API's certificate.",
        ),
    ] = None,
) -> None:
    """Serve MCP for the whole cluster: every node daemon's tools (with a node argument) and
    fleet-wide questions, found through the Kubernetes API or named with --node."""
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--listen") from e
    settings = GatewaySettings(
        nodes=tuple(parse_node_spec(spec) for spec in node or ()),
        namespace=namespace,
        selector=selector,
        node_port=node_port,
        kubeconfig=kubeconfig,
        contexts=tuple(context or ()),
        all_contexts=all_contexts,
        via=via,
        refresh_s=refresh,
        policy=CallPolicy(
            concurrency=concurrency,
            node_timeout_s=node_timeout,
            retry=RetryPolicy(retries=retries),
            breaker_threshold=breaker_failures,
            breaker_cooldown_s=breaker_cooldown,
        ),
        node_token=_node_token(node_token_file),
        stdio=stdio,
        host=host,
        port=port,
        auth_token=read_token(auth_token_file) if auth_token_file else None,
        allowed_hosts=tuple(allowed_host or ()),
        prometheus=_prometheus(
            prometheus_url,
            prometheus_node_label,
            prometheus_token_file,
            prometheus_user,
            prometheus_password_file,
            prometheus_ca_file,
        ),
    )
    asyncio.run(_serve(settings))


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The gateway's configuration, built once from flags and environment."""

    nodes: tuple[NodeRef, ...]
    namespace: str
    selector: str
    node_port: int
    kubeconfig: Path | None
    contexts: tuple[str, ...]
    all_contexts: bool
    via: str
    refresh_s: float
    policy: CallPolicy
    node_token: str | None
    stdio: bool
    host: str
    port: int
    auth_token: str | None
    allowed_hosts: tuple[str, ...]
    prometheus: PrometheusSource | None = None


async def _serve(s: GatewaySettings) -> None:
    async with await _fleet(s) as fleet:
        server = build_gateway_server(fleet)
        if s.stdio:
            await server.run_stdio_async()
            return
        app = build_http_app(
            server,
            readiness=fleet.readiness,
            hosts=allowed_hosts(s.host, s.allowed_hosts),
            token=s.auth_token,
            registry=fleet.metrics.registry,
        )
        await _until_signal(HttpService(app, s.host, s.port))


async def _fleet(s: GatewaySettings) -> Fleet:
    history = PrometheusHistory(s.prometheus) if s.prometheus else None
    options = {
        "policy": s.policy,
        "token": s.node_token,
        "refresh_s": s.refresh_s,
        "history": history,
    }
    if s.nodes:
        if s.via == "api-proxy":
            raise GatewayError("--via api-proxy reaches pods found in Kubernetes, not --node URLs")
        return Fleet.static(s.nodes, **options)
    return await kube_fleet(
        KubeTarget(
            s.kubeconfig,
            s.contexts,
            s.all_contexts,
            s.namespace,
            s.selector,
            s.node_port,
            s.via,
        ),
        policy=s.policy,
        token=s.node_token,
        refresh_s=s.refresh_s,
        history=history,
    )


async def _until_signal(service: HttpService) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn drains its connections first)."""
    with stop_on_signal() as stop:
        serving = asyncio.create_task(service.run(), name="http")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        service.stop()
        stopping.cancel()
        await serving


def _node_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return read_token(path, flag="--node-token-file")
    except XidwatchError as e:
        raise GatewayError(str(e)) from e


def _prometheus(
    url: str | None,
    node_label: str,
    token_file: Path | None,
    user: str | None,
    password_file: Path | None,
    ca_file: Path | None,
) -> PrometheusSource | None:
    """Where the fleet's history is, with its credentials read once; None without a URL."""
    if url is None:
        if token_file or user or password_file or ca_file:
            raise GatewayError("the --prometheus-* options need --prometheus-url")
        return None
    if (user is None) != (password_file is None):
        raise GatewayError("--prometheus-user and --prometheus-password-file go together")
    try:
        token = read_token(token_file, flag="--prometheus-token-file") if token_file else None
        flag = "--prometheus-password-file"
        password = read_token(password_file, flag=flag) if password_file else None
    except XidwatchError as e:
        raise GatewayError(str(e)) from e
    auth = (user, password) if user is not None and password is not None else None
    return PrometheusSource(
        url, node_label=node_label, bearer_token=token, basic_auth=auth, ca_file=ca_file
    )
