"""``kubectl xidwatch``: the node CLI's questions, asked of a cluster's nodes from a laptop.

Installed as the ``kubectl-xidwatch`` executable, which kubectl runs for ``kubectl
xidwatch ...``. It finds the daemons and reaches them as the gateway does
(:mod:`mcp_server.gateway.connect`: the kubeconfig's current context or ``--context``, through
the API server's pod proxy unless told ``--via direct``) and prints the tables of
``xidwatch health`` and ``xidwatch xids``. The gateway, the MCP SDK and the Kubernetes client
load when a command runs, not when this module is imported.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from watcher.log_levels import LOG_LEVELS_TEXT
from xidwatch.conventions import (
    XidwatchCommand,
    XidwatchGroup,
    error_line,
    hoist_global_options,
    option_names,
)

if TYPE_CHECKING:
    from mcp_server.gateway.connect import KubeTarget
    from mcp_server.gateway.fanout import FanOutResult, NodeFailure
    from mcp_server.gateway.fleet import Fleet
    from store.errors import XidwatchError

__all__ = ["app", "run"]

DEFAULT_NAMESPACE = "gpu-monitoring"  # the gateway's (checked by tests/gateway/test_kubectl.py)
MAX_PAGE = 1000
T = TypeVar("T")


class _KubectlGroup(XidwatchGroup):
    """Cluster options anywhere: ``kubectl xidwatch health --node N --context prod`` too."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        valued, flags = option_names(self.params)
        return super().parse_args(ctx, hoist_global_options(args, valued=valued, flags=flags))


app = typer.Typer(
    name="kubectl-xidwatch",
    cls=_KubectlGroup,
    help="Ask the xidwatch daemons of a Kubernetes cluster about their GPUs, from anywhere the "
    "kubeconfig reaches the API server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _cluster(
    ctx: typer.Context,
    context: Annotated[
        list[str] | None,
        typer.Option(
            help="Kubeconfig context (default: the current one); repeatable: nodes are then "
            "CLUSTER/NODE."
        ),
    ] = None,
    all_contexts: Annotated[
        bool, typer.Option("--all-contexts", help="Every context in the kubeconfig.")
    ] = False,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="Namespace of the xidwatch daemons.")
    ] = DEFAULT_NAMESPACE,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Default: $KUBECONFIG, then ~/.kube/config."
        ),
    ] = None,
    via: Annotated[
        str,
        typer.Option(help="api-proxy (the API server's pod proxy), direct (pod IPs), or auto."),
    ] = "auto",
    timeout: Annotated[
        float, typer.Option(min=0.1, max=120.0, help="Seconds one node may take.")
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help=f"{LOG_LEVELS_TEXT}.")] = "warning",
) -> None:
    from mcp_server.gateway.connect import KubeTarget
    from watcher.logs import configure_logging

    configure_logging(log_level, json=False)
    target = KubeTarget(
        kubeconfig=kubeconfig,
        contexts=tuple(context or ()),
        all_contexts=all_contexts,
        namespace=namespace,
        via=via,
    )

    ctx.obj = (target, timeout)


@app.command(cls=XidwatchCommand)
def health(
    ctx: typer.Context,
    node: Annotated[str, typer.Option(help="The Kubernetes node whose GPUs to judge.")],
    since: Annotated[str, typer.Option(help="How far back XIDs count against a GPU.")] = "24h",
    gpu: Annotated[str | None, typer.Option(help="One GPU: index, UUID or PCI bus id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The node's JSON answer.")] = False,
) -> None:
    """Per GPU one verdict and the node's, as `xidwatch health` prints them on the node.

    Exit status: 0 every GPU ok, 3 a warning, 4 a critical GPU, 2 an error.
    """
    from xidwatch.remote import health_report
    from xidwatch.telemetry import health_exit_status, health_text

    args = {"since": since} | ({"gpu": gpu} if gpu else {})
    fan = _ask(ctx, lambda fleet: fleet.fan_out("get_gpu_health", args, names=[node]))
    for failure in fan.failures:
        raise _no_answer(failure)
    [answer] = fan.answers
    report = health_report(answer.result)
    typer.echo(json.dumps(answer.result, indent=2) if as_json else health_text(report))
    status = health_exit_status(report)
    if status:
        raise typer.Exit(status)


@app.command(cls=XidwatchCommand)
def xids(
    ctx: typer.Context,
    node: Annotated[list[str] | None, typer.Option(help="A node to ask (repeatable).")] = None,
    all_nodes: Annotated[bool, typer.Option("--all-nodes", help="Ask every node.")] = False,
    since: Annotated[str, typer.Option(help="Window start: 24h, 7d, or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(help="Window end (default now).")] = None,
    code: Annotated[list[int] | None, typer.Option(min=0, help="XID code (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="Events per node.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: events by node.")] = False,
) -> None:
    """XID events per node, newest first, in the table of `xidwatch xids`.

    Nodes that do not answer are named on stderr, with why; the exit status is then 1.
    """
    if all_nodes == bool(node):
        raise typer.BadParameter("give --node NAME (repeatable) or --all-nodes")

    from store.windows import format_ts

    async def ask(fleet: Fleet) -> FanOutResult:
        since_ms, until_ms = fleet.window(since, until)  # one window for every node
        args: dict[str, Any] = {"since": format_ts(since_ms), "until": format_ts(until_ms)}
        args |= {"codes": list(code or ()), "limit": limit}
        return await fleet.fan_out("list_xid_events", args, names=None if all_nodes else node)

    fan = _ask(ctx, ask)
    if as_json:
        typer.echo(json.dumps({a.node: a.result["events"] for a in fan.answers}, indent=2))
    else:
        typer.echo(_xid_tables(fan, since))
    for failure in fan.failures:
        typer.echo(f"{failure.node}: {failure.reason}: {failure.error}", err=True)
    if fan.failures:
        raise typer.Exit(1)


@app.command(cls=XidwatchCommand)
def trend(
    ctx: typer.Context,
    node: Annotated[str, typer.Option(help="The Kubernetes node whose GPUs to chart.")],
    metric: Annotated[str, typer.Option(help="Metric name (xidwatch trend --list-metrics).")] = (
        "temperature"
    ),
    gpu: Annotated[
        list[str] | None,
        typer.Option(help="GPU index, UUID or PCI bus id (repeatable; default all)."),
    ] = None,
    since: Annotated[str, typer.Option(help="Window start: 24h, 7d, or an ISO time.")] = "24h",
    buckets: Annotated[int, typer.Option(min=1, max=1000, help="Points per GPU.")] = 60,
    threshold: Annotated[
        float | None,
        typer.Option(help="A ceiling to judge the metric against (default: the metric's own)."),
    ] = None,
) -> None:
    """A metric per GPU over time, with its XIDs, the latest reading against a threshold and
    the slope: the chart of `xidwatch trend` on the node, drawn from its answers."""
    from store.telemetry import get_metric
    from xidwatch.charts import render_answers
    from xidwatch.remote import stored_xid

    m = get_metric(metric)
    answers, events = _ask(
        ctx, lambda fleet: _trend(fleet, node, m.name, gpu, since, buckets, threshold)
    )
    xids = [stored_xid(e) for e in events]
    width = max(20, min(120, shutil.get_terminal_size().columns - 4))
    typer.echo(render_answers(answers, xids, metric=m, width=width))


async def _trend(
    fleet: Fleet,
    node: str,
    metric: str,
    gpus: list[str] | None,
    since: str,
    buckets: int,
    threshold: float | None,
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[dict[str, Any]]]:
    """Per GPU its history and trend answers, and the XIDs in the window, from one node."""
    names = gpus or [str(g["index"]) for g in (await _call(fleet, node, "list_gpus", {}))["gpus"]]
    window = {"since": since}
    histories = await asyncio.gather(
        *(
            _call(
                fleet,
                node,
                "get_metric_history",
                {"gpu": g, "metrics": [metric], "buckets": buckets} | window,
            )
            for g in names
        )
    )
    limit = {} if threshold is None else {"threshold": threshold}
    trends = (await _call(fleet, node, "get_metric_trend", {"metric": metric} | window | limit))[
        "trends"
    ]
    by_gpu = {t["pci_bus_id"]: t for t in trends}
    series = [s for h in histories for s in h["series"]]
    pairs = [(s, by_gpu[s["pci_bus_id"]]) for s in series if s["pci_bus_id"] in by_gpu]
    pcis = [s["pci_bus_id"] for s in series]
    events = await _call(fleet, node, "list_xid_events", {"gpus": pcis, "limit": MAX_PAGE} | window)
    return pairs, events["events"]


async def _call(fleet: Fleet, node: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One node's answer, or an error naming the node and the tool."""
    from mcp_server.gateway.errors import GatewayError, NodeCallError

    try:
        return (await fleet.call(node, tool, args)).result
    except NodeCallError as e:
        if e.reason == "tool_error":
            raise GatewayError(f"node {node}: {e.args[0]}") from e
        raise GatewayError(f"node {node} did not answer {tool}: {e}") from e


def _xid_tables(fan: FanOutResult, since: str) -> str:
    """One ``xidwatch xids`` table per node that answered, under its name."""
    from watcher.kernel.catalog import default_catalog
    from xidwatch.remote import stored_xid
    from xidwatch.render import xid_table

    catalog = default_catalog()
    blocks = []
    for answer in fan.answers:
        events = [stored_xid(e) for e in answer.result["events"]]
        table = xid_table(events, catalog) if events else f"no XID events since {since}"
        blocks.append(f"{answer.node}:\n{table}")
    return "\n\n".join(blocks)


def _no_answer(failure: NodeFailure) -> XidwatchError:
    from mcp_server.gateway.errors import GatewayError

    return GatewayError(f"node {failure.node} did not answer: {failure.reason}: {failure.error}")


def _ask(ctx: typer.Context, question: Callable[[Fleet], Awaitable[T]]) -> T:
    """The answer to ``question`` from the cluster's fleet, opened and closed around it."""
    target, timeout = ctx.obj
    return asyncio.run(_with_fleet(target, timeout, question))


async def _with_fleet(
    target: KubeTarget, timeout: float, question: Callable[[Fleet], Awaitable[T]]
) -> T:
    from mcp_server.gateway.connect import kube_fleet
    from mcp_server.gateway.fanout import CallPolicy

    fleet = await kube_fleet(target, policy=CallPolicy(node_timeout_s=timeout), refresh_s=0)
    async with fleet:
        return await question(fleet)


def run(args: list[str] | None = None) -> None:
    """The ``kubectl-xidwatch`` executable: every error one line on stderr, exit 2."""
    from store.errors import XidwatchError

    try:
        status = typer.main.get_command(app)(args=args, standalone_mode=False)
    except typer.TyperException as e:  # a usage error
        typer.echo(error_line(e.format_message()), err=True)
        sys.exit(2)
    except (XidwatchError, OSError) as e:
        typer.echo(error_line(str(e) or type(e).__name__), err=True)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    run()
