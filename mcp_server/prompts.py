"""MCP prompts for the SRE workflows: triage an XID, check a node, review a week of trends.

Each names the tools to call and in what order, so an assistant plans the same way an
experienced SRE would look.
"""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

__all__ = ["register_prompts"]


def register_prompts(server: MCPServer) -> None:
    @server.prompt()
    def triage_xid(
        xid: Annotated[str, Field(max_length=20, description="the XID code, e.g. 79")],
        gpu: Annotated[
            str,
            Field(
                max_length=100,
                description="GPU index, UUID or unique prefix, or PCI bus id, if known",
            ),
        ] = "",
    ) -> str:
        """Triage an XID on this node: what it means, what the GPU was doing, what to do."""
        where = f" on GPU {gpu}" if gpu else ""
        on_gpu = f", gpus=[{gpu!r}]" if gpu else ""
        health_of = f"gpu={gpu!r}" if gpu else ""
        return (
            f"Triage XID {xid}{where} on this node.\n"
            f"1. explain_xid(code={xid}) for its meaning and the catalog's immediate action.\n"
            f"2. list_xid_events(codes=[{xid}], since='7d'{on_gpu}) to find the occurrences "
            "and their ids.\n"
            "3. correlate_xid(event_id=<the newest id>) for the metrics before and after, the "
            "XIDs around it, the processes on that GPU and the likely cause with evidence.\n"
            f"4. get_gpu_health({health_of}) to see whether the GPU's fatal "
            "state was cleared (reboot, reset, acknowledgement).\n"
            "Answer with: what happened, the likely cause and the evidence, whether it is the "
            "application or the GPU, and the action (drain, reset, reboot, RMA, fix the job)."
        )

    @server.prompt()
    def node_health_check() -> str:
        """A health check of every GPU on this node, worst first."""
        return (
            "Check this node's GPUs.\n"
            "1. get_gpu_health for every GPU's status and reasons.\n"
            "2. summarize_xid_events(since='24h') for what happened and what is new compared "
            "with the day before.\n"
            "3. For each GPU not OK: get_gpu_snapshot(gpu=...) and correlate_xid on its worst "
            "XID.\n"
            "Report per GPU: OK / warning / critical, why, and the one action to take."
        )

    @server.prompt()
    def weekly_trend_review(
        gpu: Annotated[str, Field(max_length=100, description="a GPU, or empty for all")] = "",
    ) -> str:
        """A week of trends: which GPUs are heating, throttling or accumulating errors."""
        target = f"gpu='{gpu}'" if gpu else "each GPU from list_gpus"
        return (
            f"Review the last 7 days for {target}.\n"
            "1. get_metric_trend(metric='temperature', since='7d', threshold_from="
            "'slowdown_temp') and the same for 'power' with threshold_from='power_limit'.\n"
            "2. get_metric_history(metrics=['throttle_thermal', 'throttle_power', "
            "'ecc_corrected_aggregate', 'pcie_replays'], since='7d', buckets=56).\n"
            "3. summarize_xid_events(since='7d').\n"
            "Report the GPUs trending toward a limit (with the projected time and its "
            "confidence), those throttled or accumulating errors, and what to schedule."
        )
