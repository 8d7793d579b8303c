"""The process ends when it should: a daemon that cannot serve exits non-zero at once, and
``xidwatch mcp`` ends when its client closes stdin, even mid-call. Real processes: the exit
status and the process's end are the point."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.mcp_server.helpers import fill


def test_run_on_a_taken_port_exits_2_with_one_error_line(tmp_path: Path) -> None:
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [
            sys.executable,
            "-m",
            "xidwatch",
            "--log-json",
            "run",
            "--db",
            str(tmp_path / "x.db"),
        ]
        argv += ["--no-kmsg", "--no-nvml", "--no-kubernetes", "--listen", f"127.0.0.1:{port}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr  # before: ran on without HTTP, exited 0 on SIGTERM
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"xidwatch: error: cannot serve HTTP on 127.0.0.1:{port}")
    assert "daemon_started" not in done.stderr and "Traceback" not in done.stderr


STUCK_WORKER = """
import sys, threading
import xidwatch.serving

async def serve(db, node, nvml):  # a call cut short: its worker thread waits for good
    threading.Thread(target=threading.Event().wait, name="aiosqlite-like").start()

xidwatch.serving._serve_stdio = serve
from xidwatch.main import main
main(["--log-level", "warning", "mcp", "--db", sys.argv[1], "--no-nvml"])
"""


def test_mcp_ends_when_its_client_does_even_with_a_worker_thread_left(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", STUCK_WORKER, str(tmp_path / "x.db")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.wait(timeout=30) == 0  # before: never (Python waits for the thread)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.slow
def test_mcp_over_stdio_ends_when_stdin_closes_during_a_tool_call(tmp_path: Path) -> None:
    db = tmp_path / "xidwatch.db"
    asyncio.run(fill(db))
    frames = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "get_gpu_health", "arguments": {}},
        },
    ]
    argv = [sys.executable, "-m", "xidwatch", "--log-level", "warning", "mcp", "--db", str(db)]
    proc = subprocess.Popen(
        [*argv, "--no-nvml"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write("".join(json.dumps(f) + "\n" for f in frames).encode())
    proc.stdin.flush()
    proc.stdin.close()  # the client leaves while the call runs
    started = time.monotonic()
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - started < 60
