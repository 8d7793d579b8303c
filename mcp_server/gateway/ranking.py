"""Worst first across a fleet: XID catalog actions ordered by what they cost to fix.

A node power-cycle outranks a GPU reset, which outranks an escalation to the vendor, which
outranks restarting a job; noise the catalog says to ignore comes last. Labels the order
does not name (a newer catalog) rank with ``UNKNOWN``: worth a look, not yet a drain.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ACTION_ORDER", "Tier", "action_rank", "action_tier"]

Tier = Literal["node", "gpu", "escalate", "application", "informational"]

_TIERS: tuple[tuple[Tier, tuple[str, ...]], ...] = (
    ("node", ("RESTART_BM", "RESTART_VM")),
    ("gpu", ("WORKFLOW_XID_48", "RESET_GPU", "XID_154", "XID_137_FLOW")),
    (
        "escalate",
        (
            "CONTACT_SUPPORT",
            "CHECK_MECHANICALS",
            "UNEXPECTED_ERR_REPORT_ISSUE",
            "UNKNOWN",
            "WORKFLOW_NVLINK5_ERR",
            "WORKFLOW_NVLINK_ERR",
            "INVESTIGATE_LINK_SI",
            "RESTART_FM",
            "UPDATE_SWFW",
        ),
    ),
    (
        "application",
        (
            "WORKFLOW_XID_13",
            "WORKFLOW_XID_31",
            "CHECK_UVM",
            "RESTART_APP",
            "CHECK_APP_CUDA",
            "INVESTIGATE_SW",
            "INVESTIGATE_SW_USER",
        ),
    ),
    ("informational", ("WORKFLOW_XID_45", "SYMPATHETIC_REPORT_SOLO", "IGNORE")),
)

ACTION_ORDER: tuple[str, ...] = tuple(a for _, actions in _TIERS for a in actions)
_RANK = {a: i for i, a in enumerate(ACTION_ORDER)}
_TIER = {a: tier for tier, actions in _TIERS for a in actions}


def action_rank(action: str) -> int:
    """0 for the costliest action; an unnamed label ranks as ``UNKNOWN``."""
    return _RANK.get(action, _RANK["UNKNOWN"])


def action_tier(action: str) -> Tier:
    """What an action puts out of service: the node, a GPU, ..., or nothing."""
    return _TIER.get(action, "escalate")
