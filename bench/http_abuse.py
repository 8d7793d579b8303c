"""The HTTP port under attack: peak RSS and ``/healthz`` latency, 200 worst-case requests at once.

What is measured: the real daemon, ``xidwatch run --simulate 2 --no-kmsg --listen
127.0.0.1:0`` (as ``python -m xidwatch``, a subprocess on its own core), with its default
:class:`mcp_server.http_limits.HttpLimits`. ``ROUNDS`` times, ``CONCURRENT`` clients each
open a connection and POST the worst request the limits still let through to the tool
handler, all at once: a ``tools/call`` of ``explain_xid`` whose extra argument fills the
body limit with the most values the JSON limit allows (small objects) and a string at the
string limit; every round also sends one request of each kind the limits refuse (too big,
too deep, too many values). A prober in its own process (so that the attackers' work is
not on its clock) GETs ``/healthz`` on a fresh connection every 20 ms meanwhile, as a
kubelet does.

Figures: the daemon's RSS once started and idle, its peak over the whole run (``VmHWM``)
and after; the answers by status (a body refused by its declared length is answered 413
before it is read, so a client still sending it may see the connection reset instead);
``/healthz`` latency p50, p99 and max. Run: ``python -m bench.http_abuse``
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench._common import machine_line, percentile
from mcp_server.http_limits import HttpLimits
from tests.daemons import DaemonProcess

CONCURRENT = 200
ROUNDS = 3
LIMITS = HttpLimits()


def worst_body(limits: HttpLimits = LIMITS) -> bytes:
    """The largest, widest request the limits let through, for a tool that ignores extras."""
    head = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    start = json.dumps(head)[:-1].encode() + b', "params": {"name": "explain_xid", "arguments": '
    text = b'"' + b"x" * (limits.max_string_bytes - 1024) + b'"'
    item = b'{"k":"v"}'
    count = (limits.max_json_values - 16) // 2  # a container and a separator each
    room = limits.max_body_bytes - len(start) - len(text) - 64
    count = min(count, room // (len(item) + 1))
    items = b",".join([item] * count)
    return start + b'{"code": 79, "s": ' + text + b', "pad": [' + items + b"]}}}"


REFUSED = {
    "too-big": b'{"pad": "' + b"x" * (LIMITS.max_body_bytes + 1) + b'"}',
    "too-deep": b"[" * 1000 + b"]" * 1000,
    "too-wide": b"[" + b",".join([b"0"] * (LIMITS.max_json_values + 1)) + b"]",
}


def _request(body: bytes, port: int) -> bytes:
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def _one(port: int, raw: bytes) -> str:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(60):
            answer = await reader.read()
        writer.close()
    except (OSError, TimeoutError) as e:
        return type(e).__name__
    return answer[9:12].decode() or "closed"


async def _round(port: int) -> Counter[str]:
    worst = _request(worst_body(), port)
    raws = [worst] * CONCURRENT + [_request(b, port) for b in REFUSED.values()]
    return Counter(await asyncio.gather(*(_one(port, raw) for raw in raws)))


def _probe(url: str, done: Any, results: Any) -> None:
    """GET ``url`` on a fresh connection every 20 ms until ``done``; latencies (s) to
    ``results`` (infinite for a failure)."""
    latencies: list[float] = []
    while not done.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                ok = r.status == 200 and r.read() == b"ok\n"
        except OSError:
            ok = False
        latencies.append(time.perf_counter() - started if ok else float("inf"))
        done.wait(0.02)
    results.put(latencies)


def measure() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        d = DaemonProcess(Path(tmp), ("--simulate", "2", "--no-kmsg"))
        try:
            time.sleep(2)  # settled: a couple of sampler ticks
            before_kib = d.memory_kib()
            spawn = multiprocessing.get_context("spawn")
            done, results = spawn.Event(), spawn.Queue()
            prober = spawn.Process(target=_probe, args=(f"{d.url}/healthz", done, results))
            prober.start()
            outcomes: Counter[str] = Counter()
            started = time.perf_counter()
            try:
                for _ in range(ROUNDS):
                    outcomes += asyncio.run(_round(d.port))
            finally:
                took_s = time.perf_counter() - started
                done.set()
                latencies: list[float] = results.get(timeout=60)
                prober.join()
            return {
                "rss_before_mib": before_kib / 1024,
                "rss_peak_mib": d.memory_kib("VmHWM") / 1024,
                "rss_after_mib": d.memory_kib() / 1024,
                "outcomes": dict(outcomes),
                "took_s": took_s,
                "healthz_ms": [s * 1000 for s in latencies],
            }
        finally:
            d.stop()


def main() -> None:
    body = worst_body()
    figures = measure()
    healthz: list[float] = figures["healthz_ms"]  # type: ignore[assignment]
    print(f"HTTP port under attack -- {machine_line()}")
    print(
        f"{ROUNDS} rounds of {CONCURRENT} concurrent worst-case tools/call "
        f"({len(body):,} bytes, {LIMITS.max_json_values:,}-value limit) + 3 refused, "
        f"in {figures['took_s']:.1f} s; answers by status: {figures['outcomes']}"
    )
    print(
        f"daemon RSS: {figures['rss_before_mib']:.0f} MiB before, "
        f"peak {figures['rss_peak_mib']:.0f} MiB, {figures['rss_after_mib']:.0f} MiB after"
    )
    print(
        f"/healthz during the attack ({len(healthz)} probes): "
        f"p50 {percentile(healthz, 50):.0f} ms, p99 {percentile(healthz, 99):.0f} ms, "
        f"max {max(healthz):.0f} ms"
    )


if __name__ == "__main__":
    main()
