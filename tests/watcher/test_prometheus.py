"""/metrics as Prometheus reads it: the real daemon, rendered and parsed by prometheus_client."""

from __future__ import annotations

import asyncio
import importlib.metadata
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from store.flood import FloodPolicy
from store.records import GpuInfo, GpuSample
from store.retention import RetentionPolicy
from tests.daemons import run_scenario
from tests.waiting import wait_until_async
from watcher.clock import now_ms
from watcher.config import DaemonConfig, SimulationSpec
from watcher.daemon import Daemon, HostFacts
from watcher.kernel.catalog import default_catalog
from watcher.kernel.kmsg import KmsgSource
from watcher.prometheus import DaemonCollector, gpu_metrics
from watcher.sim.kmsgdev import MemoryKmsgDevice

GPU = frozenset({"gpu", "uuid", "pci_bus_id", "model"})
# docs/metrics.md: sample name -> (type, label names)
GPU_CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "xidwatch_gpu_temperature_celsius": ("gauge", GPU),
    "xidwatch_gpu_slowdown_temperature_celsius": ("gauge", GPU),
    "xidwatch_gpu_shutdown_temperature_celsius": ("gauge", GPU),
    "xidwatch_gpu_power_watts": ("gauge", GPU),
    "xidwatch_gpu_power_limit_watts": ("gauge", GPU),
    "xidwatch_gpu_sm_clock_hertz": ("gauge", GPU),
    "xidwatch_gpu_memory_clock_hertz": ("gauge", GPU),
    "xidwatch_gpu_utilization_ratio": ("gauge", GPU),
    "xidwatch_gpu_memory_utilization_ratio": ("gauge", GPU),
    "xidwatch_gpu_memory_used_bytes": ("gauge", GPU),
    "xidwatch_gpu_memory_total_bytes": ("gauge", GPU),
    "xidwatch_gpu_ecc_errors_total": ("counter", GPU | {"type", "counter"}),
    "xidwatch_gpu_remapped_rows_total": ("counter", GPU | {"type"}),
    "xidwatch_gpu_remap_pending": ("gauge", GPU),
    "xidwatch_gpu_remap_failure": ("gauge", GPU),
    "xidwatch_gpu_throttle_active": ("gauge", GPU | {"reason"}),
    "xidwatch_gpu_pcie_replays_total": ("counter", GPU),
    "xidwatch_gpu_nvlink_active_links": ("gauge", GPU),
    "xidwatch_gpu_nvlink_errors_total": ("counter", GPU),
    "xidwatch_gpu_processes": ("gauge", GPU),
    "xidwatch_gpu_lost": ("gauge", GPU),
    "xidwatch_gpu_last_sample_timestamp_seconds": ("gauge", GPU),
    "xidwatch_gpu_verdict_action": ("gauge", GPU | {"action", "cause"}),
}
NONE: frozenset[str] = frozenset()
SELF_CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "xidwatch_xid_events_total": (
        "counter",
        frozenset({"xid", "kind", "pci_bus_id", "action", "injected"}),
    ),
    "xidwatch_build_info": ("gauge", frozenset({"version"})),
    "xidwatch_start_time_seconds": ("gauge", NONE),
    "xidwatch_kmsg_records_read_total": ("counter", NONE),
    "xidwatch_kmsg_records_lost_total": ("counter", NONE),
    "xidwatch_log_records_total": ("counter", frozenset({"source"})),
    "xidwatch_xid_parse_failures_total": ("counter", NONE),
    "xidwatch_writer_queue_depth": ("gauge", NONE),
    "xidwatch_writer_commits_total": ("counter", NONE),
    "xidwatch_writer_commit_retries_total": ("counter", NONE),
    "xidwatch_writer_last_commit_seconds": ("gauge", NONE),
    "xidwatch_writer_failing": ("gauge", NONE),
    "xidwatch_samples_stored_total": ("counter", NONE),
    "xidwatch_samples_shed_total": ("counter", NONE),
    "xidwatch_sample_ticks_total": ("counter", NONE),
    "xidwatch_sample_ticks_skipped_total": ("counter", NONE),
    "xidwatch_nvml_up": ("gauge", NONE),
    "xidwatch_nvml_errors_total": ("counter", frozenset({"call"})),
    "xidwatch_last_successful_sample_timestamp_seconds": ("gauge", NONE),
    "xidwatch_k8s_up": ("gauge", NONE),
    "xidwatch_k8s_pods": ("gauge", NONE),
    "xidwatch_k8s_pod_list_failures_total": ("counter", NONE),
    "xidwatch_k8s_pid_lookups_total": ("counter", frozenset({"result"})),
    "xidwatch_k8s_events_posted_total": ("counter", NONE),
    "xidwatch_k8s_event_failures_total": ("counter", NONE),
    "xidwatch_k8s_events_suppressed_total": ("counter", frozenset({"reason"})),
    "xidwatch_node_verdict_action": ("gauge", frozenset({"action", "cause"})),
}
# What a lost GPU still exports: discovery facts and its state; the rest are readings.
GPU_FACTS = {
    "xidwatch_gpu_lost",
    "xidwatch_gpu_verdict_action",
    "xidwatch_gpu_last_sample_timestamp_seconds",
    "xidwatch_gpu_slowdown_temperature_celsius",
    "xidwatch_gpu_shutdown_temperature_celsius",
    "xidwatch_gpu_memory_total_bytes",
}
RETENTION = RetentionPolicy()
RUNAWAY_PCI = "00000000:86:00.0"  # the simulated fleet's GPU 2, whose cooling fails

Scrape = dict[str, tuple[str, list[Sample]]]


def registry_for(daemon: Daemon) -> CollectorRegistry:
    """A registry holding the daemon's collector, as ``xidwatch run --listen`` builds it."""
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    return registry


def scrape(daemon: Daemon) -> Scrape:
    """Render /metrics as the HTTP endpoint does and parse it as Prometheus would."""
    text = generate_latest(registry_for(daemon)).decode()
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        out[name] = (family.type, [s for s in family.samples if s.name == name])
    return out


def value(metrics: Scrape, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    (match,) = [s.value for s in metrics[name][1] if labels.items() <= s.labels.items()]
    return match


def by_gpu(metrics: Scrape, name: str) -> dict[str, float]:
    return {s.labels["gpu"]: s.value for s in metrics[name][1]}


@pytest.fixture(scope="module")
def runaway(tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    """The thermal-runaway story played to its end; the stopped daemon keeps its state."""
    db_path = tmp_path_factory.mktemp("runaway") / "xidwatch.db"
    spec = SimulationSpec(2, scenario="thermal-runaway", speed=100)
    daemon = asyncio.run(run_scenario(db_path, spec))
    # The board refreshes a second after XIDs land; the story ends sooner than that.
    asyncio.run(
        daemon.verdicts.refresh(db_path, node="sim-node", now_ms=now_ms(), retention=RETENTION)
    )
    return daemon


def test_the_verdict_gauges_say_what_each_gpu_and_the_node_need(runaway: Daemon) -> None:
    """An alert routes on ``action``: the GPU that fell off the bus needs the node rebooted."""
    metrics = scrape(runaway)
    lost = value(metrics, "xidwatch_gpu_verdict_action", pci_bus_id=RUNAWAY_PCI)
    assert lost == 5  # reboot_node, in none .. replace_gpu
    (sample,) = [
        s
        for s in metrics["xidwatch_gpu_verdict_action"][1]
        if s.labels["pci_bus_id"] == RUNAWAY_PCI
    ]
    assert (sample.labels["action"], sample.labels["cause"]) == ("reboot_node", "thermal")
    assert value(metrics, "xidwatch_node_verdict_action", action="reboot_node") == 5
    others = [s.value for s in metrics["xidwatch_gpu_verdict_action"][1] if s is not sample]
    assert others == [0, 0, 0]


def test_every_contract_metric_is_exported_with_its_type_and_labels(runaway: Daemon) -> None:
    metrics = scrape(runaway)
    for name, (kind, labels) in {**GPU_CONTRACT, **SELF_CONTRACT}.items():
        assert name in metrics, name
        assert metrics[name][0] == kind, name
        assert all(set(s.labels) == labels for s in metrics[name][1]), name
    assert set(metrics) == set(GPU_CONTRACT) | set(SELF_CONTRACT)  # nothing beyond the contract


def test_gpu_readings_are_in_prometheus_base_units(runaway: Daemon) -> None:
    metrics = scrape(runaway)
    live = ["0", "1", "3"]  # GPU 2 fell off the bus
    temps = by_gpu(metrics, "xidwatch_gpu_temperature_celsius")
    slowdown = by_gpu(metrics, "xidwatch_gpu_slowdown_temperature_celsius")
    power = by_gpu(metrics, "xidwatch_gpu_power_watts")
    limit = by_gpu(metrics, "xidwatch_gpu_power_limit_watts")
    used = by_gpu(metrics, "xidwatch_gpu_memory_used_bytes")
    total = by_gpu(metrics, "xidwatch_gpu_memory_total_bytes")
    assert sorted(temps) == live
    assert slowdown == dict.fromkeys(["0", "1", "2", "3"], 89.0)  # H100 discovery facts
    assert by_gpu(metrics, "xidwatch_gpu_shutdown_temperature_celsius")["2"] == 92.0
    for gpu in live:
        assert 20 <= temps[gpu] < slowdown[gpu]
        assert 0 < power[gpu] <= limit[gpu] == 700.0  # watts, not milliwatts
        assert 1e8 <= by_gpu(metrics, "xidwatch_gpu_sm_clock_hertz")[gpu] <= 3e9
        assert 1e9 <= by_gpu(metrics, "xidwatch_gpu_memory_clock_hertz")[gpu] <= 4e9
        assert 0 <= by_gpu(metrics, "xidwatch_gpu_utilization_ratio")[gpu] <= 1
        assert 0 <= by_gpu(metrics, "xidwatch_gpu_memory_utilization_ratio")[gpu] <= 1
        assert 0 < used[gpu] < total[gpu]
        assert 70e9 < total[gpu] < 90e9  # an 80 GB card, in bytes
    reasons = {s.labels["reason"] for s in metrics["xidwatch_gpu_throttle_active"][1]}
    assert reasons == {"sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"}
    ecc = {
        (s.labels["type"], s.labels["counter"]) for s in metrics["xidwatch_gpu_ecc_errors_total"][1]
    }
    assert ecc == {(t, c) for t in ("corrected", "uncorrected") for c in ("volatile", "aggregate")}


def test_the_lost_gpu_is_flagged_and_exports_no_stale_readings(runaway: Daemon) -> None:
    metrics = scrape(runaway)
    assert by_gpu(metrics, "xidwatch_gpu_lost") == {"0": 0, "1": 0, "2": 1, "3": 0}
    assert value(metrics, "xidwatch_gpu_lost", gpu="2") == 1
    assert value(metrics, "xidwatch_gpu_lost", pci_bus_id=RUNAWAY_PCI) == 1
    sampler = runaway.sampler
    assert sampler is not None
    (uuid,) = sampler.lost_uuids
    assert (sampler.latest[uuid].temperature_c or 0) >= 89  # hot when it fell; stale now
    for name in set(GPU_CONTRACT) - GPU_FACTS:
        assert "2" not in {s.labels["gpu"] for s in metrics[name][1]}, name
    seen = by_gpu(metrics, "xidwatch_gpu_last_sample_timestamp_seconds")
    assert seen["2"] < min(seen["0"], seen["1"], seen["3"])  # when it was last read


def test_the_scenario_xids_are_counted_with_their_catalog_action(runaway: Daemon) -> None:
    samples = scrape(runaway)["xidwatch_xid_events_total"][1]
    counted = {(s.labels["xid"], s.labels["action"]): s.value for s in samples}
    assert counted == {
        ("62", "RESET_GPU"): 1,
        ("79", "RESTART_BM"): 1,
        ("45", "WORKFLOW_XID_45"): 1,
    }
    assert {(s.labels["kind"], s.labels["pci_bus_id"]) for s in samples} == {("xid", RUNAWAY_PCI)}


def test_self_metrics_count_what_the_daemon_did(runaway: Daemon) -> None:
    m = scrape(runaway)
    kmsg_read = value(m, "xidwatch_kmsg_records_read_total")
    assert kmsg_read >= 3  # the three XID lines, at least
    assert value(m, "xidwatch_log_records_total", source="kmsg") == kmsg_read
    assert value(m, "xidwatch_kmsg_records_lost_total") == 0
    assert value(m, "xidwatch_xid_parse_failures_total") == 0
    assert value(m, "xidwatch_writer_commits_total") == runaway.writer.stats.batches > 0
    assert value(m, "xidwatch_samples_stored_total") == runaway.writer.stats.samples_stored > 0
    assert value(m, "xidwatch_sample_ticks_total") > 10
    assert 0 < value(m, "xidwatch_writer_last_commit_seconds") < 5
    assert value(m, "xidwatch_writer_failing") == 0
    assert value(m, "xidwatch_writer_queue_depth") == 0
    assert value(m, "xidwatch_nvml_up") == 1
    started = value(m, "xidwatch_start_time_seconds")
    assert started < value(m, "xidwatch_last_successful_sample_timestamp_seconds") < started + 60
    version = importlib.metadata.version("k8s-gpu-mcp-server")
    assert value(m, "xidwatch_build_info", version=version) == 1


def test_nvml_units_become_base_units_and_unsupported_readings_are_absent() -> None:
    info = GpuInfo("GPU-a", 0, "NVIDIA H100", "00000000:3B:00.0", memory_total_bytes=80 << 30)
    sample = GpuSample(
        "GPU-a",
        ts_ms=1_700_000_000_500,
        sm_clock_mhz=1980,
        gpu_util_pct=90,
        memory_util_pct=35,
        remap_pending=True,
        clocks_event_reasons=0x20 | 0x8,  # SW thermal + HW slowdown
    )
    families = {f.name: f.samples for f in gpu_metrics([info], {"GPU-a": sample}, frozenset())}
    one = {name: samples[0].value for name, samples in families.items() if len(samples) == 1}
    assert one["xidwatch_gpu_sm_clock_hertz"] == 1.98e9
    assert one["xidwatch_gpu_utilization_ratio"] == 0.9
    assert one["xidwatch_gpu_memory_utilization_ratio"] == 0.35
    assert one["xidwatch_gpu_remap_pending"] == 1
    assert one["xidwatch_gpu_memory_total_bytes"] == 80 << 30  # from discovery
    assert one["xidwatch_gpu_last_sample_timestamp_seconds"] == 1_700_000_000.5
    throttle = {s.labels["reason"]: s.value for s in families["xidwatch_gpu_throttle_active"]}
    assert throttle == {
        "sw_power_cap": 0,
        "hw_slowdown": 1,
        "sw_thermal": 1,
        "hw_thermal": 0,
        "hw_power_brake": 0,
    }
    assert families["xidwatch_gpu_temperature_celsius"] == []  # NotSupported: no sample
    assert families["xidwatch_gpu_ecc_errors"] == []


async def test_without_nvml_only_self_metrics_and_exact_counts_through_a_flood(
    db_path: Path,
) -> None:
    device = MemoryKmsgDevice(capacity=16)
    started_ms = now_ms()
    daemon = Daemon(
        DaemonConfig(
            db_path=db_path,
            node="no-gpu",
            nvml=False,
            flood=FloodPolicy(burst=5, per_minute=1),
            checkpoint_interval_s=0.05,
        ),
        host=HostFacts(
            boot_id="test-boot", boot_wall_ms=lambda: started_ms, open_kmsg=device.reopen
        ),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await daemon.ready.wait()
        (source,) = daemon.sources
        assert isinstance(source, KmsgSource)
        device.write("NVRM: Xid (PCI:0000:3b:00): garbled")  # looks like an XID, does not parse
        await wait_until_async(lambda: source.stats.records_read == 1)
        for n in range(50):  # faster than the reader: the ring of 16 overflows, 34 are lost
            device.write(f"NVRM: Xid (PCI:0000:3b:00): 13, pid={n}, name=app, Graphics Exception")
        await wait_until_async(lambda: sum(daemon.xid_counts.snapshot().values()) == 16)
    finally:
        stop.set()
        await task
        device.dispose()
    m = scrape(daemon)
    # No per-GPU readings at all; the GPUs known from XID lines alone still get a verdict.
    assert set(m) == set(SELF_CONTRACT) | {"xidwatch_gpu_verdict_action"}
    assert value(m, "xidwatch_nvml_up") == 0
    assert value(m, "xidwatch_sample_ticks_total") == 0
    assert value(m, "xidwatch_last_successful_sample_timestamp_seconds") == 0
    assert m["xidwatch_nvml_errors_total"][1] == []
    assert value(m, "xidwatch_kmsg_records_read_total") == 17
    assert value(m, "xidwatch_kmsg_records_lost_total") == 34
    assert value(m, "xidwatch_log_records_total", source="kmsg") == 17
    assert value(m, "xidwatch_xid_parse_failures_total") == 1
    assert value(m, "xidwatch_writer_commits_total") > 0
    with sqlite3.connect(db_path) as conn:
        rows, events = conn.execute("SELECT count(*), sum(count) FROM xid_events").fetchone()
    assert rows < events == 16  # the flood was folded in the store ...
    (xids,) = m["xidwatch_xid_events_total"][1]
    assert xids.value == 16  # ... and counted exactly here
    assert xids.labels == {
        "xid": "13",
        "kind": "xid",
        "pci_bus_id": "00000000:3B:00.0",
        "action": default_catalog().lookup(13).immediate_action,
        "injected": "false",
    }


def test_a_scrape_opens_no_file_socket_or_database_and_calls_no_nvml(runaway: Daemon) -> None:
    # The daemon has stopped: NVML is shut down, so any NVML call in collect() would raise.
    with pytest.raises(pynvml.NVMLError):
        pynvml.nvmlDeviceGetCount()
    assert _io_during(lambda: importlib.metadata.version("k8s-gpu-mcp-server"))  # it sees I/O
    registry = registry_for(runaway)  # the collector reads the package version here, once
    assert _io_during(lambda: generate_latest(registry)) == []  # what GET /metrics runs
    assert _io_during(lambda: generate_latest(registry)) == []  # and again: nothing lazy


_IO_EVENTS = ("open", "os.listdir", "os.scandir", "sqlite3.", "socket.", "subprocess.", "ctypes.")
_watched: dict[int, list[str]] = {}
_hooked = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    seen = _watched.get(threading.get_ident())
    if seen is not None and event.startswith(_IO_EVENTS):
        seen.append(event)


def _io_during(work: Callable[[], object]) -> list[str]:
    """The I/O audit events (PEP 578) that ``work`` raises on this thread."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)  # cannot be removed; idle unless a thread is watched
        _hooked = True
    seen = _watched[threading.get_ident()] = []
    try:
        work()
    finally:
        del _watched[threading.get_ident()]
    return seen
