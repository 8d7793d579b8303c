"""A fleet found through Kubernetes: the kubeconfig's clusters, and the way node calls travel.


``xidwatch gateway`` and ``kubectl xidwatch`` both start here, so a laptop reaches the nodes
the same way whichever is asked. ``via="auto"`` is ``direct`` in a pod (the pod network is
routable there) and ``api-proxy`` anywhere else (only the API server is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_server.gateway.clusters import ClusterNodes, UnloadedCluster
from mcp_server.gateway.discovery import (
    DEFAULT_NAMESPACE,
    DEFAULT_NODE_PORT,
    DEFAULT_REFRESH_S,
    DEFAULT_SELECTOR,
    KubeNodes,
    NodeLister,
)
from mcp_server.gateway.errors import GatewayError
from mcp_server.gateway.fanout import CallPolicy
from mcp_server.gateway.fleet import Fleet
from mcp_server.gateway.history import PrometheusHistory
from mcp_server.gateway.transport import (
    ApiProxyTransport,
    DirectTransport,
    Transport,
    Via,
    parse_via,
)
from watcher.k8s.client import connect_kubernetes, kubeconfig_contexts

__all__ = ["KubeTarget", "kube_fleet"]

NO_CLUSTER = (
    "no Kubernetes API to discover node daemons from (not in a pod with a service account, "
    "no usable kubeconfig): name them with --node NAME=URL (repeatable) or give --kubeconfig"
)
NO_TOKEN_THROUGH_PROXY = (
    "--node-token-file cannot be used --via api-proxy: the API server removes the "
    "Authorization header once it has authenticated you, so no daemon would get the token; "
    "use --via direct from inside the cluster, or run the daemons without --auth-token-file "
    "and let RBAC on pods/proxy decide who may ask them (docs/gateway.md)"
)
LOG_SAYS = " (the k8s_unavailable log line says why)"


@dataclass(frozen=True, slots=True)
class KubeTarget:
    """Which clusters and pods, and how to reach them (``via``: auto, direct or api-proxy).

    ``contexts``: kubeconfig contexts, one cluster each (none: the current context);
    ``all_contexts``: every context in the kubeconfig. With two or more, node names are
    ``cluster/node`` (:mod:`mcp_server.gateway.clusters`).
    """

    kubeconfig: Path | None = None
    contexts: tuple[str, ...] = ()
    all_contexts: bool = False
    namespace: str = DEFAULT_NAMESPACE
    selector: str = DEFAULT_SELECTOR
    node_port: int = DEFAULT_NODE_PORT
    via: str = "auto"


async def kube_fleet(
    target: KubeTarget,
    *,
    policy: CallPolicy | None = None,
    token: str | None = None,
    refresh_s: float = DEFAULT_REFRESH_S,
    environ: Mapping[str, str] | None = None,
    history: PrometheusHistory | None = None,
) -> Fleet:
    """A :class:`Fleet` over ``target``'s daemon pods; a :class:`GatewayError` says why not.

    ``history``: the daemons' series in Prometheus (``--prometheus-url``), if any.
    """
    env = os.environ if environ is None else environ
    explicit = target.kubeconfig is not None or bool(target.contexts) or target.all_contexts
    via = parse_via(target.via, in_pod=not explicit and bool(env.get("KUBERNETES_SERVICE_HOST")))
    if via == "api-proxy" and token:
        raise GatewayError(NO_TOKEN_THROUGH_PROXY)
    names = _contexts(target, env)
    options: dict[str, Any] = {"policy": policy, "refresh_s": refresh_s, "history": history}

    where = f"pods in {target.namespace} matching {target.selector}, via {via}"
    if len(names) < 2:
        context = names[0] if names else None
        lister, transport = await _cluster(target, context, via, token, env)
        if lister is None:
            raise GatewayError(NO_CLUSTER)
        return Fleet(lister, source=f"Kubernetes: {where}", transport=transport, **options)
    clusters: dict[str, NodeLister] = {}
    transports: dict[str, Transport] = {}
    for name in names:
        found, transport = await _cluster(target, name, via, token, env)
        if found is None:
            clusters[name] = UnloadedCluster(f"kubeconfig context {name} did not load{LOG_SAYS}")
        else:
            clusters[name], transports[name] = found, transport
    source = f"Kubernetes: {len(names)} clusters ({', '.join(names)}): {where}"
    first = next(iter(transports.values()), DirectTransport(token))
    return Fleet(
        ClusterNodes(clusters), source=source, transport=first, transports=transports, **options
    )


async def _cluster(
    target: KubeTarget, context: str | None, via: Via, token: str | None, env: Mapping[str, str]
) -> tuple[KubeNodes | None, Transport]:
    """One cluster's lister and transport; no lister when its API client did not load."""
    api = await connect_kubernetes(
        target.kubeconfig,
        context=context,
        environ=env,
        off="the gateway cannot discover node daemons"
        + (f" in context {context}" if context else ""),
    )
    if api is None:
        return None, DirectTransport(token)
    transport: Transport = ApiProxyTransport(api) if via == "api-proxy" else DirectTransport(token)
    lister = KubeNodes(
        api,
        namespace=target.namespace,
        selector=target.selector,
        default_port=target.node_port,
        transport=transport,
    )
    return lister, transport


def _contexts(target: KubeTarget, env: Mapping[str, str]) -> list[str]:
    """The contexts to serve, checked against the kubeconfig; [] for its current one."""
    if target.all_contexts and target.contexts:
        raise GatewayError("give --context NAME (repeatable) or --all-contexts, not both")
    if not target.all_contexts and len(target.contexts) < 2:
        return list(target.contexts)  # one cluster: the kubeconfig loader checks the name
    try:
        known = kubeconfig_contexts(target.kubeconfig, environ=env)
    except ValueError as e:
        raise GatewayError(str(e)) from e
    if known is None:
        raise GatewayError(NO_CLUSTER)
    if target.all_contexts:
        if not known:
            raise GatewayError("--all-contexts: the kubeconfig has no contexts")
        return known
    unknown = [name for name in target.contexts if name not in known]
    if unknown:
        raise GatewayError(
            f"--context {unknown[0]}: the kubeconfig has no such context; "
            f"it has {', '.join(known) or 'none'}"
        )
    return list(dict.fromkeys(target.contexts))
