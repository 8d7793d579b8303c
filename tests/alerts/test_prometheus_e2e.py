"""The alert rules in a real Prometheus, scraping the real daemon: an XID in the kernel log pages.

A Prometheus server (Debian's ``prometheus``) on a loopback port loads alerts/xidwatch.rules.yml
unchanged and scrapes ``xidwatch run`` on simulated GPUs every second. The test writes XID
lines into the kernel log file the daemon tails and waits for the alerts that have ``for: 0m``
to fire: XidwatchGpuFellOffBus for an XID 79, XidwatchFatalXid for an XID 95 (RESET_GPU).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "xidwatch.rules.yml"
PROMETHEUS = shutil.which("prometheus")
TIMEOUT_S = 60.0
T = TypeVar("T")

# GPU 0 and 1 of `--simulate 2` sit on PCI buses 0x18 and 0x3b (watcher/sim/fleet.py).
XID_79 = (
    "Nov 25 10:00:00 node kernel: NVRM: Xid (PCI:0000:18:00): 79, pid=1234, name=python3, "
    "GPU has fallen off the bus.\n"
)
XID_95 = (
    "Nov 25 10:00:01 node kernel: NVRM: Xid (PCI:0000:3b:00): 95, pid=1235, name=python3, "
    "Uncontained: FBHUB. RST: Yes, D-RST: No\n"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the Prometheus server is not installed: Debian's `prometheus` package has it "
        "(`make test-deps` as root, or apt-get install --no-install-recommends prometheus)",
    ),
]


def test_an_xid_in_the_kernel_log_fires_the_alerts_in_a_real_prometheus(tmp_path: Path) -> None:
    kern_log = tmp_path / "kern.log"
    kern_log.touch()
    with ExitStack() as stack:
        daemon_port = _start_daemon(stack, tmp_path, kern_log)
        prometheus = _start_prometheus(stack, tmp_path, f"127.0.0.1:{daemon_port}")

        _wait_for(
            lambda: _query(prometheus, 'xidwatch_start_time_seconds{job="xidwatch"}'),
            "Prometheus scraping the daemon",
            prometheus,
        )
        with kern_log.open("a") as f:
            f.write(XID_79 + XID_95)

        def firing() -> dict[str, dict[str, str]] | None:
            alerts = {
                a["labels"]["alertname"]: a["labels"]
                for a in _get(prometheus, "/api/v1/alerts")["data"]["alerts"]
                if a["state"] == "firing"
            }
            wanted = {"XidwatchGpuFellOffBus", "XidwatchFatalXid"}
            return alerts if wanted <= alerts.keys() else None

        alerts = _wait_for(firing, "XidwatchGpuFellOffBus and XidwatchFatalXid", prometheus)

    off_bus = alerts["XidwatchGpuFellOffBus"]
    assert (off_bus["pci_bus_id"], off_bus["severity"]) == ("00000000:18:00.0", "critical")
    fatal = alerts["XidwatchFatalXid"]
    assert (fatal["xid"], fatal["action"], fatal["pci_bus_id"]) == (
        "95",
        "RESET_GPU",
        "00000000:3B:00.0",
    )


def _start_daemon(stack: ExitStack, tmp_path: Path, kern_log: Path) -> int:
    """``xidwatch run`` tailing ``kern_log`` on 2 simulated GPUs; returns its HTTP port."""
    log = tmp_path / "daemon.log"
    argv = [sys.executable, "-m", "xidwatch", "--log-json", "run", "--db", str(tmp_path / "x.db")]
    argv += ["--simulate", "2", "--sample-interval", "1", "--no-kmsg", "--listen", "127.0.0.1:0"]
    argv += ["--log-file", str(kern_log), "--log-file-from-start"]
    proc = _spawn(stack, argv, log, cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"http_listening"' in line:
                return int(json.loads(line)["port"])
        assert proc.poll() is None, f"xidwatch run exited:\n{log.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"xidwatch run logged no http_listening:\n{log.read_text()}")


def _start_prometheus(stack: ExitStack, tmp_path: Path, target: str) -> str:
    """Prometheus with the rules, scraping ``target`` as job xidwatch; returns its base URL."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "xidwatch", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    address = f"127.0.0.1:{_free_port()}"
    assert PROMETHEUS is not None
    argv = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
    argv += [f"--web.listen-address={address}", "--log.level=warn"]
    proc = _spawn(stack, argv, tmp_path / "prometheus.log", cwd=tmp_path)
    url = f"http://{address}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    _wait_for(ready, "Prometheus ready", url)
    return url


def _spawn(stack: ExitStack, argv: list[str], log: Path, *, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` logging to ``log``; on leaving ``stack``: SIGTERM, wait (then SIGKILL)."""
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    stack.callback(_stop, proc)
    return proc


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


def _get(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=5) as response:
        return json.load(response)


def _query(url: str, promql: str) -> list[Any]:
    result: list[Any] = _get(url, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))[
        "data"
    ]["result"]
    return result


def _wait_for(check: Callable[[], T | None], what: str, prometheus: str) -> T:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {TIMEOUT_S:.0f}s waiting for {what}{_state(prometheus)}")


def _state(url: str) -> str:
    """What Prometheus knows, for a failure message."""
    try:
        targets = _get(url, "/api/v1/targets")["data"]["activeTargets"]
        rules = _get(url, "/api/v1/rules")["data"]["groups"]
        xids = _query(url, "xidwatch_xid_events_total")
    except OSError as e:
        return f" (Prometheus unreachable: {e})"
    health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
    broken = [(r["name"], r["lastError"]) for g in rules for r in g["rules"] if r.get("lastError")]
    return f"\ntargets: {health}\nrule errors: {broken}\nxidwatch_xid_events_total: {xids}"
