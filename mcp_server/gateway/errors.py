"""Why a node did not answer: one error type whose ``reason`` is a closed set of labels.

The reason is the metric label (``xidwatch_gateway_node_errors_total{reason}``) and the
first word of what a fleet answer says about the node, so an SRE can tell a node that is
down (``refused``, ``timeout``) from one that is misconfigured (``http_401``, ``http_421``)
or one that answered with an error of its own (``tool_error``).
"""

from __future__ import annotations

from typing import Literal

from store.errors import XidwatchError

__all__ = ["GatewayError", "NodeCallError", "Reason"]

Reason = Literal[
    "timeout",
    "refused",
    "transport",
    "http_401",
    "http_403",
    "http_421",
    "http_4xx",
    "http_5xx",
    "protocol",
    "tool_error",
    "breaker_open",
]

# Worth another attempt: the node may answer the same request a moment later.
_RETRYABLE: frozenset[Reason] = frozenset({"timeout", "refused", "transport", "http_5xx"})
# Says nothing about the node's health: it answered, the question was wrong for it.
_NODE_ANSWERED: frozenset[Reason] = frozenset({"tool_error"})


class GatewayError(XidwatchError):
    """The gateway cannot start or answer (discovery, configuration)."""


class NodeCallError(GatewayError):
    """One node did not give a result; ``reason`` says why in one label."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason

    @property
    def retryable(self) -> bool:
        return self.reason in _RETRYABLE

    @property
    def node_is_up(self) -> bool:
        """The node answered (with a tool error): not a failure its breaker should count."""
        return self.reason in _NODE_ANSWERED

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"
