"""Stand-ins for the gateway's host dependencies: a clock to step, and a scripted node client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.errors import NodeCallError


class StepClock:
    """A monotonic clock that moves only when told to (or when the code under test sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


Script = Callable[[str, str, Mapping[str, Any]], dict[str, Any]]


class ScriptedClient(NodeClient):
    """Answers each call with ``script(url, tool, args)``; raising NodeCallError fails it."""

    def __init__(self, script: Script) -> None:  # no HTTP pool: nothing is sent
        self.script = script
        self.calls: list[tuple[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def call_tool(
        self, url: str, tool: str, arguments: Mapping[str, Any], *, timeout_s: float
    ) -> dict[str, Any]:
        self.calls.append((url, tool))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let every other call start, so overlap is visible
            return self.script(url, tool, arguments)
        finally:
            self.in_flight -= 1


def failing(reason: str, message: str = "scripted") -> Script:
    def script(url: str, tool: str, args: Mapping[str, Any]) -> dict[str, Any]:
        raise NodeCallError(reason, message)  # type: ignore[arg-type]

    return script
