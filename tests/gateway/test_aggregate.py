"""Fleet answers from node answers: worst first, totals, and nodes that failed or garbled."""

from __future__ import annotations

from typing import Any

from mcp_server.gateway.aggregate import (
    fleet_health,
    fleet_xid_summary,
    nodes_needing_attention,
)
from mcp_server.gateway.fanout import FanOutResult, NodeAnswer, NodeFailure
from store.actions import label_rank, label_tier

T0 = 1_795_000_000_000


def _fan(answers: dict[str, dict[str, Any]], *failed: NodeFailure) -> FanOutResult:
    return FanOutResult(
        answers=tuple(NodeAnswer(n, r, 0.01) for n, r in answers.items()), failures=failed
    )


def _row(xid: int, action: str, count: int, gpu: str = "00000000:3B:00.0") -> dict[str, Any]:
    return {
        "kind": "xid",
        "xid": xid,
        "pci_bus_id": gpu,
        "action": action,
        "count": count,
        "rows": 1,
        "first_ts_ms": T0,
        "last_ts_ms": T0 + 1000,
    }


def _gpu(pci: str, index: int, status: str, score: int, *findings: str) -> dict[str, Any]:
    return {
        "pci_bus_id": pci,
        "gpu": {"index": index, "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{index}"},
        "status": status,
        "score": score,
        "findings": [
            {"severity": status, "code": f"f{i}", "message": m, "action": "", "xid_ids": []}
            for i, m in enumerate(findings)
        ],
        "sample": None,
    }


def test_actions_rank_node_power_cycle_first_and_ignore_last() -> None:
    assert label_rank("RESTART_BM") < label_rank("RESET_GPU") < label_rank("RESTART_APP")
    assert label_rank("RESTART_APP") < label_rank("IGNORE")
    assert label_rank("SOMETHING_NEW") == label_rank("UNKNOWN")
    assert (label_tier("RESTART_BM"), label_tier("IGNORE")) == ("node", "informational")
    # A code's own meaning outranks its label: 64 (remap failed) replaces the GPU.
    assert label_rank("RESET_GPU", 64) < label_rank("RESTART_BM", 79)


def test_xid_summary_ranks_by_catalog_action_before_count() -> None:
    fan = _fan(
        {
            "busy": {"rows": [_row(13, "RESTART_APP", 500), _row(31, "RESTART_APP", 20)]},
            "fell": {"rows": [_row(79, "RESTART_BM", 1, "00000000:86:00.0")]},
            "quiet": {"rows": []},
        },
        NodeFailure("down", "refused", "cannot connect"),
    )
    s = fleet_xid_summary(fan, since_ms=T0 - 86_400_000, until_ms=T0)
    assert [(r.node, r.xid) for r in s.rows] == [("fell", 79), ("busy", 13), ("busy", 31)]
    assert [(n.node, n.worst_action, n.total) for n in s.by_node] == [
        ("fell", "RESTART_BM", 1),
        ("busy", "RESTART_APP", 520),
    ]
    assert [(c.xid, c.count, c.nodes) for c in s.by_code] == [(79, 1, 1), (13, 500, 1), (31, 20, 1)]
    assert (s.total, s.nodes_with_xids, s.nodes_asked, s.nodes_answered) == (521, 2, 4, 3)
    assert [(f.node, f.reason) for f in s.nodes_failed] == [("down", "refused")]


def test_rows_beyond_the_limit_are_cut_and_say_so() -> None:
    rows = [_row(13, "RESTART_APP", n) for n in range(1, 6)]
    s = fleet_xid_summary(_fan({"a": {"rows": rows}}), since_ms=T0, until_ms=T0 + 1, limit=2)
    assert [r.count for r in s.rows] == [5, 4] and s.rows_truncated and s.total == 15


def test_an_unreadable_answer_names_its_node_as_failed() -> None:
    fan = _fan({"old": {"rows": [{"xid": "not a number"}]}, "ok": {"rows": []}})
    s = fleet_xid_summary(fan, since_ms=T0, until_ms=T0 + 1)
    (failure,) = s.nodes_failed
    assert failure.node == "old" and failure.reason == "protocol"
    assert "rows.0" in failure.error and s.nodes_answered == 1


def test_health_lists_every_gpu_across_nodes_worst_first_with_a_few_findings() -> None:
    fan = _fan(
        {
            "a": {"gpus": [_gpu("A0", 0, "ok", 100), _gpu("A1", 1, "warning", 85, "warm")]},
            "b": {"gpus": [_gpu("B0", 0, "critical", 0, "lost", "hot", "xid", "more")]},
        }
    )
    h = fleet_health(fan, since_ms=T0)
    assert [(g.node, g.pci_bus_id) for g in h.gpus] == [("b", "B0"), ("a", "A1"), ("a", "A0")]
    assert [f.message for f in h.gpus[0].findings] == ["lost", "hot", "xid"]
    assert h.by_status == {"ok": 1, "warning": 1, "critical": 1} and h.gpus_total == 3


def test_attention_puts_critical_then_unreachable_then_warning_and_skips_healthy_nodes() -> None:
    health = _fan(
        {
            "fine": {"gpus": [_gpu("F0", 0, "ok", 100)]},
            "warm": {"gpus": [_gpu("W0", 0, "warning", 85, "76 °C, near slowdown")]},
            "reset": {"gpus": [_gpu("R0", 0, "ok", 100)]},
        },
        NodeFailure("gone", "timeout", "no answer within 5 s"),
    )
    xids = _fan(
        {
            "fine": {"rows": [_row(13, "RESTART_APP", 2)]},
            "warm": {"rows": []},
            "reset": {"rows": [_row(48, "WORKFLOW_XID_48", 1), _row(79, "RESTART_BM", 1)]},
        },
        NodeFailure("gone", "timeout", "no answer within 5 s"),
    )
    a = nodes_needing_attention(health, xids, since_ms=T0)
    assert [(n.node, n.status) for n in a.nodes] == [
        ("reset", "critical"),
        ("gone", "unreachable"),
        ("warm", "warning"),
    ]
    assert [x.xid for x in a.nodes[0].fatal_xids] == [79, 48]
    assert a.nodes[0].reasons[0].startswith("XID 79 (reboot_node) x1 on 00000000:3B:00.0")
    assert a.nodes[1].reasons == ["not answering: timeout: no answer within 5 s"]
    assert a.nodes[2].reasons == ["GPU 0 warning: 76 °C, near slowdown"]
    assert (a.nodes_asked, a.nodes_answered, a.nodes_ok) == (4, 3, 1)
