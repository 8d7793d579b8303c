"""A real Prometheus server (Debian's ``prometheus``) for tests, on a free loopback port.

It scrapes the targets it is given every second and is asked over its HTTP API, as Grafana and
Alertmanager would. Tests that need it carry :data:`requires_prometheus`, so they skip
with the install line where the server is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.waiting import wait_until

__all__ = [
    "PROMETHEUS",
    "SCRAPE_INTERVAL_S",
    "TIMEOUT_S",
    "PrometheusServer",
    "api",
    "query",
    "requires_prometheus",
    "start_prometheus",
    "wait_for",
]

PROMETHEUS = shutil.which("prometheus")
SCRAPE_INTERVAL_S = 1  # and rule evaluation
TIMEOUT_S = 60.0
T = TypeVar("T")

requires_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the Prometheus server is not installed: Debian's `prometheus` package has it "
    "(`make test-deps` as root, or apt-get install --no-install-recommends prometheus)",
)


class PrometheusServer:
    """A running Prometheus: its base URL, and the targets it scrapes as job xidwatch."""

    def __init__(self, url: str, targets_file: Path) -> None:
        self.url = url
        self._targets_file = targets_file
        self._targets: list[dict[str, Any]] = []

    def scrape(self, address: str, **labels: str) -> None:
        """Scrape ``address`` too, with these extra target labels.

        Through file discovery, so Prometheus can start before the target exists: its first
        scrape waits for discovery's first update (5 s after start) either way.
        """
        self._targets.append({"targets": [address], "labels": labels})
        staged = self._targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps(self._targets))
        staged.replace(self._targets_file)  # never a half-written file


def start_prometheus(
    stack: ExitStack,
    tmp_path: Path,
    *,
    rule_files: Sequence[Path] = (),
    flags: Sequence[str] = (),
) -> PrometheusServer:
    """Prometheus with ``rule_files`` and extra command-line ``flags``, scraping no target
    yet, until ``stack`` closes; returned once it is ready. Its TSDB is ``tmp_path / "tsdb"``
    (blocks put there first are served)."""
    config, targets = tmp_path / "prometheus.yml", tmp_path / "targets.json"
    targets.write_text("[]")
    every = f"{SCRAPE_INTERVAL_S}s"
    job = {"job_name": "xidwatch", "file_sd_configs": [{"files": [str(targets)]}]}
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": every, "evaluation_interval": every},
                "rule_files": [str(path) for path in rule_files],
                "scrape_configs": [job],
            }
        )
    )
    address = f"127.0.0.1:{_free_port()}"
    assert PROMETHEUS is not None
    argv = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
    argv += [f"--web.listen-address={address}", "--log.level=warn", *flags]
    log = tmp_path / "prometheus.log"
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    stack.callback(_stop, proc)
    url = f"http://{address}"

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(ready, "Prometheus ready", url)
    return PrometheusServer(url, targets)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def api(url: str, path: str, **params: str | Sequence[str]) -> Any:
    """GET ``path`` of the HTTP API with ``params``; its ``data``, or an AssertionError
    carrying Prometheus's own error (a bad query, say)."""
    query_string = urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(f"{url}{path}?{query_string}", timeout=5) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        with e:
            body = json.load(e)
    assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
    return body["data"]


def query(url: str, promql: str) -> list[Any]:
    """An instant query's result vector."""
    result: list[Any] = api(url, "/api/v1/query", query=promql)["result"]
    return result


def wait_for(check: Callable[[], T | None], what: str, url: str) -> T:
    """``check()``'s first true value; after :data:`TIMEOUT_S`, fail with what Prometheus
    knows (targets, rule errors, XIDs)."""
    value = wait_until(
        check, TIMEOUT_S, message=lambda: f"waiting for {what}{_state(url)}", interval_s=0.2
    )
    assert value is not None  # wait_until returns only a true value
    return value


def _state(url: str) -> str:
    """What Prometheus knows, for a failure message."""
    try:
        targets = api(url, "/api/v1/targets")["activeTargets"]
        rules = api(url, "/api/v1/rules")["groups"]
        xids = query(url, "xidwatch_xid_events_total")
    except OSError as e:
        return f" (Prometheus unreachable: {e})"
    health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
    broken = [(r["name"], r["lastError"]) for g in rules for r in g["rules"] if r.get("lastError")]
    return f"\ntargets: {health}\nrule errors: {broken}\nxidwatch_xid_events_total: {xids}"
