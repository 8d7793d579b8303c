"""The pipeline: events explained by the catalog, merges of duplicate witnesses, checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from store.records import Checkpoint, GpuInfo, GpuPod, PodRef, SourceCursor, XidEvent
from watcher.kernel.catalog import default_catalog
from watcher.pipeline import ATTRIBUTION_MAX_AGE_MS, XidPipeline
from watcher.records import LogRecord

X79 = "NVRM: Xid (PCI:0000:86:00): 79, pid=9, name=t, GPU has fallen off the bus."
FALLEN = "NVRM: GPU 0000:86:00.0: GPU has fallen off the bus."


def _record(text: str, pos: int, *, source: str = "kmsg", ts_ms: int = 1_000) -> LogRecord:
    return LogRecord(
        text, source, received_ms=ts_ms, ts_ms=ts_ms, cursor=SourceCursor(f"{source}:b", pos)
    )


def _run(*records: LogRecord) -> tuple[list[XidEvent | Checkpoint], XidPipeline]:
    out: list[XidEvent | Checkpoint] = []
    pipeline = XidPipeline(out.append, default_catalog(), node="n1")
    for r in records:
        pipeline.handle(r)
    pipeline.flush()
    return out, pipeline


def test_an_xid_becomes_an_event_with_its_catalog_action() -> None:
    (event,), _ = _run(_record(X79, 1))
    assert isinstance(event, XidEvent)
    assert (event.xid, event.action, event.node, event.pci_bus_id) == (
        79,
        "RESTART_BM",
        "n1",
        "00000000:86:00.0",
    )


def test_fallen_off_the_bus_after_an_xid_79_is_merged_not_double_counted() -> None:
    out, pipeline = _run(_record(X79, 1), _record(FALLEN, 2, ts_ms=1_500))
    events = [o for o in out if isinstance(o, XidEvent)]
    assert len(events) == 1 and pipeline.stats.implied_merged == 1
    assert out[-1] == Checkpoint(SourceCursor("kmsg:b", 2))  # the merged line still moves on


def test_fallen_off_the_bus_alone_is_an_implied_xid_79() -> None:
    (event,), _ = _run(_record(FALLEN, 1))
    assert isinstance(event, XidEvent) and event.xid == 79


def test_the_same_event_from_two_sources_is_stored_once() -> None:
    out, pipeline = _run(_record(X79, 1), _record(X79, 7, source="file", ts_ms=1_800))
    assert sum(isinstance(o, XidEvent) for o in out) == 1
    assert pipeline.stats.cross_source_merged == 1


def test_a_repeat_from_the_same_source_is_a_new_event() -> None:
    x13 = "NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, Graphics Exception"
    out, _ = _run(_record(x13, 1), _record(x13, 2))
    assert sum(isinstance(o, XidEvent) for o in out) == 2


def test_noise_only_moves_the_watermark_once_per_flush() -> None:
    out, _ = _run(*(_record(f"noise {n}", n) for n in range(50)))
    assert out == [Checkpoint(SourceCursor("kmsg:b", 49))]


def test_sxid_detail_lines_are_not_events() -> None:
    lines = [
        "nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 12028, Non-fatal, Link 47 egress error",
        "nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 12028, Severity 0 Engine instance 47",
        "nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 12028, Data {0x0, 0x0}",
    ]
    out, pipeline = _run(*(_record(t, n) for n, t in enumerate(lines)))
    events = [o for o in out if isinstance(o, XidEvent)]
    assert [(e.kind, e.xid, e.action) for e in events] == [("sxid", 12028, "UNKNOWN")]
    assert pipeline.stats.sxid_details == 2


def test_an_unknown_code_is_stored_with_an_unknown_action() -> None:
    (event,), _ = _run(_record("NVRM: Xid (PCI:0000:3b:00): 999, something new", 1))
    assert isinstance(event, XidEvent) and (event.xid, event.action) == (999, "UNKNOWN")


class _Pods:
    """Stands in for the PodDirectory (tested on its own against an API server): pid 4242
    runs in ml/train; every lookup is recorded."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def pod_for_pid(self, pid: int) -> PodRef | None:
        self.asked.append(pid)
        return PodRef("ml", "train", "trainer") if pid == 4242 else None

    def gpu_pods(self, gpus: Sequence[GpuInfo]) -> list[GpuPod]:
        return []


def test_a_live_xid_gets_its_pid_pod_and_an_old_line_is_not_looked_up() -> None:
    line = "NVRM: Xid (PCI:0000:3b:00): 13, pid=4242, name=python3, Graphics Exception"
    out: list[XidEvent | Checkpoint] = []
    pods = _Pods()
    pipeline = XidPipeline(out.append, default_catalog(), now_ms=lambda: 100_000, pods=pods)
    pipeline.handle(_record(line, 1, ts_ms=99_000))  # a second ago: the pid is still it
    pipeline.handle(_record(line, 2, ts_ms=100_000 - ATTRIBUTION_MAX_AGE_MS - 1))  # replayed
    live, old = (e for e in out if isinstance(e, XidEvent))
    assert live.pod == PodRef("ml", "train", "trainer")
    assert old.pod is None and pods.asked == [4242]


SEVERITY = "nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 20034, Severity 1 Engine instance 30"
DATA = "nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 20034, Data {0x50c00000, 0x00000000}"
HEADER = "nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up"


def _events(out: list[XidEvent | Checkpoint]) -> list[XidEvent]:
    return [o for o in out if isinstance(o, XidEvent)]


def test_sxid_detail_lines_whose_header_is_missing_become_one_event() -> None:
    out, pipeline = _run(_record(SEVERITY, 1, ts_ms=5_000), _record(DATA, 2, ts_ms=5_000))
    (event,) = _events(out)
    assert (event.kind, event.xid, event.pci_bus_id) == ("sxid", 20034, "00000000:05:00.0")
    assert event.message == "Severity 1 Engine instance 30; Data {0x50c00000, 0x00000000}"
    assert event.cursor == SourceCursor("kmsg:b", 2) and event.ts_ms == 5_000
    assert pipeline.stats.sxid_headerless == 1 and pipeline.stats.sxid_details == 0


def test_a_header_shortly_after_its_detail_lines_folds_them() -> None:
    out, pipeline = _run(
        _record(SEVERITY, 1, ts_ms=5_000),
        _record(DATA, 2, ts_ms=5_000),
        _record(HEADER, 3, ts_ms=6_500),
    )
    assert [e.message for e in _events(out)] == ["Fatal, Link 30 LTSSM Fault Up"]
    assert pipeline.stats.sxid_details == 2 and pipeline.stats.sxid_headerless == 0


@pytest.mark.parametrize(
    ("header_code", "header_pci", "header_ms"),
    [
        pytest.param(20034, "0000:05:00.0", 1_000, id="header-too-long-before"),
        pytest.param(12028, "0000:05:00.0", 5_000, id="header-of-another-code"),
        pytest.param(20034, "0000:06:00.0", 5_000, id="header-of-another-switch"),
    ],
)
def test_detail_lines_not_near_a_header_of_their_switch_and_code_are_their_own_event(
    header_code: int, header_pci: str, header_ms: int
) -> None:
    header = f"nvidia-nvswitch1: SXid (PCI:{header_pci}): {header_code}, Fatal, Link 2"
    out, _ = _run(_record(header, 1, ts_ms=header_ms), _record(SEVERITY, 2, ts_ms=5_000))
    assert [e.message for e in _events(out)] == ["Fatal, Link 2", "Severity 1 Engine instance 30"]


def test_held_detail_lines_are_stored_before_a_later_event_of_their_source() -> None:
    x13 = "NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, Graphics Exception"
    out: list[XidEvent | Checkpoint] = []
    pipeline = XidPipeline(out.append, default_catalog(), now_ms=lambda: 5_000)
    pipeline.handle(_record(SEVERITY, 1, ts_ms=5_000))
    pipeline.handle(_record("noise", 2, ts_ms=5_000))
    pipeline.flush()  # not due yet: no checkpoint may pass the held line
    assert out == []
    pipeline.handle(_record(x13, 3, ts_ms=5_100))
    assert [(e.xid, e.cursor) for e in _events(out)] == [
        (20034, SourceCursor("kmsg:b", 1)),
        (13, SourceCursor("kmsg:b", 3)),
    ]


def test_held_detail_lines_are_stored_once_their_window_has_passed() -> None:
    out: list[XidEvent | Checkpoint] = []
    clock = [5_000]
    pipeline = XidPipeline(out.append, default_catalog(), now_ms=lambda: clock[0])
    pipeline.handle(_record(SEVERITY, 1, ts_ms=5_000))
    pipeline.handle(_record("noise", 2, ts_ms=5_500))
    clock[0] = 7_001
    pipeline.flush()
    assert [type(o).__name__ for o in out] == ["XidEvent", "Checkpoint"]
    assert out[-1] == Checkpoint(SourceCursor("kmsg:b", 2))
