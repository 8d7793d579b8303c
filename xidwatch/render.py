"""Turning stored events into what a person or a script reads: table rows and JSON objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from store.actions import code_action
from store.records import StoredXid
from store.windows import format_ts
from watcher.kernel.catalog import XidCatalog, XidInfo

if TYPE_CHECKING:
    from store.health import HealthReport

# The JSON forms import the MCP result models (pydantic, the store's health) in their
# bodies, so `explain` and the `xids` table start without them.

__all__ = ["event_json", "explain_json", "explain_text", "health_json", "xid_table"]


def event_json(e: StoredXid, catalog: XidCatalog) -> dict[str, Any]:
    """The ``xids --json`` object: a stable contract (fields are added, never renamed).

    The same data as an event in the MCP ``list_xid_events`` answer.
    """
    from mcp_server.answers import answer_data
    from mcp_server.models import XidEventModel

    return answer_data(XidEventModel.from_stored(e, catalog))


def health_json(report: HealthReport) -> str:
    """``health --json``: the MCP ``get_gpu_health`` answer, indented for a terminal."""
    from mcp_server.answers import answer_data, answer_json
    from mcp_server.models import HealthResult

    return answer_json(answer_data(HealthResult.from_report(report)), indent=2)


def xid_table(events: list[StoredXid], catalog: XidCatalog, *, width: int = 160) -> str:
    """A fixed-width table, newest first; a burst row shows its count as ``x57``.

    A synthetic XID from ``xidwatch inject`` says so at the start of its WHAT column; on a
    cluster a POD column (``namespace/pod``) follows PROCESS.
    """
    pods = any(e.pod is not None for e in events)  # a POD column only on a cluster
    header: tuple[str, ...] = ("TIME (UTC)", "KIND", "XID", "GPU", "N", "PID", "PROCESS")
    header += ("POD", "NEEDS", "WHAT") if pods else ("NEEDS", "WHAT")
    rows: list[tuple[str, ...]] = [header]
    for e in events:
        info = catalog.lookup(e.xid, e.kind)
        pod = (f"{e.pod.namespace}/{e.pod.pod}" if e.pod else "-",) if pods else ()
        rows.append(
            (
                format_ts(e.ts_ms)[:19].replace("T", " "),
                e.kind,
                str(e.xid),
                e.pci_bus_id or "-",
                f"x{e.count}" if e.burst else "1",
                str(e.pid) if e.pid is not None else "-",
                e.process or "-",
                *pod,
                code_action(e.xid, e.action, e.message),
                f"[injected] {info.title}" if e.injected else info.title,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
        lines.append(("  ".join([*cells, r[-1]]))[:width].rstrip())
    return "\n".join(lines)


def explain_json(info: XidInfo, catalog: XidCatalog) -> dict[str, Any]:
    """``explain --json``: the same object the MCP ``explain_xid`` tool returns."""
    from mcp_server.answers import answer_data
    from mcp_server.models import XidExplanation

    return answer_data(XidExplanation.from_info(info, catalog))


def explain_text(info: XidInfo, catalog: XidCatalog) -> str:
    """The catalog entry in words a person can act on."""
    immediate = info.immediate_action
    kind = "SXid" if info.kind == "sxid" else "XID"
    fatal = {True: "fatal", False: "non-fatal", None: "severity unknown"}[info.fatal]
    lines = [
        f"{kind} {info.code}: {info.title}" + (f"  ({info.mnemonic})" if info.mnemonic else ""),
        f"  {fatal}",
        "",
        f"  What happened: {info.description}",
    ]
    if info.causes:
        causes = ", ".join(catalog.causes.get(c, c) for c in info.causes)
        lines.append(f"  Likely causes: {causes}")
    lines += [
        "",
        f"  Needs on its own: {code_action(info.code, info.immediate_action)}"
        + ("" if info.known else " (not in the catalog)"),
        f"  NVIDIA's catalog ({immediate}): {catalog.action_text(immediate)}",
    ]
    if info.investigatory_action and info.investigatory_action != info.immediate_action:
        text = catalog.action_text(info.investigatory_action)
        lines.append(f"  Then investigate ({info.investigatory_action}): {text}")
    if info.notes:
        lines += ["", f"  Notes: {info.notes}"]
    return "\n".join(lines)
