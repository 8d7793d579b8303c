"""Everything xidwatch knows about actions, in one place.

Two vocabularies meet here. The XID catalog's labels (``RESET_GPU``, ``WORKFLOW_XID_48``,
``IGNORE`` ...) are NVIDIA's, stored with every event; their texts, which of them leave a
GPU out of service (fatal) and how they rank across a fleet live here and nowhere else.
The verdict's actions are ours: exactly one per GPU and per node, in rising order of
disruption, each with concrete steps. :func:`code_action` maps one XID to the action it
asks for on its own; :mod:`store.causes` refines that with what happened around it.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

__all__ = [
    "ACTIONS",
    "CAUSES",
    "FATAL_LABELS",
    "LABEL_TEXT",
    "UNKNOWN_LABEL",
    "Action",
    "Cause",
    "Confidence",
    "Tier",
    "action_rank",
    "action_tier",
    "code_action",
    "is_fatal_label",
    "label_rank",
    "label_text",
    "label_tier",
    "recovery_action",
    "steps_for",
]

Action = Literal[
    "none",
    "watch",
    "restart_application",
    "run_diagnostics",
    "reset_gpu",
    "reboot_node",
    "replace_gpu",
]
ACTIONS: tuple[Action, ...] = get_args(Action)  # in rising order of disruption
Cause = Literal[
    "thermal",
    "gpu_memory",
    "gpu_hardware",
    "application",
    "bus_or_link",
    "power",
    "follows_other_xid",
    "unknown",
    "none",
]
CAUSES: tuple[Cause, ...] = get_args(Cause)
Confidence = Literal["high", "medium", "low"]
Tier = Literal["node", "gpu", "escalate", "application", "informational"]

UNKNOWN_LABEL = "UNKNOWN"

# NVIDIA's catalog labels and what each asks of an operator (the catalog's own wording).
LABEL_TEXT: dict[str, str] = {
    "RESTART_APP": "Restart the affected application; a GPU reset or node reboot is not needed.",
    "RESET_GPU": "Drain work from the GPU and reset it (for example with nvidia-smi -r); "
    "reboot the node only if the reset does not succeed.",
    "RESTART_BM": "Power-cycle the bare-metal node that hosts the GPU.",
    "RESTART_VM": "Restart the virtual machine that owns the affected GPU; a GPU reset or "
    "node reboot is not needed.",
    "IGNORE": "No action is required; keep the event for trend analysis.",
    "CONTACT_SUPPORT": "Escalate to your support organization (hardware vendor or NVIDIA) "
    "with the kernel log and nvidia-bug-report output.",
    "CHECK_MECHANICALS": "Check that the GPU is seated properly and that all of its power "
    "and signal connections are secure.",
    "UPDATE_SWFW": "Update the GPU driver and firmware (host and guest drivers for vGPU) to "
    "current, compatible versions.",
    "CHECK_UVM": "If UVM or vGPU is in use on this GPU, reset the GPU; otherwise no action is "
    "needed.",
    "XID_154": "Take the recovery action named in the accompanying XID 154 message.",
    "WORKFLOW_XID_45": "If XID 45 appears alone, restart Fabric Manager; if it accompanies "
    "other XIDs, ignore it and follow the guidance for those.",
    "WORKFLOW_XID_48": "If XID 48 appears alone, reset the GPU; if XID 63 or 64 follows it, "
    "drain the node and then reset the GPU.",
    "WORKFLOW_XID_13": "If the same GPU fails for different workloads, run DCGM diagnostics "
    "and then field diagnostics (possible hardware); if the same workload fails, on one GPU "
    "or across GPUs, check the application.",
    "WORKFLOW_XID_31": "If MMU faults hit different workloads on the same GPU, run DCGM "
    "diagnostics and then field diagnostics; if the same workload faults (often at the same "
    "address), on one GPU or across GPUs, check the application.",
    "WORKFLOW_NVLINK_ERR": "Decode the seven hex registers in the XID 74 message against "
    "NVIDIA's catalog to choose between ignoring, checking link mechanicals, running "
    "diagnostics or reporting a bug.",
    "WORKFLOW_NVLINK5_ERR": "Decode the subcode, intrInfo and errorStatus fields of the "
    "message with NVIDIA's XID 144-150 decode table to find the recovery action.",
    "UNEXPECTED_ERR_REPORT_ISSUE": "This code is not expected on current GPUs; capture the "
    "logs and report the issue to your support organization or NVIDIA.",
    "INVESTIGATE_SW": "Investigate the user or NVIDIA software involved (start from the PID "
    "in the message, if any) and report an issue if it turns out to be a driver problem.",
    "INVESTIGATE_SW_USER": "Check whether software or an operator brought this about on "
    "purpose, and investigate if it was not expected.",
    "INVESTIGATE_LINK_SI": "Investigate link signal integrity using the NVLink access/trunk "
    "link telemetry described in NVIDIA's resiliency service flow.",
    "CHECK_APP_CUDA": "Check the application and CUDA stack for bad data or incorrect use of "
    "the GPU (use the PID in the message), and report a driver issue if the application is "
    "not at fault.",
    "RESTART_FM": "Restart the NVIDIA Fabric Manager service on the node.",
    "SYMPATHETIC_REPORT_SOLO": "Resolve the other errors that came with this one first; "
    "report an issue if it appears on its own or keeps recurring.",
    "XID_137_FLOW": "Debug the application's NVLink peer-to-peer accesses with cuda-gdb or "
    "Compute Sanitizer memcheck, and file a bug if that is inconclusive.",
    UNKNOWN_LABEL: "Not in the XID catalog: collect nvidia-bug-report.sh and escalate.",
}

# Labels whose XID leaves the GPU out of service until a reset, reboot or acknowledgement.
FATAL_LABELS = frozenset({"RESET_GPU", "RESTART_BM", "RESTART_VM", "WORKFLOW_XID_48"})

# What a catalog label asks for on its own, in the verdict's words. Codes whose workflow
# depends on context are refined by code_action and by store.causes.
_LABEL_ACTION: dict[str, Action] = {
    "IGNORE": "none",
    "SYMPATHETIC_REPORT_SOLO": "none",
    "WORKFLOW_XID_45": "none",
    "CHECK_UVM": "watch",
    "UPDATE_SWFW": "watch",
    "INVESTIGATE_SW_USER": "watch",
    "RESTART_APP": "restart_application",
    "WORKFLOW_XID_13": "restart_application",
    "WORKFLOW_XID_31": "restart_application",
    "CHECK_APP_CUDA": "restart_application",
    "XID_137_FLOW": "restart_application",
    "INVESTIGATE_SW": "run_diagnostics",
    "RESTART_FM": "run_diagnostics",
    "CONTACT_SUPPORT": "run_diagnostics",
    "UNEXPECTED_ERR_REPORT_ISSUE": "run_diagnostics",
    "WORKFLOW_NVLINK_ERR": "run_diagnostics",
    "WORKFLOW_NVLINK5_ERR": "run_diagnostics",
    "INVESTIGATE_LINK_SI": "run_diagnostics",
    UNKNOWN_LABEL: "run_diagnostics",
    "RESET_GPU": "reset_gpu",
    "WORKFLOW_XID_48": "reset_gpu",
    "XID_154": "reset_gpu",  # until its message names the recovery action
    "RESTART_VM": "reboot_node",
    "RESTART_BM": "reboot_node",
    "CHECK_MECHANICALS": "reboot_node",  # the node goes down to reseat a GPU or a cable
}

# Codes whose own meaning overrides the label: 43 is the application's channel stopping,
# 63 a pending remap that a reset activates, 64 a remap that failed (out of spare rows),
# 92 a single-bit error rate to keep an eye on.
_CODE_ACTION: dict[int, Action] = {
    43: "restart_application",
    63: "reset_gpu",
    64: "replace_gpu",
    92: "watch",
}

# XID 154's recovery actions (NVML_GPU_RECOVERY_ACTION_*), by name and number.
RECOVERY: dict[str, Action] = {
    "None": "none",
    "GPU Reset Required": "reset_gpu",
    "Node Reboot Required": "reboot_node",
    "Drain P2P": "restart_application",
    "Drain and Reset": "reset_gpu",
}
_RECOVERY_BY_NUMBER = dict(enumerate(("None", "GPU Reset Required", "Node Reboot Required")))
_RECOVERY_BY_NUMBER |= {3: "Drain P2P", 4: "Drain and Reset"}

_TIER: dict[Action, Tier] = {
    "replace_gpu": "gpu",
    "reboot_node": "node",
    "reset_gpu": "gpu",
    "run_diagnostics": "escalate",
    "restart_application": "application",
    "watch": "informational",
    "none": "informational",
}
_RANK = {a: i for i, a in enumerate(ACTIONS)}
_RECOVERY_TO = re.compile(r"\bto\s+(0x[0-9a-fA-F]+|\d+)\s*(?:\(([^)]*)\))?")


def action_rank(action: Action) -> int:
    """0 for ``none`` up to 6 for ``replace_gpu``: how disruptive the fix is."""
    return _RANK[action]


def action_tier(action: Action) -> Tier:
    """What an action takes out of service: the node, a GPU, ..., or nothing."""
    return _TIER[action]


def label_text(label: str) -> str:
    """What a catalog label asks an operator to do; an unknown label is said as it is."""
    return LABEL_TEXT.get(label, label)


def is_fatal_label(label: str) -> bool:
    """A catalog label that leaves the GPU out of service until it is reset or rebooted."""
    return label in FATAL_LABELS


def code_action(code: int, label: str, message: str = "") -> Action:
    """The action one XID asks for on its own, by its code, catalog label and message.

    XID 154 takes the recovery action its message names; without one it ranks as a reset.
    """
    if code == 154 and label == "XID_154" and (wanted := recovery_action(message)) is not None:
        return RECOVERY[wanted]
    if label in _LABEL_ACTION and code in _CODE_ACTION:
        return _CODE_ACTION[code]
    return _LABEL_ACTION.get(label, "run_diagnostics")


def label_rank(label: str, code: int = 0) -> int:
    """Worst first across a fleet: 0 for the most disruptive action a label asks for."""
    return len(ACTIONS) - 1 - action_rank(code_action(code, label))


def label_tier(label: str, code: int = 0) -> Tier:
    """The tier of the action a label asks for (node, gpu, escalate, application, ...)."""
    return action_tier(code_action(code, label))


def recovery_action(message: str) -> str | None:
    """The recovery action an XID 154 message says the driver now wants, by its NVML name.

    ``... changed from 0x0 (None) to 0x1 (GPU Reset Required)`` -> ``GPU Reset Required``;
    the label is trusted before the number, and None means neither was recognised.
    """
    m = _RECOVERY_TO.search(message)
    if m is not None:
        wanted = (m[2] or "").strip().lower()
        label = next((k for k in RECOVERY if k.lower() == wanted), None)
        return label if label is not None else _RECOVERY_BY_NUMBER.get(int(m[1], 0))
    found = [(message.lower().rfind(k.lower()), k) for k in RECOVERY]
    at, label = max(found)
    return label if at >= 0 else None


_DRAIN_NODE = "cordon and drain the node: kubectl drain {node} --ignore-daemonsets"
_BUG_REPORT = "collect nvidia-bug-report.sh (and the kernel log) for the vendor"

# Ordered steps per action; ``{gpu}`` is the GPU's PCI bus id, ``{node}`` the node's name.
_STEPS: dict[Action, tuple[str, ...]] = {
    "none": (),
    "watch": ("nothing to do now; check again if it grows or repeats",),
    "restart_application": (
        "restart the failing job; the GPU needs no reset",
        "if it fails again, debug the application (CUDA errors, illegal addresses, "
        "compute-sanitizer) before blaming the GPU",
    ),
    "run_diagnostics": (
        "drain the GPU: stop or move its jobs (kubectl cordon {node} if the GPU cannot be "
        "excluded alone)",
        "run dcgmi diag -r 3 -i {gpu} (or nvidia-smi -q and the field diagnostics)",
        "return it to service if the diagnostics pass; replace it if they fail",
    ),
    "reset_gpu": (
        "drain the GPU: stop its jobs (" + _DRAIN_NODE + " if they cannot be moved)",
        "reset it: nvidia-smi -r -i {gpu}",
        "reboot the node only if the reset fails; xidwatch ack --gpu {gpu} once done",
    ),
    "reboot_node": (
        _DRAIN_NODE,
        "power-cycle the node (a warm reboot may not bring a lost GPU back); a reset "
        "cannot reach a GPU that fell off the bus",
        "after boot check that nvidia-smi -L lists every GPU and lspci -s {gpu} finds it",
        "if it happens again, reseat the GPU and its riser and " + _BUG_REPORT,
    ),
    "replace_gpu": (
        _DRAIN_NODE,
        "take GPU {gpu} out of service: it cannot recover by itself",
        _BUG_REPORT + ", and open an RMA for GPU {gpu}",
    ),
}

_BLIND_STEPS = (
    "check that the xidwatch daemon runs on {node} and reads NVML (its /readyz, the "
    "xidwatch_nvml_up metric, nvidia-smi)",
    "until it does, treat the readings shown as old: they are the last ones stored",
)

# Cause-specific first steps that come before the action's own.
_CAUSE_STEPS: dict[Cause, str] = {
    "thermal": "check the GPU's cooling: fans, airflow, inlet temperature (ipmitool sdr)",
    "power": "check the node's PSUs and power feed (ipmitool sdr, the BMC's event log)",
    "bus_or_link": "check the PCIe slot, riser and cables (lspci -vv -s {gpu}, the BMC log)",
}


def steps_for(action: Action, cause: Cause, *, gpu: str, node: str) -> list[str]:
    """The ordered, concrete steps for ``action`` on ``gpu``, with the cause's own checks."""
    if (action, cause) == ("watch", "unknown"):  # xidwatch itself cannot see the GPU
        steps = list(_BLIND_STEPS)
        return [s.format(gpu=gpu, node=node or "<node>") for s in steps]
    steps = list(_STEPS[action])
    extra = _CAUSE_STEPS.get(cause)
    if extra is not None and action not in ("none",):
        steps.insert(1 if action in ("reboot_node", "replace_gpu") else 0, extra)
    return [s.format(gpu=gpu, node=node or "<node>") for s in steps]
