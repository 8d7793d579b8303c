"""Prometheus metrics for ``/metrics``: one collector that reads the daemon's memory at scrape.

Nothing here touches the disk or NVML on a scrape: GPU readings are the sampler's newest
tick (``NvmlSampler.latest``), counters are the parts' ``stats`` objects, and XID counts
are kept in memory from what the writer commits. So a scrape costs the same whether the
store is slow, the disk is full or a GPU hangs in the driver, and it can never make any
of those worse. Names, types and labels follow ``docs/metrics.md`` (the alert rules'
contract); units are Prometheus base units (celsius, watts, hertz, bytes, ratios 0..1).

``/metrics`` is served on the daemon's event loop thread, where the writer, pipeline and
sources update their counters, so a scrape sees each counter whole. The sampler's worker
thread is read only through what it publishes on the loop (``latest``, ``stats``) and
``lost_uuids``, a frozenset copied in one step under the GIL.

A GPU that answers GpuIsLost exports ``xidwatch_gpu_lost 1``, its discovery facts and the
time of its last sample, but none of its readings: its last temperature, clocks or ECC
counts are not current, and exporting them would keep a "too hot" alert firing (or a
"healthy" panel green) about a GPU nobody can read. Its last readings stay in the store,
where ``xidwatch trend`` and the MCP tools show them with their timestamps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from store.actions import action_rank
from store.records import GpuInfo, GpuSample, XidEvent
from store.telemetry import HW_POWER_BRAKE, HW_SLOWDOWN, HW_THERMAL, SW_POWER_CAP, SW_THERMAL
from watcher.kernel.kmsg import KmsgSource

if TYPE_CHECKING:
    from watcher.daemon import Daemon
    from watcher.verdicts import VerdictBoard

__all__ = [
    "DaemonCollector",
    "XidCounts",
    "gpu_metrics",
    "installed_version",
    "verdict_metrics",
]

DISTRIBUTION = "k8s-gpu-mcp-server"
GPU_LABELS = ("gpu", "uuid", "pci_bus_id", "model")
XidKey = tuple[int, str, str, str, bool]  # (xid, kind, pci_bus_id, action, injected)

# Unit conversions to the base unit, as (multiply, divide): exact for NVML's integers.
Scale = tuple[int, int]
_SAME: Scale = (1, 1)
_MHZ_TO_HZ: Scale = (1_000_000, 1)
_PCT_TO_RATIO: Scale = (1, 100)

# Readings exported as they are: (metric, help, GpuSample field, conversion).
_GAUGES: tuple[tuple[str, str, str, Scale], ...] = (
    ("xidwatch_gpu_temperature_celsius", "GPU core temperature.", "temperature_c", _SAME),
    ("xidwatch_gpu_power_watts", "Power draw.", "power_w", _SAME),
    ("xidwatch_gpu_power_limit_watts", "Enforced power limit.", "power_limit_w", _SAME),
    ("xidwatch_gpu_sm_clock_hertz", "SM clock.", "sm_clock_mhz", _MHZ_TO_HZ),
    ("xidwatch_gpu_memory_clock_hertz", "Memory clock.", "memory_clock_mhz", _MHZ_TO_HZ),
    (
        "xidwatch_gpu_utilization_ratio",
        "Time the GPU was busy, 0..1.",
        "gpu_util_pct",
        _PCT_TO_RATIO,
    ),
    (
        "xidwatch_gpu_memory_utilization_ratio",
        "Time device memory was read or written, 0..1.",
        "memory_util_pct",
        _PCT_TO_RATIO,
    ),
    ("xidwatch_gpu_memory_used_bytes", "Device memory in use.", "memory_used_bytes", _SAME),
    ("xidwatch_gpu_remap_pending", "1: a row remap waits for a GPU reset.", "remap_pending", _SAME),
    ("xidwatch_gpu_remap_failure", "1: a row remap failed (RMA).", "remap_failure", _SAME),
    ("xidwatch_gpu_nvlink_active_links", "NVLinks up.", "nvlink_active", _SAME),
    ("xidwatch_gpu_processes", "Compute processes running.", "process_count", _SAME),
)
_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("xidwatch_gpu_pcie_replays", "PCIe replays (driver's running total).", "pcie_replays"),
    (
        "xidwatch_gpu_nvlink_errors",
        "NVLink data-link errors, all links (driver's running total).",
        "nvlink_errors",
    ),
)
_ECC = (
    ("corrected", "volatile", "ecc_corrected_volatile"),
    ("uncorrected", "volatile", "ecc_uncorrected_volatile"),
    ("corrected", "aggregate", "ecc_corrected_aggregate"),
    ("uncorrected", "aggregate", "ecc_uncorrected_aggregate"),
)
_REMAPPED = (("corrected", "remapped_rows_corrected"), ("uncorrected", "remapped_rows_uncorrected"))
_THROTTLE = (
    ("sw_power_cap", SW_POWER_CAP),
    ("hw_slowdown", HW_SLOWDOWN),
    ("sw_thermal", SW_THERMAL),
    ("hw_thermal", HW_THERMAL),
    ("hw_power_brake", HW_POWER_BRAKE),
)


class XidCounts:
    """Exact XID counts since start, fed with every commit's accepted events.

    Counted from the writer's ``on_commit`` rather than from the store because folded flood
    events are one row but many events, and because a scrape must not query the store.
    """

    def __init__(self) -> None:
        self._counts: Counter[XidKey] = Counter()

    def add(self, events: Sequence[XidEvent]) -> None:
        """The writer's ``on_commit``: count each event it accepted (folded or not)."""
        for e in events:
            self._counts[(e.xid, e.kind, e.pci_bus_id or "", e.action, e.injected)] += 1

    def snapshot(self) -> dict[XidKey, int]:
        return dict(self._counts)


class DaemonCollector(Collector):
    """Every xidwatch metric, read from a :class:`Daemon` (running or stopped) at scrape time."""

    def __init__(self, daemon: Daemon, *, build_version: str | None = None) -> None:
        self._daemon = daemon
        # Package metadata is read from disk: once here, never on a scrape.
        self._version = build_version or installed_version()

    def collect(self) -> Iterator[Metric]:
        d = self._daemon
        yield _gauge(
            "xidwatch_build_info", "xidwatch's version (value 1).", 1, version=self._version
        )
        yield _gauge("xidwatch_start_time_seconds", "When the daemon started.", d.started_ms / 1e3)
        yield from self._sources()
        yield from self._writer()
        yield from self._sampler()
        yield from self._kubernetes()
        xids = CounterMetricFamily(
            "xidwatch_xid_events",
            "XIDs and SXids since the daemon started, folded flood events included.",
            labels=("xid", "kind", "pci_bus_id", "action", "injected"),
        )
        for (xid, kind, pci, action, injected), n in sorted(d.xid_counts.snapshot().items()):
            # ``injected="true"``: a synthetic XID from `xidwatch inject` (an end-to-end test).
            xids.add_metric((str(xid), kind, pci, action, str(injected).lower()), n)
        yield xids
        if d.sampler is not None:
            s = d.sampler
            yield from gpu_metrics(s.gpus, dict(s.latest), s.lost_uuids)
        yield from verdict_metrics(d.verdicts)

    def _sources(self) -> Iterator[Metric]:
        d = self._daemon
        kmsg = next((s.stats for s in d.sources if isinstance(s, KmsgSource)), None)
        yield _counter(
            "xidwatch_kmsg_records_read",
            "Records read from /dev/kmsg (0 when the daemon does not read it).",
            kmsg.records_read if kmsg else 0,
        )
        yield _counter(
            "xidwatch_kmsg_records_lost",
            "Records the kernel overwrote before xidwatch read them (sequence gaps).",
            kmsg.records_lost if kmsg else 0,
        )
        by_source = CounterMetricFamily(
            "xidwatch_log_records", "Log records handed to the XID parser.", labels=("source",)
        )
        for source, n in sorted(d.pipeline_stats.by_source.items()):
            by_source.add_metric((source,), n)
        yield by_source
        yield _counter(
            "xidwatch_xid_parse_failures",
            "NVRM Xid-looking lines that did not parse (a new line format?).",
            d.pipeline_stats.parse_failures,
        )

    def _writer(self) -> Iterator[Metric]:
        w = self._daemon.writer
        st = w.stats
        yield _gauge("xidwatch_writer_queue_depth", "Items waiting to be committed.", w.queue_depth)
        yield _counter("xidwatch_writer_commits", "Store transactions committed.", st.batches)
        yield _counter(
            "xidwatch_writer_commit_retries", "Commits rolled back and retried.", st.commit_retries
        )
        yield _gauge(
            "xidwatch_writer_last_commit_seconds",
            "How long the last commit took.",
            st.last_commit_s,
        )
        yield _gauge(
            "xidwatch_writer_failing",
            "1 while commits fail and are retried (the batch is held in memory).",
            w.failing is not None,
        )
        yield _counter("xidwatch_samples_stored", "GPU samples stored.", st.samples_stored)
        yield _counter(
            "xidwatch_samples_shed", "GPU samples dropped under backlog.", st.samples_shed
        )

    def _sampler(self) -> Iterator[Metric]:
        s = self._daemon.sampler
        st = s.stats if s is not None else None
        yield _counter("xidwatch_sample_ticks", "NVML sampling ticks run.", st.ticks if st else 0)
        yield _counter(
            "xidwatch_sample_ticks_skipped",
            "Ticks skipped because a tick overran its interval.",
            st.ticks_skipped if st else 0,
        )
        yield _gauge("xidwatch_nvml_up", "1: NVML initialised and GPUs discovered.", s is not None)
        errors = CounterMetricFamily(
            "xidwatch_nvml_errors", "NVML calls that failed, by call.", labels=("call",)
        )
        by_call: Counter[str] = Counter()
        for key, n in (st.nvml_errors if st else {}).items():
            by_call[key.partition(":")[2]] += n  # keyed "<gpu index>:<call>"
        for call, n in sorted(by_call.items()):
            errors.add_metric((call,), n)
        yield errors
        yield _gauge(
            "xidwatch_last_successful_sample_timestamp_seconds",
            "When the last tick that read any GPU ran (0 before the first).",
            st.last_sample_ms / 1e3 if st else 0,
        )

    def _kubernetes(self) -> Iterator[Metric]:
        """Pod attribution and Events; all zero off a cluster (``xidwatch_k8s_up`` 0)."""
        d = self._daemon
        pods = d.pods.stats if d.pods is not None else None
        yield _gauge(
            "xidwatch_k8s_up",
            "1: this node's pods are listed from the Kubernetes API (attribution works).",
            d.pods is not None and d.pods.synced,
        )
        yield _gauge("xidwatch_k8s_pods", "Pods on this node, as last listed.", _n(pods, "pods"))
        yield _counter(
            "xidwatch_k8s_pod_list_failures",
            "Listings of this node's pods that failed (the last good list is kept).",
            _n(pods, "refresh_failures"),
        )
        lookups = CounterMetricFamily(
            "xidwatch_k8s_pid_lookups",
            "pid -> pod lookups: pod found, container unknown to the pod list, or other "
            "(a host process, or gone before it was seen).",
            labels=("result",),
        )
        hits, misses = _n(pods, "hits"), _n(pods, "misses")
        for result, n in (("pod", hits), ("unknown_container", misses)):
            lookups.add_metric((result,), n)
        lookups.add_metric(("other",), _n(pods, "lookups") - hits - misses)
        yield lookups
        posted = d.k8s_events.stats if d.k8s_events is not None else None
        yield _counter(
            "xidwatch_k8s_events_posted", "Kubernetes Events created.", _n(posted, "posted")
        )
        yield _counter(
            "xidwatch_k8s_event_failures",
            "Event or Node condition writes the API refused or never answered.",
            _n(posted, "post_failures") + _n(posted, "condition_failures"),
        )
        suppressed = CounterMetricFamily(
            "xidwatch_k8s_events_suppressed",
            "Fatal XIDs not posted as an Event, by why.",
            labels=("reason",),
        )
        for reason in ("deduplicated", "rate_limited", "queue_dropped"):
            suppressed.add_metric((reason,), _n(posted, reason))
        yield suppressed


def _n(stats: object, name: str) -> int:
    """A counter of an optional stats object: 0 when the part is not running."""
    return int(getattr(stats, name)) if stats is not None else 0


def gpu_metrics(
    gpus: Iterable[GpuInfo], latest: Mapping[str, GpuSample], lost: frozenset[str]
) -> Iterator[Metric]:
    """Per-GPU families: discovery facts for every GPU, readings only for those answering.

    ``latest`` is the newest sample per UUID and ``lost`` the UUIDs answering GpuIsLost
    (the sampler's ``latest`` and ``lost_uuids``). A reading the GPU does not support
    (None) has no sample rather than a misleading 0.
    """
    gauges = {name: _gpu_gauge(name, doc) for name, doc, _, _ in _GAUGES}
    counters = {name: _gpu_counter(name, doc) for name, doc, _ in _COUNTERS}
    slowdown = _gpu_gauge("xidwatch_gpu_slowdown_temperature_celsius", "Slowdown threshold.")
    shutdown = _gpu_gauge("xidwatch_gpu_shutdown_temperature_celsius", "Shutdown threshold.")
    total = _gpu_gauge("xidwatch_gpu_memory_total_bytes", "Device memory.")
    ecc = _gpu_counter(
        "xidwatch_gpu_ecc_errors", "ECC errors (driver's totals).", "type", "counter"
    )
    remapped = _gpu_counter("xidwatch_gpu_remapped_rows", "Rows remapped.", "type")
    throttle = _gpu_gauge("xidwatch_gpu_throttle_active", "1: clocks held back.", "reason")
    is_lost = _gpu_gauge("xidwatch_gpu_lost", "1 while the GPU answers GpuIsLost.")
    last = _gpu_gauge("xidwatch_gpu_last_sample_timestamp_seconds", "When it was last read.")
    for info in sorted(gpus, key=lambda g: g.index):
        labels = [str(info.index), info.uuid, info.pci_bus_id, info.name]
        sample = latest.get(info.uuid)
        _add(slowdown, labels, info.slowdown_temp_c)
        _add(shutdown, labels, info.shutdown_temp_c)
        is_lost.add_metric(labels, float(info.uuid in lost))
        if sample is not None:
            last.add_metric(labels, sample.ts_ms / 1e3)
        live = sample if info.uuid not in lost else None
        memory_total = info.memory_total_bytes  # a discovery fact, kept while lost
        if memory_total is None and live is not None:
            memory_total = live.memory_total_bytes
        _add(total, labels, memory_total)
        if live is None:
            continue  # never read yet, or lost: nothing current to say (module docstring)
        for name, _, field, scale in _GAUGES:
            _add(gauges[name], labels, getattr(live, field), scale)
        for name, _, field in _COUNTERS:
            _add(counters[name], labels, getattr(live, field))
        for kind, counter, field in _ECC:
            _add(ecc, [*labels, kind, counter], getattr(live, field))
        for kind, field in _REMAPPED:
            _add(remapped, [*labels, kind], getattr(live, field))
        if (reasons := live.clocks_event_reasons) is not None:
            for reason, bit in _THROTTLE:
                throttle.add_metric([*labels, reason], float(bool(reasons & bit)))
    yield from (*gauges.values(), slowdown, shutdown, total, throttle, is_lost, last)
    yield from (*counters.values(), ecc, remapped)


def verdict_metrics(board: VerdictBoard) -> Iterator[Metric]:
    """Each GPU's verdict and the node's: the action's rank (0 none .. 6 replace_gpu), with
    the action and cause as labels, so an alert can route on ``action="reboot_node"``."""
    gpu = _gpu_gauge(
        "xidwatch_gpu_verdict_action",
        "The GPU's verdict: the action's rank, 0 none .. 6 replace_gpu (labels action, cause).",
        "action",
        "cause",
    )
    for v in board.gpus:
        gpu.add_metric(
            [v.index, v.uuid, v.pci_bus_id, v.model, v.action, v.cause], action_rank(v.action)
        )
    yield gpu
    if board.node is not None:
        action, cause = board.node
        yield _gauge(
            "xidwatch_node_verdict_action",
            "The most disruptive action any GPU on the node needs, as its rank.",
            action_rank(action),
            action=action,
            cause=cause,
        )


def _add(
    family: GaugeMetricFamily | CounterMetricFamily,
    labels: list[str],
    value: float | None,
    scale: Scale = _SAME,
) -> None:
    """Add a sample unless the GPU does not support the reading (None)."""
    if value is not None:
        family.add_metric(labels, float(value) * scale[0] / scale[1])


def _gpu_gauge(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=(*GPU_LABELS, *extra))


def _gpu_counter(name: str, doc: str, *extra: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=(*GPU_LABELS, *extra))


def _gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=tuple(labels))
    family.add_metric(tuple(labels.values()), float(value))
    return family


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def installed_version() -> str:
    """This package's installed version (build info, MCP serverInfo); ``unknown`` if bare."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
