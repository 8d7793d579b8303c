"""The MCP tools' results: pydantic models, so every tool has an output schema clients can read.

Field names carry their units; times are ISO 8601 UTC strings (``ts``) beside integer
milliseconds (``ts_ms``) where a client may want to compute with them. The CLI's JSON
output is built from the same models, so the two never drift apart.

A model of a store record takes the record's fields by validation (:func:`record_values`), so
the conversion names only what the answer adds or renames; tests/mcp_server/test_models.py
holds each model's fields to its record's.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from store.actions import Action, code_action
from store.coverage import Coverage
from store.health import Finding, GpuHealth, HealthReport, NodeVerdict, Verdict
from store.records import GpuSample, InventoryGpu, StoredXid
from store.telemetry import HW_POWER_BRAKE, HW_SLOWDOWN, HW_THERMAL, SW_POWER_CAP, SW_THERMAL
from store.windows import format_ts
from watcher.kernel.catalog import XidCatalog, XidInfo

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "CoverageModel",
    "GpuModel",
    "HealthModel",
    "HealthResult",
    "SampleModel",
    "XidEventModel",
    "XidExplanation",
    "record_values",
    "throttle_names",
]

_THROTTLE_NAMES = (
    (SW_POWER_CAP, "sw_power_cap"),
    (HW_SLOWDOWN, "hw_slowdown"),
    (SW_THERMAL, "sw_thermal"),
    (HW_THERMAL, "hw_thermal"),
    (HW_POWER_BRAKE, "hw_power_brake"),
)


def throttle_names(reasons: int | None) -> list[str]:
    """NVML's clocks-event bitmask as the names of the throttle reasons that matter."""
    return [name for bit, name in _THROTTLE_NAMES if reasons and reasons & bit]


def record_values(record: DataclassInstance, *leave_out: str) -> dict[str, Any]:
    """A record's fields by name, less ``leave_out`` (what the model renames or drops)."""
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name not in leave_out}


def _ts(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else format_ts(ts_ms)


class GpuModel(BaseModel):
    """A GPU as the node knows it: identity, limits, when it was sampled, whether it is lost."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str = Field(description="NVML form, 00000000:3B:00.0")
    serial: str | None
    driver_version: str | None
    cuda_version: str | None
    slowdown_temp_c: int | None
    shutdown_temp_c: int | None
    power_limit_default_w: float | None
    power_limit_min_w: float | None
    power_limit_max_w: float | None
    memory_total_bytes: int | None
    ecc_enabled: bool | None
    mig_enabled: bool | None
    first_seen: str | None
    last_seen: str | None
    lost: bool
    lost_since: str | None

    @classmethod
    def from_inventory(cls, gpu: InventoryGpu) -> GpuModel:
        # The record's times are milliseconds; the answer gives them as ISO text.
        return cls(
            **record_values(gpu.info),
            first_seen=_ts(gpu.first_seen_ms),
            last_seen=_ts(gpu.last_seen_ms),
            lost=gpu.lost_since_ms is not None,
            lost_since=_ts(gpu.lost_since_ms),
        )


class SampleModel(BaseModel):
    """One GPU's readings at one time; null where the GPU does not report a reading."""

    ts: str
    ts_ms: int
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    sm_clock_mhz: int | None
    memory_clock_mhz: int | None
    gpu_util_pct: int | None
    memory_util_pct: int | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    ecc_corrected_volatile: int | None
    ecc_uncorrected_volatile: int | None
    ecc_corrected_aggregate: int | None
    ecc_uncorrected_aggregate: int | None
    remapped_rows_corrected: int | None
    remapped_rows_uncorrected: int | None
    remap_pending: bool | None
    remap_failure: bool | None
    clocks_event_reasons: int | None = Field(description="NVML throttle bitmask")
    throttle_reasons: list[str] = Field(description="the bitmask's reasons by name")
    pcie_replays: int | None
    nvlink_active: int | None
    nvlink_errors: int | None
    process_count: int | None

    @classmethod
    def from_sample(cls, s: GpuSample) -> SampleModel:
        # ``uuid`` is left out: the GPU beside the sample names it. ``ts`` and
        # ``throttle_reasons`` are added for a reader.
        return cls(
            ts=format_ts(s.ts_ms),
            throttle_reasons=throttle_names(s.clocks_event_reasons),
            **record_values(s, "uuid"),
        )


class HealthModel(BaseModel):
    """A GPU's verdict (one cause, one action, why and the steps), its status, a 0-100 score,
    the findings behind the verdict and the current readings.

    A GPU known only from XID lines (never sampled) has ``gpu`` null; a lost GPU has no
    ``sample``: its last readings are history, not current.
    """

    pci_bus_id: str
    gpu: GpuModel | None
    verdict: Verdict = Field(
        description="cause (thermal, gpu_memory, gpu_hardware, application, bus_or_link, "
        "power, follows_other_xid, unknown, none); action, exactly one of none < watch < "
        "restart_application < run_diagnostics < reset_gpu < reboot_node < replace_gpu; "
        "confidence; because (the numbers); steps (what to run, in order); the XID ids "
        "behind it; cleared (reboot, reset or ack) when an earlier fatal state was cleared"
    )
    status: str = Field(description="ok (action none), warning or critical, from the verdict")
    score: int = Field(description="100 healthy; 50 or below critical")
    findings: list[Finding] = Field(
        description="the evidence under the verdict, worst first; xid_ids are the stored "
        "XIDs behind each (for correlate_xid)"
    )
    sample: SampleModel | None

    @classmethod
    def from_health(cls, h: GpuHealth) -> HealthModel:
        return cls(
            pci_bus_id=h.pci_bus_id,
            gpu=GpuModel.from_inventory(h.gpu) if h.gpu else None,
            verdict=h.verdict,
            status=h.status,
            score=h.score,
            findings=list(h.findings),
            sample=SampleModel.from_sample(h.sample) if h.sample else None,
        )


class CoverageModel(BaseModel):
    """What the store covers: "no XIDs" means something only while it was recording."""

    recording_since: str | None = Field(description="first GPU sample or XID stored")
    last_sample: str | None
    last_kernel_record: str | None = Field(description="the kernel log was last read then")
    first_xid: str | None
    last_xid: str | None
    gaps: list[list[str]] = Field(
        default_factory=list,
        description="[start, end] stretches in the window with no samples, longest first",
    )

    @classmethod
    def from_coverage(cls, c: Coverage) -> CoverageModel:
        return cls(
            recording_since=_ts(c.recording_since_ms),
            last_sample=_ts(c.last_sample_ms),
            last_kernel_record=_ts(c.last_kernel_record_ms),
            first_xid=_ts(c.first_xid_ms),
            last_xid=_ts(c.last_xid_ms),
            gaps=[[format_ts(a), format_ts(b)] for a, b in c.gaps],
        )


class XidEventModel(BaseModel):
    """A stored XID/SXid. The CLI's ``xids --json`` contract: fields are added, never renamed."""

    ts: str = Field(description="when the kernel logged it (a burst: the first event)")
    last_ts: str
    kind: str
    xid: int
    count: int = Field(description="events this row stands for (a flood burst: more than 1)")
    burst: bool
    node: str
    pci_bus_id: str | None
    gpu_uuid: str | None
    mig_gi: int | None
    mig_ci: int | None
    pid: int | None
    process: str | None
    namespace: str | None = Field(default=None, description="Kubernetes namespace of the pid")
    pod: str | None = Field(default=None, description="Kubernetes pod of the pid")
    container: str | None = None
    mnemonic: str | None
    title: str
    immediate_action: str
    needs: Action = Field(
        description="what this XID needs on its own (get_gpu_health weighs it with the rest)"
    )
    message: str
    source: str
    injected: bool = Field(
        default=False,
        description="a synthetic test XID written by `xidwatch inject`, not the driver",
    )
    boot_id: str | None
    seq: int | None
    id: int

    @classmethod
    def from_stored(cls, e: StoredXid, catalog: XidCatalog) -> XidEventModel:
        # Renamed for a reader: times as ISO text, the catalog label as immediate_action, the
        # pod flattened; left out: received_ms and raw (message is the readable part).
        info = catalog.lookup(e.xid, e.kind)
        return cls(
            **record_values(e, *_XID_RENAMED),
            ts=format_ts(e.ts_ms),
            last_ts=format_ts(e.last_ts_ms),
            namespace=e.pod.namespace if e.pod else None,
            pod=e.pod.pod if e.pod else None,
            container=e.pod.container if e.pod else None,
            mnemonic=info.mnemonic,
            title=info.title,
            immediate_action=e.action,
            needs=code_action(e.xid, e.action, e.message),
        )


# StoredXid fields XidEventModel gives under another name or shape, or leaves out.
_XID_RENAMED = ("ts_ms", "last_ts_ms", "received_ms", "raw", "action", "pod")


class CauseModel(BaseModel):
    code: str
    meaning: str


class XidExplanation(BaseModel):
    """A catalog entry: what the XID means, likely causes, what to do now and to investigate."""

    code: int
    kind: str
    known: bool
    mnemonic: str | None
    title: str
    description: str
    immediate_action: str
    needs: Action = Field(description="what it needs on its own, in get_gpu_health's words")
    immediate_action_text: str
    investigatory_action: str | None
    investigatory_action_text: str | None
    fatal: bool | None
    causes: list[CauseModel]
    notes: str | None

    @classmethod
    def from_info(cls, info: XidInfo, catalog: XidCatalog) -> XidExplanation:
        investigate = info.investigatory_action
        return cls(
            code=info.code,
            kind=info.kind,
            known=info.known,
            mnemonic=info.mnemonic,
            title=info.title,
            description=info.description,
            immediate_action=info.immediate_action,
            needs=code_action(info.code, info.immediate_action),
            immediate_action_text=catalog.action_text(info.immediate_action),
            investigatory_action=investigate,
            investigatory_action_text=catalog.action_text(investigate) if investigate else None,
            fatal=info.fatal,
            causes=[CauseModel(code=c, meaning=catalog.causes.get(c, c)) for c in info.causes],
            notes=info.notes,
        )


class HealthResult(BaseModel):
    """``get_gpu_health``'s answer, and ``xidwatch health --json``'s."""

    node: str
    since: str
    node_verdict: NodeVerdict = Field(
        description="the most disruptive action any GPU needs, its cause, why, and the GPUs "
        "(PCI bus ids) that drive it"
    )
    gpus: list[HealthModel] = Field(description="most disruptive action first")
    coverage: CoverageModel

    @classmethod
    def from_report(cls, r: HealthReport) -> HealthResult:
        return cls(
            node=r.node,
            since=format_ts(r.since_ms),
            node_verdict=r.node_verdict,
            gpus=[HealthModel.from_health(h) for h in r.gpus],
            coverage=CoverageModel.from_coverage(r.coverage),
        )
