"""Parse rate: kernel log records per second through xidwatch's kmsg reader and XID parser.

What is measured: the daemon's hot path for a busy kernel log. ``N_RECORDS`` records (98%
ordinary kernel noise of many shapes, 2% XID/SXid lines of the published shapes, see
``watcher.kernel.parser``) sit in a :class:`watcher.sim.kmsgdev.MemoryKmsgDevice`; one timed call of
``KmsgSource._drain`` reads them one record per ``read`` (as from /dev/kmsg), parses the
kmsg header, and hands each record to ``XidPipeline.handle`` (fast-path test, regexes,
catalog lookup, merges), whose events go to a list.

Peers, timed in the same rounds (the order is rotated each round):

- naive: the same reader, but every record's text goes through ``_XID_RE`` and then
  ``_SXID_RE`` with no fast-path substring test;
- reader alone: the same reader with a sink that does nothing (the floor the parser
  sits on);
- ``grep -c Xid`` over the same records written to a file, as lines/s (process start
  included): what an SRE runs today.

Each figure is the median of ``ROUNDS`` rounds with min and max. Filling the device is not
timed. Two smaller figures follow the table: the reader alone over a ``SMALL_DEVICE``-record
device (a check that the double's per-read cost does not grow with the ring's size), and
the two parsers called directly on the same texts, without reader or pipeline, in ns/record.
"""

from __future__ import annotations

import gc
import itertools
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._common import Spread, fmt_int, log_like_production, table
from watcher.kernel.catalog import default_catalog
from watcher.kernel.kmsg import KmsgSource, format_kmsg_record
from watcher.kernel.parser import _SXID_RE, _XID_RE, parse_xid
from watcher.pipeline import XidPipeline
from watcher.records import LogRecord
from watcher.sim.kmsgdev import MemoryKmsgDevice

N_RECORDS = 200_000
XID_SHARE = 0.02
ROUNDS = 5
SEED = 20_241_125
SMALL_DEVICE = 20_000

Line = tuple[int, str]  # (syslog facility, text)
Sink = Callable[[LogRecord], None]
SinkFactory = Callable[[], tuple[Sink, Callable[[], int]]]

BUSES = ("07", "0f", "47", "4e", "87", "90", "b7", "bd")

# Ordinary kernel (and some user-space) noise as (weight, facility, template); placeholders
# are filled per line. Container churn, audit and firewall lines dominate on a busy GPU node;
# NVRM lines that are not XIDs (one says "Xid") appear, but rarely, as at driver load.
NOISE: tuple[tuple[float, int, str], ...] = (
    (4, 0, "perf: interrupt took too long ({n} > {m}), lowering kernel.perf_event_max_sample_rate"),
    (2, 0, "EXT4-fs (nvme{cpu}n1p1): mounted filesystem with ordered data mode. Quota mode: none."),
    (10, 0, "IPv6: ADDRCONF(NETDEV_CHANGE): cali{hex}: link becomes ready"),
    (10, 0, "cali{hex}: entered promiscuous mode"),
    (10, 0, "eth0: renamed from tmp{hex}"),
    (
        15,
        0,
        'audit: type=1400 audit({n}.{m}:{pid}): apparmor="DENIED" operation="open" '
        'profile="cri-containerd.apparmor.d" name="/proc/{pid}/mounts" pid={pid} '
        'comm="runc" requested_mask="r" denied_mask="r" fsuid=0 ouid=0',
    ),
    (3, 0, "kauditd_printk_skb: {n} callbacks suppressed"),
    (0.2, 0, "nvidia-uvm: Loaded the UVM driver, major device number 508."),
    (0.2, 0, "NVRM: GPU at PCI:0000:{bus}:00: GPU-{hex}-1a2b-3c4d-5e6f-{hex}{hex}"),
    (0.2, 0, "NVRM: Xid is reported through the kernel log; see nvidia-smi -q for ECC state"),
    (
        0.2,
        0,
        "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024",
    ),
    (3, 0, "pcieport 0000:{bus}:01.0: AER: Corrected error received: 0000:{bus}:00.0"),
    (
        2,
        0,
        "pcieport 0000:{bus}:01.0: PCIe Bus Error: severity=Corrected, type=Physical Layer, "
        "(Receiver ID)\n  device [10de:2330] error status/mask=00000001/0000e000",
    ),
    (
        1,
        0,
        "python3[{pid}]: segfault at 0 ip 00007f{hex} sp 00007ffd{hex} error 4 in "
        "libcuda.so.550.54.15[7f{hex}+1c00000] likely on CPU {cpu} (core {cpu}, socket 0)",
    ),
    (
        1,
        0,
        "Out of memory: Killed process {pid} (python3) total-vm:{n}kB, anon-rss:{m}kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:{m}kB oom_score_adj:999",
    ),
    (5, 0, "IPVS: rr: TCP 10.96.{cpu}.{m}:443 - no destination available"),
    (
        15,
        0,
        "[UFW BLOCK] IN=eth0 OUT= MAC=0c:42:a1:{cpu}{cpu}:00:01 SRC=10.0.{cpu}.{m} "
        "DST=10.0.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID={n} DF PROTO=TCP SPT={pid} DPT=10250",
    ),
    (
        1,
        0,
        "mlx5_core 0000:{bus}:00.1: mlx5_pcie_event: PCIe slot power capability was not advertised",
    ),
    (0.5, 0, "usb 1-{cpu}: Product: Überwachungs-Hub {n}"),
    (2, 0, "TCP: request_sock_TCP: Possible SYN flooding on port 10250. Sending cookies."),
    (10, 3, "systemd[1]: Started cri-containerd-{hex}{hex}.scope - libcontainer container {hex}."),
    (5, 3, "containerd[{pid}]: time=2024-11-24T02:00:00Z level=info msg=StartContainer id={hex}"),
)
NOISE_CUM_WEIGHTS = tuple(itertools.accumulate(w for w, _, _ in NOISE))

# The published XID/SXid shapes: with and without "PCI:", MIG, pid present, '<unknown>' or
# absent, the old channel form, SXid lines and their detail lines, "fallen off the bus".
XIDS: tuple[str, ...] = (
    "NVRM: Xid (PCI:0000:{bus}:00): 13, pid={pid}, name=python3, Graphics SM Warp Exception "
    "on (GPC 1, TPC 2, SM 0): Out Of Range Address",
    "NVRM: Xid (PCI:0000:{bus}:00): 31, pid={pid}, name=python3, Ch 00000010, intr 00000000. "
    "MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f3a_2c000000. Fault is of type "
    "FAULT_PDE ACCESS_TYPE_VIRT_READ",
    "NVRM: Xid (PCI:0000:{bus}:00): 43, pid={pid}, name=trainer, Ch 00000008",
    "NVRM: Xid (0000:{bus}:00): 48, An uncorrectable double bit error (DBE) has been "
    "detected on GPU in the framebuffer at partition 6, subpartition 0.",
    "NVRM: Xid (PCI:0000:{bus}:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off "
    "the bus.",
    "NVRM: GPU 0000:{bus}:00.0: GPU has fallen off the bus.",
    "NVRM: Xid (PCI:0000:{bus}:00 GPU-I:02 GPU-CI:00): 31, pid={pid}, name=infer, Ch 00000021, "
    "intr 00000000. MMU Fault: ENGINE GRAPHICS faulted @ 0x0_00000000. Fault is of type "
    "FAULT_PTE ACCESS_TYPE_VIRT_WRITE",
    "NVRM: Xid (PCI:0000:{bus}:00): 94, pid={pid}, name=python3, Contained: SM (0x1). "
    "RST: No, D-RST: No",
    "NVRM: Xid (PCI:0000:{bus}:00): 63, Row Remapper: New row (0x0000000000{hex}) was marked "
    "for remapping, reset gpu to activate.",
    "NVRM: Xid (0000:{bus}:00): 13, 0001 00000000 0000a1c0 00000368 00000000 00000000",
    "NVRM: Xid (PCI:0000:{bus}:00): 45, pid={pid}, name=trainer, Ch 00000008, caused by "
    "previous Xid 79",
    "NVRM: Xid (PCI:0000:{bus}:00): 119, pid={pid}, name=python3, Timeout after 6s of waiting "
    "for RPC response from GPU1 GSP! Expected function 76 (GSP_RM_CONTROL) (0x2080014b 0x5).",
    "nvidia-nvswitch2: SXid (PCI:0000:{bus}:00.0): 12028, Non-fatal, Link 47 egress "
    "non-posted PRIV error (First)",
    "nvidia-nvswitch2: SXid (PCI:0000:{bus}:00.0): 12028, Severity 0 Engine instance 47 "
    "Sub-engine instance 00",
    "nvidia-nvswitch2: SXid (PCI:0000:{bus}:00.0): 12028, Data {{0x00000000, 0x00000000, "
    "0x00000000, 0x00000000}}",
)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        n=rng.randrange(1, 1 << 20),
        m=rng.randrange(1, 256),
        pid=rng.randrange(300, 4_000_000),
        cpu=rng.randrange(64),
        hex=f"{rng.getrandbits(32):08x}",
        bus=rng.choice(BUSES),
    )


def build_mix(n: int, xid_share: float, seed: int) -> list[Line]:
    """``n`` records, exactly ``round(n * xid_share)`` of them XID/SXid lines, shuffled."""
    rng = random.Random(seed)
    xid_at = set(rng.sample(range(n), round(n * xid_share)))
    lines: list[Line] = []
    for i in range(n):
        if i in xid_at:
            lines.append((0, _fill(rng.choice(XIDS), rng)))
        else:
            _, facility, template = rng.choices(NOISE, cum_weights=NOISE_CUM_WEIGHTS)[0]
            lines.append((facility, _fill(template, rng)))
    return lines


def fill_device(lines: list[Line]) -> MemoryKmsgDevice:
    """A device holding every line, one millisecond of kernel time apart."""
    device = MemoryKmsgDevice(capacity=len(lines))
    for i, (facility, text) in enumerate(lines):
        device.write(text, ts_usec=i * 1000, facility=facility)
    return device


def write_file(lines: list[Line], path: Path) -> None:
    """The same records as the device presents them, one per line, for grep."""
    with path.open("wb") as f:
        for seq, (facility, text) in enumerate(lines):
            f.write(format_kmsg_record(seq, text, ts_usec=seq * 1000, facility=facility))


def naive_match(text: str) -> re.Match[str] | None:
    """Both XID regexes on every text: no substring test first."""
    return _XID_RE.search(text) or _SXID_RE.search(text)


def xidwatch_sink() -> tuple[Sink, Callable[[], int]]:
    events: list[object] = []
    pipeline = XidPipeline(events.append, default_catalog(), node="bench")
    return pipeline.handle, lambda: pipeline.stats.events


def naive_sink() -> tuple[Sink, Callable[[], int]]:
    matches: list[re.Match[str]] = []

    def sink(record: LogRecord) -> None:
        if (m := naive_match(record.text)) is not None:
            matches.append(m)

    return sink, lambda: len(matches)


def null_sink() -> tuple[Sink, Callable[[], int]]:
    return (lambda record: None), lambda: 0


def time_drain(device: MemoryKmsgDevice, records: int, make_sink: SinkFactory) -> tuple[float, int]:
    """Seconds for one reader to drain the whole device into the sink, and its hit count."""
    source = KmsgSource(
        open_device=device.reopen, boot_id="bench", boot_wall_ms=lambda: 0, now_ms=lambda: 0
    )
    sink, hits = make_sink()
    opened = device.reopen()
    gc.collect()
    started = time.perf_counter()
    while source._drain(opened, sink):
        pass
    elapsed = time.perf_counter() - started
    if source.stats.records_read != records:
        raise RuntimeError(f"reader stopped early: {source.stats}")
    return elapsed, hits()


def time_grep(path: Path) -> tuple[float, int]:
    """Seconds for ``grep -c Xid FILE`` (process start included), and its count."""
    started = time.perf_counter()
    done = subprocess.run(["grep", "-c", "Xid", str(path)], capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    return elapsed, int(done.stdout or b"0")


PATHS: dict[str, SinkFactory] = {
    "xidwatch: KmsgSource + XidPipeline": xidwatch_sink,
    "naive: KmsgSource + _XID_RE/_SXID_RE on every record": naive_sink,
    "kmsg reader alone (sink does nothing)": null_sink,
}
GREP = "grep -c Xid, file of the same records (lines/s)"


def measure(device: MemoryKmsgDevice, grep_file: Path) -> dict[str, tuple[list[float], int]]:
    """Per path: records/s of each round (paths rotated per round), and the last hit count."""
    names = [*PATHS, GREP]
    rates: dict[str, list[float]] = {name: [] for name in names}
    hits: dict[str, int] = {}
    time_grep(grep_file)  # warm the page cache
    for r in range(ROUNDS):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name == GREP:
                elapsed, hits[name] = time_grep(grep_file)
            else:
                elapsed, hits[name] = time_drain(device, N_RECORDS, PATHS[name])
            rates[name].append(N_RECORDS / elapsed)
    return {name: (rates[name], hits[name]) for name in names}


def small_device_reader_rate(lines: list[Line]) -> Spread:
    """Reader-alone records/s over a device of only ``SMALL_DEVICE`` records."""
    device = fill_device(lines[:SMALL_DEVICE])
    try:
        times = [time_drain(device, SMALL_DEVICE, null_sink)[0] for _ in range(ROUNDS)]
    finally:
        device.dispose()
    return Spread.of([SMALL_DEVICE / t for t in times])


def parser_alone(lines: list[Line]) -> dict[str, Spread]:
    """ns/record of each parser called directly on the texts the pipeline would get."""
    texts = [text if facility == 0 else "" for facility, text in lines]
    parsers: dict[str, Callable[[str], object]] = {
        "xidwatch: parse_xid (substring test, then regexes)": parse_xid,
        "naive: _XID_RE then _SXID_RE on every text": naive_match,
    }
    times: dict[str, list[float]] = {name: [] for name in parsers}
    for _ in range(ROUNDS):
        for name, parse in parsers.items():
            started = time.perf_counter()
            for text in texts:
                parse(text)
            times[name].append((time.perf_counter() - started) / len(texts) * 1e9)
    return {name: Spread.of(ns) for name, ns in times.items()}


def report_parsers(spreads: dict[str, Spread]) -> None:
    base = next(iter(spreads.values())).median
    rows = [
        [name, f"{s.median:.0f}", f"[{s.low:.0f} .. {s.high:.0f}]", f"{base / s.median:.2f}x"]
        for name, s in spreads.items()
    ]
    print("\nthe parser alone over the same texts (no reader, no pipeline):")
    print(table(["parser", "ns/record (median)", "[min .. max]", "speed vs xidwatch"], rows))


def report(results: dict[str, tuple[list[float], int]], small: Spread) -> None:
    base = Spread.of(results[next(iter(PATHS))][0]).median
    rows = []
    for name, (rates, hits) in results.items():
        spread = Spread.of(rates)
        rows.append(
            [
                name,
                fmt_int(spread.median),
                f"[{fmt_int(spread.low)} .. {fmt_int(spread.high)}]",
                f"{1e6 / spread.median:.2f}",
                f"{spread.median / base:.2f}x",
                f"{hits:,}",
            ]
        )
    headers = ["path", "records/s (median)", "[min .. max]", "us/record", "vs xidwatch", "hits"]
    print(table(headers, rows))
    print(
        "hits: xidwatch = events produced, naive = regex matches, grep = lines counted. "
        f"The mix holds {round(N_RECORDS * XID_SHARE):,} XID/SXid/fallen-off-the-bus records; "
        "SXid detail lines and an implied 79 after a 79 are not events; the naive regexes "
        "miss fallen-off-the-bus lines, grep misses them too and also counts SXid details and "
        "other lines that mention Xid."
    )
    print(
        f"device double: the reader alone over a {SMALL_DEVICE:,}-record device does "
        f"{small.show()} records/s (per-read cost of the double does not depend on ring size)."
    )


def main() -> None:
    log_like_production()
    lines = build_mix(N_RECORDS, XID_SHARE, SEED)
    print(
        f"parse rate: {N_RECORDS:,} kmsg records ({XID_SHARE:.0%} XID/SXid), "
        f"{ROUNDS} rounds, median [min .. max]"
    )
    device = fill_device(lines)
    try:
        with tempfile.TemporaryDirectory(prefix="xidwatch-bench-") as tmp:
            grep_file = Path(tmp) / "kmsg.txt"
            write_file(lines, grep_file)
            results = measure(device, grep_file)
    finally:
        device.dispose()
    report(results, small_device_reader_rate(lines))
    report_parsers(parser_alone(lines))


if __name__ == "__main__":
    main()
