"""``xidwatch gateway``: one MCP endpoint for the cluster, answering by asking every node."""

from __future__ import annotations

import asyncio
import signal
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
    KubeNodes,
    NodeRef,
    RetryPolicy,
    build_gateway_server,
    parse_node_spec,
)
from mcp_server.http import HttpService, allowed_hosts, build_http_app, read_token
from store.errors import XidwatchError
from watcher.k8s.client import connect_kubernetes
from xidwatch.serving import parse_listen

__all__ = ["gateway"]

_NO_CLUSTER = (
    "no Kubernetes API to discover node daemons from (not in a pod with a service account, "
    "no usable kubeconfig): name them with --node NAME=URL (repeatable) or give --kubeconfig"
)


def gateway(
    listen: Annotated[
        str,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_LISTEN",
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
        str, typer.Option(envvar="XIDWATCH_GATEWAY_NAMESPACE", help="Namespace of the daemons.")
    ] = DEFAULT_NAMESPACE,
    selector: Annotated[
        str,
        typer.Option(envvar="XIDWATCH_GATEWAY_SELECTOR", help="Label selector of their pods."),
    ] = DEFAULT_SELECTOR,
    node_port: Annotated[
        int,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_NODE_PORT",
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
    refresh: Annotated[
        float,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_REFRESH", min=1.0, help="Seconds between pod listings."
        ),
    ] = 30.0,
    concurrency: Annotated[
        int,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_CONCURRENCY", min=1, max=1024, help="Node calls at once."
        ),
    ] = 32,
    node_timeout: Annotated[
        float,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_NODE_TIMEOUT",
            min=0.1,
            max=120.0,
            help="Seconds one node may take, retries included.",
        ),
    ] = 5.0,
    retries: Annotated[
        int,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_RETRIES",
            min=0,
            max=10,
            help="Retries of a node call after a connection error, timeout or HTTP 5xx.",
        ),
    ] = 2,
    breaker_failures: Annotated[
        int,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_BREAKER_FAILURES",
            min=1,
            max=100,
            help="Failed calls in a row that open a node's circuit breaker.",
        ),
    ] = 3,
    breaker_cooldown: Annotated[
        float,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_BREAKER_COOLDOWN",
            min=0.1,
            max=3600.0,
            help="Seconds an open breaker waits before one trial call.",
        ),
    ] = 30.0,
    node_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="XIDWATCH_GATEWAY_NODE_TOKEN_FILE",
            help="Bearer token the node daemons require on /mcp.",
        ),
    ] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="XIDWATCH_AUTH_TOKEN_FILE",
            help="Require this bearer token on the gateway's /mcp.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="XIDWATCH_ALLOWED_HOSTS",
            help="Extra Host header names the gateway's /mcp accepts (Service name); repeatable.",
        ),
    ] = None,
) -> None:
    """Serve MCP for the whole cluster: every node daemon's tools (with a node argument) and
    fleet-wide questions, found through the Kubernetes API or named with --node."""
    host, port = parse_listen(listen)
    settings = GatewaySettings(
        nodes=tuple(parse_node_spec(spec) for spec in node or ()),
        namespace=namespace,
        selector=selector,
        node_port=node_port,
        kubeconfig=kubeconfig,
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
    refresh_s: float
    policy: CallPolicy
    node_token: str | None
    stdio: bool
    host: str
    port: int
    auth_token: str | None
    allowed_hosts: tuple[str, ...]


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
    options = {"policy": s.policy, "token": s.node_token, "refresh_s": s.refresh_s}
    if s.nodes:
        return Fleet.static(s.nodes, **options)
    api = await connect_kubernetes(s.kubeconfig, off="the gateway cannot discover node daemons")
    if api is None:
        raise GatewayError(_NO_CLUSTER)
    lister = KubeNodes(api, namespace=s.namespace, selector=s.selector, default_port=s.node_port)
    source = f"Kubernetes: pods in {s.namespace} matching {s.selector}"
    return Fleet(lister, source=source, policy=s.policy, token=s.node_token, refresh_s=s.refresh_s)


async def _until_signal(service: HttpService) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn drains its connections first)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
