"""The command-line contract: replay, xids (table and --json), explain, demo, and its errors."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import urllib.request
from importlib import resources
from pathlib import Path

import pytest

from store.records import GpuInfo, SampleBatch
from tests.store.helpers import event, write_all

SAMPLE = Path(str(resources.files("watcher.kernel").joinpath("data/sample-kern.log")))


def xidwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xidwatch", "--log-level", "warning", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_replay_reports_what_it_stored_and_is_idempotent(db_path: Path) -> None:
    first = xidwatch("replay", str(SAMPLE), "--db", str(db_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("stored 54 events from 111 lines")
    again = xidwatch("replay", str(SAMPLE), "--db", str(db_path))
    assert again.stdout.startswith("stored 0 events"), again.stdout
    assert "already stored" in again.stdout


def test_xids_json_objects_carry_the_contract_fields(db_path: Path) -> None:
    xidwatch("replay", str(SAMPLE), "--db", str(db_path))
    out = xidwatch("xids", "--db", str(db_path), "--since", "400d", "--json", "--code", "79")
    assert out.returncode == 0, out.stderr
    (event,) = json.loads(out.stdout)
    for key in (
        "ts",
        "kind",
        "xid",
        "pci_bus_id",
        "pid",
        "process",
        "mnemonic",
        "immediate_action",
        "message",
    ):
        assert key in event
    assert event["ts"].endswith("Z") and event["ts"][10] == "T"
    assert (event["xid"], event["pci_bus_id"], event["pid"], event["process"]) == (
        79,
        "00000000:86:00.0",
        28115,
        "trainer",
    )
    assert event["mnemonic"] == "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert event["immediate_action"] == "RESTART_BM"


def test_xids_json_reports_a_flood_as_a_burst_with_its_exact_count(db_path: Path) -> None:
    xidwatch("replay", str(SAMPLE), "--db", str(db_path))
    out = xidwatch("xids", "--db", str(db_path), "--since", "400d", "--json", "--code", "43")
    events = json.loads(out.stdout)
    assert sum(e["count"] for e in events) == 64
    assert any(e["burst"] and e["count"] > 1 for e in events)


def test_xids_table_filters_by_gpu_in_any_pci_spelling(db_path: Path) -> None:
    xidwatch("replay", str(SAMPLE), "--db", str(db_path))
    out = xidwatch("xids", "--db", str(db_path), "--since", "400d", "--gpu", "0000:af:00")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.startswith("TIME (UTC)")
    assert {row.split()[4] for row in rows} == {"00000000:AF:00.0"}
    assert len(rows) == 3


@pytest.mark.parametrize(
    "gpu", ["1", "GPU-bbbb0000-h100", "GPU-bbbb", "0000:86:00.0", "86:00", "00000000:86:00.0"]
)
def test_xids_names_a_gpu_by_index_uuid_or_pci_id_like_the_mcp_tools(
    db_path: Path, gpu: str
) -> None:
    a = GpuInfo("GPU-aaaa0000-h100", 0, "NVIDIA H100", "00000000:3B:00.0")
    b = GpuInfo("GPU-bbbb0000-h100", 1, "NVIDIA H100", "00000000:86:00.0")
    xids = [event(n, gpu=(a.pci_bus_id, b.pci_bus_id)[n % 2]) for n in range(4)]
    asyncio.run(write_all(db_path, [SampleBatch(1_700_000_000_000, gpus=(a, b)), *xids]))
    out = xidwatch("xids", "--db", str(db_path), "--since", "3000d", "--json", "--gpu", gpu)
    assert out.returncode == 0, out.stderr
    assert [(e["seq"], e["pci_bus_id"]) for e in json.loads(out.stdout)] == [
        (3, "00000000:86:00.0"),
        (1, "00000000:86:00.0"),
    ]


def test_explain_says_what_to_do(tmp_path: Path) -> None:
    out = xidwatch("explain", "79")
    assert out.returncode == 0
    assert "XID 79: GPU has fallen off the bus" in out.stdout
    assert "Needs on its own: reboot_node" in out.stdout
    assert "NVIDIA's catalog (RESTART_BM)" in out.stdout
    data = json.loads(xidwatch("explain", "48", "--json").stdout)
    assert data["immediate_action"] == "WORKFLOW_XID_48" and data["known"] is True
    assert data["needs"] == "reset_gpu"
    twice = xidwatch("explain", "48").stdout  # before: the same workflow sentence twice
    assert twice.count("If XID 48 appears alone") == 1
    unknown = json.loads(xidwatch("explain", "4242", "--json").stdout)
    assert unknown["known"] is False and unknown["immediate_action"] == "UNKNOWN"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("xids", "--since", "yesterday"), "neither a duration"),
        (("xids", "--gpu", "gpu3"), "GPU 'gpu3' matches no GPU; name a GPU by index"),
        (("xids", "--gpu", "\u0661"), "matches no GPU"),
        (("xids", "--kind", "bogus"), "use xid or sxid"),
        (("xids", "--since", "1h", "--until", "2h"), "is after until ("),
        (("xids", "--since", "0001-01-01T00:00:00Z"), "is before 1970-01-01"),
    ],
    ids=["since", "gpu", "non-ascii-index", "kind", "inverted", "before-epoch"],
)
def test_bad_arguments_get_a_one_line_error_and_exit_2(
    db_path: Path, args: tuple[str, ...], message: str
) -> None:
    xidwatch("replay", str(SAMPLE), "--db", str(db_path))
    out = xidwatch(*args, "--db", str(db_path))
    assert out.returncode == 2
    assert out.stderr.startswith("xidwatch: error:") and message in out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_store_says_how_to_make_one(tmp_path: Path) -> None:
    out = xidwatch("xids", "--db", str(tmp_path / "none.db"))
    assert out.returncode == 2
    assert "xidwatch run --db" in out.stderr


@pytest.mark.slow
def test_demo_runs_the_tour_end_to_end(tmp_path: Path) -> None:
    out = xidwatch("demo", "--db", str(tmp_path / "demo.db"), "--speed", "40")
    assert out.returncode == 0, out.stderr
    assert "stored: XID 79  GPU 00000000:86:00.0" in out.stdout
    assert "3 XID events live; 3 NVML XID events matched their kernel log line" in out.stdout
    health = next(line for line in out.stdout.splitlines() if line.startswith("GPU 2 "))
    assert "CRITICAL" in health and "lost" in health
    assert "total 86 events" in out.stdout
    assert re.search(
        r"MCP \(streamable HTTP\) while it runs: http://127\.0\.0\.1:\d+/mcp", out.stdout
    )
    assert re.search(r"Prometheus metrics: http://127\.0\.0\.1:\d+/metrics", out.stdout)


@pytest.mark.slow
def test_demo_serves_mcp_and_metrics_and_ctrl_c_still_ends_with_the_summary(
    tmp_path: Path,
) -> None:
    argv = [sys.executable, "-m", "xidwatch", "--log-level", "warning", "demo"]
    argv += ["--db", str(tmp_path / "demo.db"), "--speed", "40", "--duration", "120"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:
            seen.append(line)
            if (m := re.search(r"(http://127\.0\.0\.1:\d+)/metrics", line)) is not None:
                break
        assert m is not None, "".join(seen)
        with urllib.request.urlopen(f"{m[1]}/metrics", timeout=10) as response:
            assert response.status == 200
            assert b"xidwatch_" in response.read()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "interrupted: stopping the daemon" in rest
    assert "daemon stored" in rest and "5. XIDs the store holds" in rest
