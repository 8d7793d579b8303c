"""Running the real daemon for tests: in process until a scenario has played out, or as the
``xidwatch run`` process a user starts, on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from tests.waiting import wait_until, wait_until_async
from watcher.config import DaemonConfig, SimulationSpec
from watcher.daemon import Daemon


async def run_scenario(db_path: Path, spec: SimulationSpec, **config: object) -> Daemon:
    """Run the daemon (fast ticks) until every timeline entry is applied; return it stopped.

    Stopping reads what the kernel log still holds and lets go of every held NVML event,
    so the store then has the whole scenario.
    """
    daemon = Daemon(
        DaemonConfig(
            db_path=db_path,
            node="sim-node",
            simulate=spec,
            sample_interval_s=0.05,
            checkpoint_interval_s=0.05,
            **config,  # type: ignore[arg-type]
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # it failed before it was ready: say why rather than wait forever
        ready.cancel()
        task.result()
        raise AssertionError("the daemon stopped before it was ready")
    sim = daemon.simulation
    assert sim is not None and sim.runner is not None and sim.scenario is not None
    runner, scenario = sim.runner, sim.scenario
    await wait_until_async(lambda: len(runner.applied) >= len(scenario.events), 30)
    stop.set()
    await task
    return daemon


class XidwatchProcess:
    """An ``xidwatch`` command serving HTTP (``--listen``, a free port by default), its JSON
    logs in ``log``."""

    def __init__(
        self, log: Path, command: Sequence[str], args: Sequence[str], *, listen: str
    ) -> None:
        self.log = log
        self._out = self.log.open("w")
        argv = [sys.executable, "-m", "xidwatch", "--log-json", *command, "--listen", listen, *args]
        self.host = listen.rpartition(":")[0]
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)
        try:
            self.port = self._wait_for_port()
        except BaseException:
            self.proc.kill()
            self.stop()
            raise
        self.url = f"http://{self.host}:{self.port}"

    def _wait_for_port(self) -> int:
        return int(self.wait_for_event("http_listening")["port"])

    def wait_for_event(self, event: str, timeout: float = 30) -> dict[str, Any]:
        """The first JSON log record of ``event``, once the process has logged it."""

        def logged() -> dict[str, Any] | None:
            for line in self.log.read_text().splitlines():
                if f'"{event}"' in line:
                    record: dict[str, Any] = json.loads(line)
                    return record
            assert self.proc.poll() is None, self.log.read_text()
            return None

        return wait_until(
            logged, timeout, message=lambda: f"no {event} line: {self.log.read_text()}"
        )

    def memory_kib(self, field: str = "VmRSS") -> int:
        """A memory figure from /proc/<pid>/status (VmRSS now, VmHWM the peak), in KiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        (line,) = [s for s in status.splitlines() if s.startswith(f"{field}:")]
        return int(line.split()[1])

    def reset_peak(self) -> None:
        """Start VmHWM again from the current RSS (``clear_refs`` 5; our own child)."""
        with suppress(OSError):  # an older kernel: the peak then covers start-up too
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def log_records(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        """GET ``path``: (status, body), the response always closed."""
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            with e:  # the error holds the response and its socket
                return e.code, e.read().decode()

    def stop(self) -> int:
        """SIGTERM (if still running); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._out.close()


class DaemonProcess(XidwatchProcess):
    """``xidwatch run`` on a free loopback port, its JSON logs in a file.

    ``listen`` picks another address (``127.0.0.2:0``) or a fixed port, e.g. to restart a
    daemon where it was.
    """

    def __init__(self, tmp: Path, args: Sequence[str] = (), *, listen: str = "127.0.0.1:0") -> None:
        self.db = tmp / "xidwatch.db"
        super().__init__(tmp / "daemon.log", ["run", "--db", str(self.db)], args, listen=listen)
        try:
            self.wait_for_event("daemon_started")  # sources open, GPUs found: ready to ask
        except BaseException:
            self.proc.kill()
            self.stop()
            raise
