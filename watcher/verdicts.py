"""The node's current verdicts, kept in memory for ``/metrics``.

A scrape never touches the disk (see :mod:`watcher.prometheus`), so the daemon refreshes the
verdicts from the store in the background: every half minute, and soon after new XIDs are
committed. The gauge then lets an alert route on "needs a reboot" against "needs a reset".
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from store.actions import Action, Cause
from store.db import open_reader
from store.errors import XidwatchError
from store.health import health_report
from store.retention import RetentionPolicy

__all__ = ["GpuVerdictState", "VerdictBoard"]

log = structlog.get_logger()

REFRESH_S = 30.0
AFTER_XID_S = 1.0  # let a burst settle before judging it
HEALTH_WINDOW_MS = 24 * 3_600_000


@dataclass(frozen=True, slots=True)
class GpuVerdictState:
    """One GPU's verdict as the gauge labels it."""

    index: str
    uuid: str
    pci_bus_id: str
    model: str
    action: Action
    cause: Cause


class VerdictBoard:
    """The latest verdict per GPU and for the node; empty until the first refresh."""

    def __init__(self) -> None:
        self.gpus: tuple[GpuVerdictState, ...] = ()
        self.node: tuple[Action, Cause] | None = None
        self._due = asyncio.Event()

    def xids_committed(self) -> None:
        """New XIDs are in the store: judge again soon."""
        self._due.set()

    async def refresh(
        self, db_path: Path, *, node: str, now_ms: int, retention: RetentionPolicy
    ) -> None:
        """Judge every GPU from the store (24 h of XIDs, fatal ones still standing)."""
        conn = await open_reader(db_path)
        try:
            report = await health_report(
                conn,
                since_ms=now_ms - HEALTH_WINDOW_MS,
                now_ms=now_ms,
                node=node,
                retention=retention,
            )
        finally:
            await conn.close()
        self.gpus = tuple(
            GpuVerdictState(
                str(h.gpu.info.index) if h.gpu else "",
                h.gpu.info.uuid if h.gpu else "",
                h.pci_bus_id,
                h.gpu.info.name if h.gpu else "",
                h.verdict.action,
                h.verdict.cause,
            )
            for h in report.gpus
        )
        self.node = (report.node_verdict.action, report.node_verdict.cause)

    async def run(
        self,
        db_path: Path,
        *,
        node: str,
        now_ms: Callable[[], int],
        retention: Callable[[], RetentionPolicy],
    ) -> None:
        """Refresh until cancelled; a failed refresh keeps the last verdicts and says why."""
        while True:
            self._due.clear()
            try:
                await self.refresh(db_path, node=node, now_ms=now_ms(), retention=retention())
            except (sqlite3.Error, XidwatchError) as e:
                log.warning("verdicts_failed", error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), REFRESH_S)
            await asyncio.sleep(AFTER_XID_S)
