"""``run --simulate``, ``trend`` and ``health`` as a user runs them: real processes, real store."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.daemons import DaemonProcess
from tests.waiting import wait_until
from tests.xidwatch.test_cli import xidwatch


def run_daemon(tmp: Path, *args: str, until: Callable[[DaemonProcess], object]) -> DaemonProcess:
    """``xidwatch run`` (on a free port) until ``until(daemon)`` holds, then SIGTERM: it ran
    and stopped cleanly."""
    daemon = DaemonProcess(tmp, args)
    try:
        wait_until(lambda: until(daemon), 60, message=lambda: daemon.log.read_text())
    finally:
        rc = daemon.stop()
    assert rc == 0, daemon.log.read_text()
    assert "daemon_stopped" in [r["event"] for r in daemon.log_records()]
    return daemon


def _played_out(daemon: DaemonProcess) -> bool:
    """The scenario's last XID (64) is stored and every GPU was sampled after it."""
    with closing(sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)) as conn:
        (last_xid_ms,) = conn.execute("SELECT max(ts_ms) FROM xid_events WHERE xid = 64").fetchone()
        if last_xid_ms is None:
            return False
        later = "SELECT count(DISTINCT gpu) FROM samples WHERE ts > ?"
        return int(conn.execute(later, (last_xid_ms,)).fetchone()[0]) == 4


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store the daemon filled from 4 simulated GPUs running the ECC scenario."""
    daemon = run_daemon(
        tmp_path_factory.mktemp("sim"),
        *("--simulate", "4", "--scenario", "ecc-degradation", "--scenario-speed", "60"),
        *("--sample-interval", "1", "--no-kmsg"),
        until=_played_out,
    )
    return daemon.db


@pytest.mark.slow
def test_trend_json_gives_per_gpu_buckets_with_min_avg_max(sampled: Path) -> None:
    out = xidwatch("trend", "--db", str(sampled), "--since", "5m", "--buckets", "10", "--json")
    assert out.returncode == 0, out.stderr
    series = json.loads(out.stdout)
    assert [s["gpu"] for s in series] == [0, 1, 2, 3]
    for s in series:
        assert s["metric"] == "temperature" and s["unit"] == "°C"
        assert len(s["buckets"]) == 10
        filled = [b for b in s["buckets"] if b["count"]]
        assert filled and all(b["min"] <= b["avg"] <= b["max"] for b in filled)
        assert set(filled[0]) >= {"ts", "min", "avg", "max"}


@pytest.mark.slow
def test_trend_chart_marks_the_gpu_with_xids(sampled: Path) -> None:
    out = xidwatch("trend", "--db", str(sampled), "--since", "5m", "--metric", "power")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("power (W)") == 4
    assert "▲" in out.stdout and "48" in out.stdout


@pytest.mark.slow
def test_trend_csv_and_one_gpu_by_pci_id(sampled: Path) -> None:
    gpus = json.loads(xidwatch("health", "--db", str(sampled), "--json").stdout)["gpus"]
    pci = gpus[1]["pci_bus_id"]
    out = xidwatch("trend", "--db", str(sampled), "--since", "5m", "--gpu", pci, "--csv")
    header, *rows = out.stdout.splitlines()
    assert header == "gpu,uuid,pci_bus_id,metric,unit,ts,ts_ms,min,avg,max,count"
    assert rows and {r.split(",")[2] for r in rows} == {pci}


@pytest.mark.slow
def test_health_names_what_is_wrong_with_the_degraded_gpu(sampled: Path) -> None:
    answer = json.loads(xidwatch("health", "--db", str(sampled), "--json").stdout)
    gpus = answer["gpus"]
    statuses = {g["gpu"]["index"]: g["status"] for g in gpus}
    bad = [g for g in gpus if g["status"] == "critical"]
    assert len(bad) == 1, statuses
    codes = {f["code"] for f in bad[0]["findings"]}
    assert {"xid_48", "xid_64", "remap_failure", "ecc_uncorrected"} <= codes
    assert (bad[0]["verdict"]["cause"], bad[0]["verdict"]["action"]) == (
        "gpu_memory",
        "replace_gpu",
    )
    assert answer["node_verdict"]["gpus"] == [bad[0]["pci_bus_id"]]
    text = xidwatch("health", "--db", str(sampled)).stdout
    assert "CRITICAL" in text and "-> replace_gpu (gpu_memory" in text
    assert "RMA" in text
    assert (
        text.splitlines()[-1]
        == f"  node: GPU 1 ({bad[0]['pci_bus_id']}) needs replace_gpu (gpu_memory)"
    )


def test_list_metrics_names_the_required_ones() -> None:
    out = xidwatch("trend", "--list-metrics")
    for name in ("temperature", "power", "utilization", "memory_used", "throttle_thermal"):
        assert name in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trend", "--metric", "heat"), "unknown metric 'heat'; known metrics:"),
        (("trend", "--gpu", "9"), "GPU '9' matches no GPU"),
        (("trend", "--tier", "5m"), "unknown tier '5m'"),
        (("trend", "--since", "yesterday"), "neither a duration"),
        (("run", "--scenario", "thermal-runaway"), "--scenario needs --simulate"),
        (("run", "--simulate", "2", "--simulate-model", "V100"), "unknown GPU profile"),
        (("run", "--simulate", "2", "--scenario", "nope"), "nope"),
    ],
)
def test_bad_telemetry_arguments_get_a_one_line_error(
    sampled: Path, args: tuple[str, ...], message: str
) -> None:
    out = xidwatch(*args, "--db", str(sampled))
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("xidwatch: error:") and message in out.stderr
    assert "Traceback" not in out.stderr


def test_without_a_driver_the_daemon_says_so_once_and_keeps_running(tmp_path: Path) -> None:
    # DaemonProcess returns once the daemon has started: NVML was tried, and it runs on.
    done = run_daemon(tmp_path, "--no-kmsg", until=lambda daemon: True)
    events = done.log_records()
    unavailable = [e for e in events if e["event"] == "nvml_unavailable"]
    assert len(unavailable) == 1
    assert "XIDs are still read from the kernel log" in unavailable[0]["reason"]
    assert any(e["event"] == "daemon_stopped" for e in events)
