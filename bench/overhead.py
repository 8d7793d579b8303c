"""Overhead: what the node daemon costs a GPU node, in CPU and memory, and its scrape latency.

What is measured: the real :class:`watcher.daemon.Daemon` with 8 simulated GPUs
(``--simulate 8``: the simulator stands in for ``libnvidia-ml`` behind the real pynvml, and
its in-memory kernel log is read by the real kmsg source), the NVML XID event thread, the
batched writer keeping raw rows and rollups, retention, and the HTTP port as ``xidwatch run``
serves it (``xidwatch.serving.http_service``: uvicorn, the MCP app, ``/metrics`` with the
daemon's Prometheus collector, probes), sampling every 1 s and every 10 s (``--intervals``),
``--seconds`` seconds each (default 60), each in a subprocess of its own so its CPU time and
memory are its own. Logging as in production (info, JSON) rendered into /dev/null.

- CPU % of one core: the process's CPU time (user + system, every thread) over wall time,
  from the daemon being ready to the end of the window (steady state). The benchmark
  scrapes ``/metrics`` once a second through the window, as Prometheus would at a 1 s
  scrape interval, so answering those scrapes is part of the figure;
- CPU s start+stop: the rest of the process's CPU (interpreter start, imports, store
  creation and shutdown), less the burst of scrapes and the in-process render timing below,
  whose CPU is counted apart;
- peak RSS: ``VmHWM`` read by the child from ``/proc/self/status`` at exit. (Not the
  parent's ``RUSAGE_CHILDREN`` ``ru_maxrss``: Linux carries the forking parent's
  high-water mark across ``exec``, so under ``python -m bench`` it reads the parent's
  80 MiB, not the daemon's.) RSS at stop: ``VmRSS`` just before the stop signal;
- samples stored (the writer's count), ticks taken and skipped;
- ``/metrics`` scrape latency: request sent to body read, by urllib on a fresh TCP
  connection per scrape (``Connection: close``; Prometheus keeps its connection alive, so
  its figure is lower by one loopback connect, some 0.1 ms), every response closed. The
  1/s scrapes of the window, and a burst of ``BURST`` back-to-back scrapes after it
  (before the stop), p50 and p99 of each; the body's size and series count; the daemon's
  CPU per scrape (the burst's CPU less the steady rate over its wall time, over
  ``BURST``); and the in-process time of ``generate_latest`` on the same collector, which
  is the part of a scrape that is rendering rather than HTTP.

In a cluster the daemon also talks to the Kubernetes API: one more run, at the last
interval, gives it a kubeconfig for the tests' API server on loopback (:mod:`tests.kube_api`,
the real ``kubernetes`` client on the other end) that lists ``CLUSTER_PODS`` pods on its
node, some holding GPUs, with pod attribution, Events and the Node condition on; the
other runs have Kubernetes off, so a kubeconfig on the measuring machine changes nothing.

Peers: a subprocess that imports the same modules and sleeps, which is the floor that the
Python interpreter and xidwatch's dependencies set before the daemon does anything; and a
bare ``prometheus_client.start_http_server`` on the default registry (process, platform
and GC collectors; its own subprocess, idle but for the scrapes) scraped the same way,
right after each daemon scrape, so the scrape figures have something to stand beside.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import bench
from bench._common import log_like_production, percentile, table

__all__ = ["main"]

GPUS = 8
DEFAULT_INTERVALS = (1.0, 10.0)
DEFAULT_SECONDS = 60.0
BASELINE_SECONDS = 5.0
READY_TIMEOUT_S = 60.0
SCRAPE_EVERY_S = 1.0
BURST = 200
SCRAPE_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 60.0
NODE = "bench"
CLUSTER_PODS = 40  # a busy GPU node: the job pods, daemon sets, sidecars

# No proxy: a proxy named in the environment must not stand between us and loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_kib(field: str) -> int:
    """A ``VmXXX`` line of ``/proc/self/status``, in KiB (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _say(event: str, **figures: object) -> None:
    """One JSON line to the parent on stdout."""
    print(json.dumps({"event": event, **figures}), flush=True)


def _series(body: bytes) -> int:
    """Samples in a Prometheus text exposition: the lines that are not comments."""
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


# --- the measured processes ---------------------------------------------------------------


async def _run_daemon(
    seconds: float, interval: float, db: Path, kubeconfig: Path | None
) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from mcp_server.http_settings import HttpSettings
    from watcher.config import DaemonConfig, KubernetesConfig, SimulationSpec
    from watcher.daemon import Daemon
    from watcher.prometheus import DaemonCollector
    from xidwatch.serving import http_service

    kubernetes = KubernetesConfig(enabled=False)
    if kubeconfig is not None:
        kubernetes = KubernetesConfig(
            kubeconfig=kubeconfig, events=True, node_condition="GpuXidFatal"
        )
    config = DaemonConfig(
        db_path=db,
        node=NODE,
        kubernetes=kubernetes,
        simulate=SimulationSpec(gpus=GPUS),
        sample_interval_s=interval,
        kmsg=True,
    )
    daemon = Daemon(config)
    http = http_service(daemon, HttpSettings("127.0.0.1", 0))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, services=[http]))
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([task, ready], timeout=READY_TIMEOUT_S, return_when="FIRST_COMPLETED")
    if not daemon.ready.is_set():
        ready.cancel()
        stop.set()
        await task  # raises what stopped it
        raise RuntimeError(f"the daemon was not ready within {READY_TIMEOUT_S:g} s")
    await http.wait_started(READY_TIMEOUT_S)
    _say("ready", port=http.bound_port)

    # Steady state: the parent scrapes /metrics once a second meanwhile.
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    await asyncio.wait([task], timeout=seconds)  # returns early only if the daemon failed
    cpu1, wall1 = _cpu_s(), time.perf_counter()
    if task.done():
        await task
        raise RuntimeError("the daemon stopped on its own")
    _say("steady")

    # The parent's burst of scrapes; it writes a line when done.
    await asyncio.to_thread(sys.stdin.readline)
    cpu2, wall2 = _cpu_s(), time.perf_counter()

    # generate_latest in-process on a collector like the port's; yield between renders so
    # no sampler tick waits on more than one.
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    renders: list[float] = []
    body = b""
    for _ in range(BURST):
        t = time.perf_counter()
        body = generate_latest(registry)
        renders.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0)
    cpu3 = _cpu_s()

    rss_kib = _status_kib("VmRSS")
    stop.set()
    await task
    sampler = daemon.sampler
    with sqlite3.connect(db) as conn:
        rows = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    return {
        "steady_cpu_s": cpu1 - cpu0,
        "steady_wall_s": wall1 - wall0,
        "burst_cpu_s": cpu2 - cpu1,
        "burst_wall_s": wall2 - wall1,
        "render_cpu_s": cpu3 - cpu2,
        "render_p50_ms": percentile(renders, 50),
        "render_p99_ms": percentile(renders, 99),
        "render_bytes": len(body),
        "rss_kib": rss_kib,
        "samples_stored": daemon.writer.stats.samples_stored,
        "sample_rows": rows,
        "samples_shed": daemon.writer.stats.samples_shed,
        "ticks": sampler.stats.ticks if sampler else 0,
        "ticks_skipped": sampler.stats.ticks_skipped if sampler else 0,
        "gpus": len(sampler.devices) if sampler else 0,
        "batches": daemon.writer.stats.batches,
        "pods": daemon.pods.stats.pods if daemon.pods else 0,
        "pod_refreshes": daemon.pods.stats.refreshes if daemon.pods else 0,
    }


def _baseline(seconds: float) -> dict[str, float]:
    """Import what the daemon and its HTTP port import, then sleep: the interpreter's floor."""
    import watcher.daemon
    import watcher.prometheus
    import watcher.sim
    import watcher.sim.simulate  # imported for its memory, not used
    import xidwatch.serving

    del watcher, xidwatch
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return {
        "steady_cpu_s": _cpu_s() - cpu0,
        "steady_wall_s": time.perf_counter() - wall0,
        "rss_kib": _status_kib("VmRSS"),
    }


def _prometheus_peer() -> dict[str, float]:
    """A bare ``prometheus_client`` HTTP server on the default registry until stdin says stop."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(0, addr="127.0.0.1")
    _say("ready", port=server.server_port)
    sys.stdin.readline()
    server.shutdown()
    thread.join()
    return {"rss_kib": _status_kib("VmRSS")}


def child(argv: Sequence[str]) -> None:
    """The measured process: run the daemon, the baseline or the peer server."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--kubeconfig", type=Path)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--prometheus-peer", action="store_true")
    args = parser.parse_args(argv)
    log_like_production()
    if args.baseline:
        out = _baseline(args.seconds)
    elif args.prometheus_peer:
        out = _prometheus_peer()
    else:
        out = asyncio.run(_run_daemon(args.seconds, args.interval, args.db, args.kubeconfig))
    out["total_cpu_s"] = _cpu_s()
    out["hwm_kib"] = _status_kib("VmHWM")
    _say("done", **out)


# --- the parent -----------------------------------------------------------------------------


class Child:
    """``python -m bench.overhead --child ARGS``, talking in JSON lines on stdin and stdout."""

    def __init__(self, args: Sequence[str], stderr: IO[str]) -> None:
        root = Path(bench.__file__).resolve().parent.parent
        self.started = time.perf_counter()
        self._stderr = stderr
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.overhead", "--child", *args],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._lines.put(json.loads(line))
        self._lines.put(None)  # end of output: the child has exited

    def poll(self, timeout: float) -> dict[str, Any] | None:
        """The child's next message within ``timeout`` s, else None."""
        try:
            msg = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if msg is None:
            self.proc.wait()
            self._stderr.seek(0)
            raise RuntimeError(
                f"overhead child failed ({self.proc.returncode}): {self._stderr.read()[-2000:]}"
            )
        return msg

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        msg = self.poll(timeout)
        if msg is None or msg["event"] != event:
            raise RuntimeError(f"overhead child: wanted {event!r} within {timeout:g} s, got {msg}")
        return msg

    def tell(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = STOP_TIMEOUT_S) -> Measured:
        figures = self.expect("done", timeout)
        self.proc.wait(timeout)
        figures.pop("event")
        return Measured(figures, time.perf_counter() - self.started)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True, slots=True)
class Measured:
    figures: dict[str, float]
    wall_s: float


@dataclass(slots=True)
class Scrapes:
    """Latencies (ms) of one target's scrapes, and its last body."""

    steady: list[float] = field(default_factory=list)
    burst: list[float] = field(default_factory=list)
    body: bytes = b""

    def scrape(self, port: int, into: list[float]) -> None:
        started = time.perf_counter()
        with _OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as resp:
            body: bytes = resp.read()
            status = resp.status
        into.append((time.perf_counter() - started) * 1000)
        if status != 200 or not body:
            raise RuntimeError(f"/metrics on port {port}: HTTP {status}, {len(body)} bytes")
        self.body = body


@dataclass(frozen=True, slots=True)
class Run:
    interval: float
    daemon: Measured
    scrapes: Scrapes
    kubernetes: bool = False


@contextlib.contextmanager
def fake_cluster(tmp: Path) -> Iterator[Path]:
    """An API server with ``CLUSTER_PODS`` pods on the daemon's node; yields a kubeconfig."""
    from tests.kube_api import KubeApiServer

    with KubeApiServer() as kube:
        kube.add_node(NODE)
        for i in range(CLUSTER_PODS):
            held = {"xidwatch.io/gpus": str(i)} if i < GPUS else None
            kube.add_pod(f"pod-{i}", f"ns-{i % 5}", node=NODE, annotations=held)
        kube.add_pod("elsewhere", "ns-0", node="other-node")
        yield kube.kubeconfig(tmp / "kubeconfig")


def run_interval(
    interval: float, seconds: float, peer_port: int, peer: Scrapes, kubeconfig: Path | None = None
) -> Run:
    """One daemon child at ``interval``: 1/s scrapes through the window, then the burst."""
    with (
        tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp,
        tempfile.TemporaryFile("w+") as stderr,
    ):
        child_args = ["--seconds", str(seconds), "--interval", str(interval)]
        if kubeconfig is not None:
            child_args += ["--kubeconfig", str(kubeconfig)]
        proc = Child([*child_args, "--db", str(Path(tmp) / "store.db")], stderr)
        try:
            port = int(proc.expect("ready", READY_TIMEOUT_S * 2)["port"])
            scrapes = Scrapes()
            t0, k = time.perf_counter(), 0
            while True:
                scrapes.scrape(port, scrapes.steady)
                peer.scrape(peer_port, peer.steady)
                k += 1
                msg = proc.poll(t0 + k * SCRAPE_EVERY_S - time.perf_counter())
                if msg is not None:
                    if msg["event"] != "steady":
                        raise RuntimeError(f"overhead child: unexpected {msg}")
                    break
            for _ in range(BURST):
                scrapes.scrape(port, scrapes.burst)
            proc.tell()
            measured = proc.finish()
        finally:
            proc.kill()
    for _ in range(BURST):  # the peer's burst, the daemon's child gone
        peer.scrape(peer_port, peer.burst)
    return Run(interval, measured, scrapes, kubernetes=kubeconfig is not None)


def spawn(args: Sequence[str]) -> Measured:
    """A child that reports only when done (the baseline)."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = Child(args, stderr)
        try:
            return proc.finish(timeout=READY_TIMEOUT_S + BASELINE_SECONDS)
        finally:
            proc.kill()


# --- the report -----------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def _ms(values: Sequence[float]) -> list[str]:
    return [f"{percentile(values, 50):.2f}", f"{percentile(values, 99):.2f}"] if values else []


def _scrape_cells(s: Scrapes) -> list[str]:
    return [f"{len(s.body):,}", f"{_series(s.body):,}", *_ms(s.steady), *_ms(s.burst)]


def _per_scrape_ms(f: dict[str, float]) -> float:
    """The daemon's CPU per scrape in the burst, less what it spends anyway at steady rate."""
    rate = f["steady_cpu_s"] / f["steady_wall_s"]
    return max(0.0, f["burst_cpu_s"] - rate * f["burst_wall_s"]) / BURST * 1000


def report(runs: Sequence[Run], baseline: Measured, peer: Measured, peer_scrapes: Scrapes) -> None:
    rows = []
    for run in runs:
        f = run.daemon.figures
        apart = f["burst_cpu_s"] + f["render_cpu_s"]
        rows.append(
            [
                _label(run),
                f"{f['steady_cpu_s'] / f['steady_wall_s'] * 100:.2f}",
                f"{f['total_cpu_s'] - f['steady_cpu_s'] - apart:.2f}",
                _mib(f["hwm_kib"]),
                _mib(f["rss_kib"]),
                f"{int(f['samples_stored']):,}",
                f"{int(f['ticks_skipped'])}",
                *_scrape_cells(run.scrapes),
            ]
        )
    b = baseline.figures
    rows.append(
        [
            "peer: the same imports, idle",
            f"{b['steady_cpu_s'] / b['steady_wall_s'] * 100:.2f}",
            f"{b['total_cpu_s'] - b['steady_cpu_s']:.2f}",
            _mib(b["hwm_kib"]),
            _mib(b["rss_kib"]),
            *["-"] * 8,
        ]
    )
    p = peer.figures
    rows.append(
        [
            "peer: bare prometheus_client server, default registry",
            "-",
            "-",
            _mib(p["hwm_kib"]),
            _mib(p["rss_kib"]),
            "-",
            "-",
            *_scrape_cells(peer_scrapes),
        ]
    )
    headers = [
        "process",
        "CPU % of a core",
        "CPU s start+stop",
        "peak RSS MiB",
        "RSS MiB at stop",
        "samples stored",
        "ticks skipped",
        "/metrics bytes",
        "series",
        "1/s scrape p50 ms",
        "p99 ms",
        f"burst of {BURST} p50 ms",
        "p99 ms",
    ]
    print(table(headers, rows))
    first = runs[0].daemon.figures
    print(
        f"CPU % = process CPU time (user + system, all threads) / wall time from ready to the "
        f"end of the window ({first['steady_wall_s']:.1f} s), answering one /metrics scrape a "
        "second (as Prometheus at a 1 s scrape interval); start+stop = the rest of the "
        "process's CPU (interpreter, imports, store creation, shutdown), the burst and the "
        "render timing apart; peak RSS = VmHWM at exit; RSS at stop = VmRSS just before stop "
        "(the prometheus_client peer: after its scrapes)"
    )
    print(
        f"scrapes: urllib, a fresh connection each (Connection: close), response read and "
        f"closed; 1/s = {len(runs[0].scrapes.steady)} scrapes through the window (p99 of so "
        f"few is about the slowest); burst = {BURST} back-to-back after it, daemon still "
        "running; the peer is scraped right after each daemon scrape, and its burst after "
        "each daemon's; its figures are pooled over the runs"
    )
    for run in runs:
        f = run.daemon.figures
        print(
            f"at {run.interval:g} s: {int(f['samples_stored']):,} samples stored "
            f"({int(f['sample_rows']):,} rows; {int(f['ticks']):,} ticks x {int(f['gpus'])} "
            f"GPUs, {int(f['ticks_skipped'])} skipped, {int(f['samples_shed'])} shed) in "
            f"{int(f['batches']):,} commits; daemon CPU per scrape {_per_scrape_ms(f):.2f} ms "
            f"(so the 1/s scrapes make {_scrape_share(f) * 100:.2f} points of its CPU %); "
            f"generate_latest in-process p50 {f['render_p50_ms']:.2f} ms, p99 "
            f"{f['render_p99_ms']:.2f} ms ({int(f['render_bytes']):,} bytes); "
            f"{run.daemon.wall_s:.1f} s wall in all"
            + (f"; {int(f['pod_refreshes'])} pod list(s)" if run.kubernetes else "")
        )
    print(_per_tick_line(runs))


def _label(run: Run) -> str:
    label = f"xidwatch Daemon + HTTP port, {GPUS} simulated GPUs at {run.interval:g} s"
    if run.kubernetes:
        pods = int(run.daemon.figures["pods"])
        label += f", Kubernetes on ({pods} pods: attribution, Events, condition)"
    return label


def _scrape_share(f: dict[str, float]) -> float:
    """The 1/s scrapes' part of the steady CPU, as a fraction of one core."""
    return _per_scrape_ms(f) / 1000 / SCRAPE_EVERY_S


def _per_tick_line(runs: Sequence[Run]) -> str:
    """CPU per tick and the fixed floor, by difference of the shortest and longest interval."""
    by_interval = sorted(runs, key=lambda r: r.interval)
    short, long = by_interval[0], by_interval[-1]
    if short.interval == long.interval:
        f = short.daemon.figures
        per_tick = f["steady_cpu_s"] / max(1, int(f["ticks"])) * 1000
        return f"whole-daemon CPU per tick of {GPUS} GPUs: {per_tick:.1f} ms (CPU / ticks)"

    def net(r: Run) -> float:  # fraction of a core, the 1/s scrapes taken out
        f = r.daemon.figures
        return f["steady_cpu_s"] / f["steady_wall_s"] - _scrape_share(f)

    tick_s = (net(short) - net(long)) / (1 / short.interval - 1 / long.interval)
    floor = net(long) - tick_s / long.interval
    return (
        f"by difference of the {short.interval:g} s and {long.interval:g} s runs, scrapes "
        f"taken out: {tick_s * 1000:.1f} ms of CPU per sampling tick of {GPUS} GPUs, and a "
        f"floor of {floor * 100:.2f} % of a core at any interval (the loops that wake on "
        "their own: uvicorn's, 10/s; checkpoints and the NVML event wait, 2/s each; kmsg "
        "only when the kernel writes)"
    )


def _intervals(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--intervals {text!r}: seconds, e.g. 1,10") from e
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--intervals {text!r}: seconds > 0, e.g. 1,10")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["--child"]:
        child(args[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.overhead")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument(
        "--intervals",
        type=_intervals,
        default=list(DEFAULT_INTERVALS),
        help="sample intervals in seconds, comma-separated (default 1,10)",
    )
    parser.add_argument(
        "--no-kubernetes", action="store_true", help="skip the run with a Kubernetes API"
    )
    # ``python -m bench`` calls main() with its own argv; take only our flags from it.
    known = parser.parse_known_args(args)[0]
    seconds: float = known.seconds
    intervals: list[float] = known.intervals
    print(
        f"overhead: the daemon with {GPUS} simulated GPUs sampled every "
        f"{' and '.join(f'{i:g}' for i in intervals)} s, kmsg and NVML events on, its HTTP "
        f"port serving, for {seconds:g} s each in a subprocess of its own, /metrics scraped "
        f"every {SCRAPE_EVERY_S:g} s and then {BURST} times back to back"
    )
    with tempfile.TemporaryFile("w+") as peer_err:
        peer_proc = Child(["--prometheus-peer"], peer_err)
        try:
            peer_port = int(peer_proc.expect("ready", READY_TIMEOUT_S)["port"])
            peer_scrapes = Scrapes()
            runs = [run_interval(i, seconds, peer_port, peer_scrapes) for i in intervals]
            if not known.no_kubernetes:
                with tempfile.TemporaryDirectory() as tmp, fake_cluster(Path(tmp)) as kubeconfig:
                    run = run_interval(intervals[-1], seconds, peer_port, peer_scrapes, kubeconfig)
                    runs.append(run)
            peer_proc.tell("stop")
            peer = peer_proc.finish()
        finally:
            peer_proc.kill()
    baseline = spawn(["--seconds", str(min(seconds, BASELINE_SECONDS)), "--baseline"])
    report(runs, baseline, peer, peer_scrapes)


if __name__ == "__main__":
    main()
