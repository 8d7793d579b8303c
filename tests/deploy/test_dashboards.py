"""deploy/grafana/: every query of the shipped dashboards returns data from a real Prometheus.

A Prometheus server (Debian's ``prometheus``) scrapes ``xidwatch run`` on simulated GPUs
playing a bundled scenario, with the target labels a ServiceMonitor scrape carries. Each
dashboard's template variables are resolved the way Grafana asks (label values, an instant
query), then every panel query (a range or an instant query, as the target says) and
annotation query runs with the variables and Grafana's interval macros filled in: each must
return data. Without Prometheus, the static checks still run: the queries name only
documented metrics, and the committed ConfigMaps hold the dashboards unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.daemons import DaemonProcess
from tests.prometheus_server import (
    SCRAPE_INTERVAL_S,
    TIMEOUT_S,
    api,
    query,
    requires_prometheus,
    start_prometheus,
    wait_for,
)
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
METRICS_DOC = REPO / "docs" / "metrics.md"

# What the prometheus-operator component's ServiceMonitor makes of a daemon's target: its
# relabelings add `node`; the operator adds where the target came from.
TARGET_LABELS = {
    "node": "gpu-node-7",
    "namespace": "gpu-monitoring",
    "pod": "xidwatch-x7k2p",
    "service": "xidwatch",
    "endpoint": "http",
    "container": "xidwatch",
}
# GPU 1's memory degrades to a remap failure: XIDs, ECC counts, remapped rows and a
# replace_gpu verdict, 100 s of scenario played in 2.
DAEMON_ARGS = ["--simulate", "4", "--scenario", "ecc-degradation", "--scenario-speed", "50"]
DAEMON_ARGS += ["--sample-interval", "1"]
# Grafana's macros as it fills them for a step of one scrape interval: $__rate_interval is
# four scrape intervals at least.
STEP = f"{SCRAPE_INTERVAL_S}s"
INTERVALS = {"__interval": STEP, "__rate_interval": f"{4 * SCRAPE_INTERVAL_S}s"}
GRAFANA_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>\w+)\s*\)$")
QUERY_RESULT = re.compile(r"^query_result\((?P<expr>.+)\)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Query:
    """One panel or annotation query of a dashboard; ``kind``: range or instant."""

    where: str
    expr: str
    kind: str


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every target of every panel, and every Prometheus annotation (a range query)."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            instant = target.get("instant", False) and not target.get("range", True)
            where = f"panel {panel['title']!r} {target['refId']}"
            found.append(Query(where, target["expr"], "instant" if instant else "range"))
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        expr = annotation.get("expr") or annotation["target"]["expr"]
        found.append(Query(f"annotation {annotation['name']!r}", expr, "range"))
    return found


def query_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def variable_query(variable: dict[str, Any]) -> str:
    q = variable["query"]
    return str(q["query"] if isinstance(q, dict) else q)


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's variables filled in; an unknown one fails the test."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"{expr!r} uses ${name}, which the dashboard does not define"
        return values[name]

    return GRAFANA_VARIABLE.sub(value, expr)


# Static checks: no Prometheus needed.


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_queries_name_only_metrics_the_daemon_documents(path: Path) -> None:
    documented = set(re.findall(r"`(xidwatch_\w+)`", METRICS_DOC.read_text(encoding="utf-8")))
    dashboard = load(path)
    exprs = [q.expr for q in panel_queries(dashboard)]
    exprs += [variable_query(v) for v in query_variables(dashboard)]
    named = {m for expr in exprs for m in re.findall(r"\bxidwatch_\w+", expr)}
    assert named, path
    assert named <= documented, f"not in docs/metrics.md: {sorted(named - documented)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_reads_the_datasource_the_user_picks(path: Path) -> None:
    dashboard = load(path)
    [source] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    chosen = {"type": "prometheus", "uid": f"${{{source['name']}}}"}
    users = [*panels(dashboard), *query_variables(dashboard)]
    users += [a for a in dashboard["annotations"]["list"] if not a.get("builtIn")]
    for user in users:
        if user.get("type") != "row":
            assert user["datasource"] == chosen, user.get("title") or user.get("name")
        for target in user.get("targets", []):
            assert target["datasource"] == chosen, (user["title"], target["refId"])
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboards_have_distinct_uids_that_their_links_name() -> None:
    dashboards = [load(path) for path in DASHBOARDS]
    uids = {d["uid"] for d in dashboards}
    assert len(uids) == len(DASHBOARDS) == 2
    for dashboard in dashboards:
        text = json.dumps(dashboard)
        linked = set(re.findall(r"/d/([\w-]+)", text))
        assert linked and linked <= uids, (dashboard["uid"], linked)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_dashboards", REPO / "deploy" / "gen_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_component_ships_each_dashboard_unchanged_to_the_grafana_sidecar() -> None:
    gen = _generator()
    fix = "regenerate with: python deploy/gen_dashboards.py"
    assert gen.OUTPUT.read_text(encoding="utf-8") == gen.render(), f"{gen.OUTPUT} is stale; {fix}"
    maps = [doc for doc in yaml.safe_load_all(gen.OUTPUT.read_text(encoding="utf-8")) if doc]
    shipped = {name: text for m in maps for name, text in m["data"].items()}
    assert shipped == {path.name: path.read_text(encoding="utf-8") for path in DASHBOARDS}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_generator_names_a_dashboard_that_is_not_json_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = _generator()
    dashboards, output = tmp_path / "grafana", tmp_path / "dashboards.yaml"
    dashboards.mkdir()
    (dashboards / "a.json").write_text('{"uid": ')
    assert gen.main(dashboards, output) == 2
    assert not output.exists()
    [line] = capsys.readouterr().err.splitlines()
    assert f"{dashboards / 'a.json'} is not valid JSON" in line


# Against a real Prometheus.


@dataclass(frozen=True, slots=True)
class Scraped:
    """A Prometheus that has scraped the whole scenario, and since when it has data."""

    url: str
    start_s: float


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("dashboards")
    with ExitStack() as stack:
        prometheus = start_prometheus(stack, tmp)  # it boots while the daemon does
        start_s = math.floor(time.time())
        daemon = DaemonProcess(tmp, DAEMON_ARGS)
        stack.callback(daemon.stop)
        prometheus.scrape(f"{daemon.host}:{daemon.port}", **TARGET_LABELS)
        url = prometheus.url
        played = 'xidwatch_node_verdict_action{action="replace_gpu"}'
        wait_for(lambda: query(url, played), "the scenario's replace_gpu verdict", url)
        yield Scraped(url, start_s)


def resolve_variables(scraped: Scraped, dashboard: dict[str, Any], *, all_: bool) -> dict[str, str]:
    """Each variable's first value, as Grafana asks for it in order (or its All value)."""
    end_s = time.time()
    values = {**INTERVALS, "__range": f"{math.ceil(end_s - scraped.start_s)}s"}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            values[variable["name"]] = variable.get("query", "")
            continue
        found = ask_variable(scraped, substitute(variable_query(variable), values), end_s)
        assert found, f"variable {variable['name']}: no values"
        values[variable["name"]] = (
            variable["allValue"] if all_ and variable.get("includeAll") else sorted(found)[0]
        )
    return values


def ask_variable(scraped: Scraped, expr: str, end_s: float) -> list[str]:
    """The call Grafana makes for a variable query: label values, or an instant query."""
    window = {"start": str(scraped.start_s), "end": f"{end_s:.3f}"}
    if m := LABEL_VALUES.match(expr):
        match = {"match[]": m["match"]} if m["match"] else {}
        labels: list[str] = api(
            scraped.url, f"/api/v1/label/{m['label']}/values", **match, **window
        )
        return labels
    if m := QUERY_RESULT.match(expr):
        return [json.dumps(r["metric"]) for r in query(scraped.url, m["expr"])]
    raise AssertionError(f"a variable query the test cannot translate: {expr!r}")


def answer(scraped: Scraped, q: Query, values: dict[str, str]) -> list[Any]:
    """What Prometheus returns for ``q`` with ``values`` filled in (an error fails)."""
    expr = substitute(q.expr, values)
    if q.kind == "instant":
        return query(scraped.url, expr)
    window = {"start": str(scraped.start_s), "end": f"{time.time():.3f}"}
    window["step"] = str(SCRAPE_INTERVAL_S)
    result: list[Any] = api(scraped.url, "/api/v1/query_range", query=expr, **window)["result"]
    return result


@requires_prometheus
@pytest.mark.slow
@pytest.mark.parametrize("all_", [False, True], ids=["one-value", "all"])
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    scraped: Scraped, path: Path, all_: bool
) -> None:
    dashboard = load(path)
    values = resolve_variables(scraped, dashboard, all_=all_)
    pending = panel_queries(dashboard)
    assert len(pending) >= 10, path

    def all_answered() -> bool:
        pending[:] = [q for q in pending if not answer(scraped, q, values)]
        return not pending

    wait_until(
        all_answered,
        TIMEOUT_S,
        message=lambda: (
            f"no data with {values} for:\n"
            + "\n".join(f"{q.where}: {substitute(q.expr, values)}" for q in pending)
        ),
        interval_s=0.5,
    )
