"""Each result model of a store record holds the record's fields, renamed only where it says."""

from __future__ import annotations

from dataclasses import fields

from mcp_server.gateway.models import FleetGpu
from mcp_server.models import GpuModel, SampleModel, XidEventModel
from mcp_server.series_models import BucketModel, SeriesModel
from store.records import Bucket, GpuInfo, GpuSample, InventoryGpu, PodRef, Series, StoredXid
from watcher.kernel.catalog import default_catalog


def names(record: type) -> set[str]:
    return {f.name for f in fields(record)}


def test_gpu_model_is_gpu_info_plus_when_it_was_seen_and_lost() -> None:
    added = {"first_seen", "last_seen", "lost", "lost_since"}
    assert set(GpuModel.model_fields) == names(GpuInfo) | added


def test_sample_model_is_the_sample_less_uuid_plus_readable_time_and_throttles() -> None:
    added = {"ts", "throttle_reasons"}
    assert set(SampleModel.model_fields) == (names(GpuSample) - {"uuid"}) | added


def test_xid_event_model_is_the_stored_xid_with_its_renames_and_catalog_words() -> None:
    renamed = {"ts_ms", "last_ts_ms", "received_ms", "raw", "action", "pod"}
    added = {"ts", "last_ts", "namespace", "pod", "container", "mnemonic", "title"}
    added |= {"immediate_action", "needs"}
    assert set(XidEventModel.model_fields) == (names(StoredXid) - renamed) | added


def test_fleet_gpu_is_a_short_gpu_model_with_the_same_types() -> None:
    for name, field in FleetGpu.model_fields.items():
        assert field.annotation == GpuModel.model_fields[name].annotation, name


def test_models_take_every_value_from_the_record() -> None:
    info = GpuInfo("GPU-1", 3, "H100", "00000000:3B:00.0", serial="S", ecc_enabled=True)
    gpu = GpuModel.from_inventory(InventoryGpu(info, 1_000, 2_000, None))
    assert {f: getattr(gpu, f) for f in names(GpuInfo)} == {
        f.name: getattr(info, f.name) for f in fields(info)
    }
    sample = GpuSample("GPU-1", 5_000, temperature_c=71, clocks_event_reasons=0x20)
    model = SampleModel.from_sample(sample)
    assert (model.ts_ms, model.temperature_c, model.throttle_reasons) == (5_000, 71, ["sw_thermal"])
    xid = StoredXid(
        7, 1_000, 2_000, 1_001, 3, True, "n1", "xid", 79, "00000000:3B:00.0", "GPU-1", None,
        None, 42, "python", "fell off", "raw line", "kmsg", "RESTART_BM", "b", 9,
        pod=PodRef("ml", "train-0", "main"),
    )  # fmt: skip
    event = XidEventModel.from_stored(xid, default_catalog())
    assert (event.id, event.count, event.burst, event.pid, event.seq) == (7, 3, True, 42, 9)
    assert (event.namespace, event.pod, event.container) == ("ml", "train-0", "main")
    assert (event.immediate_action, event.last_ts) == ("RESTART_BM", "1970-01-01T00:00:02.000Z")


def test_series_model_is_the_series_with_readable_times_and_its_buckets() -> None:
    renamed = {"index", "since_ms", "until_ms"}
    added = {"gpu", "since", "until", "empty_buckets"}
    assert set(SeriesModel.model_fields) == (names(Series) - renamed) | added
    assert set(BucketModel.model_fields) == (names(Bucket) - {"ts_ms"}) | {"ts"}
