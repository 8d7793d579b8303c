"""The node daemon, assembled once: log sources -> pipeline -> batched writer.

Every task it starts is awaited or cancelled in :meth:`Daemon.run`'s shutdown path:
stop the sources, flush the pipeline's watermarks, drain the writer's queue, commit, close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from store.db import prepare_store
from store.writer import StoreWriter
from watcher.catalog import XidCatalog, default_catalog
from watcher.clock import boot_wall_ms, now_ms, read_boot_id
from watcher.config import DaemonConfig
from watcher.kmsg import KmsgDevice, KmsgSource, OsKmsgDevice, kmsg_source_key
from watcher.logfile import FileSource
from watcher.pipeline import XidPipeline
from watcher.records import LogSource

__all__ = ["Daemon", "HostFacts"]

log = structlog.get_logger("watcher.daemon")


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The host dependencies the daemon reads, injectable for tests and the demo."""

    boot_id: str = field(default_factory=read_boot_id)
    boot_wall_ms: Callable[[], int] = boot_wall_ms
    now_ms: Callable[[], int] = now_ms
    open_kmsg: Callable[[], KmsgDevice] | None = None


class Daemon:
    """One node's watcher. Build it, then ``await run(stop_event)``."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        host: HostFacts | None = None,
        catalog: XidCatalog | None = None,
    ) -> None:
        self.config = config
        self.host = host or HostFacts()
        self.writer = StoreWriter(config.db_path, flood=config.flood)
        self.pipeline = XidPipeline(self.writer.put, catalog or default_catalog(), node=config.node)
        self.sources: list[LogSource] = []
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set or a source fails; then shut down cleanly."""
        await asyncio.to_thread(prepare_store, self.config.db_path)
        await self.writer.open()
        self.sources = self._build_sources()
        writer_task = asyncio.create_task(self.writer.run(), name="writer")
        source_tasks = [
            asyncio.create_task(s.run(self.pipeline.handle), name=f"source:{s.name}")
            for s in self.sources
        ]
        flusher = asyncio.create_task(self._flush_checkpoints(), name="checkpoints")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        log.info(
            "daemon_started",
            db=str(self.config.db_path),
            node=self.config.node,
            sources=[s.name for s in self.sources],
            boot_id=self.host.boot_id,
        )
        self.ready.set()
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait(
                [stopper, writer_task, *source_tasks], return_when=asyncio.FIRST_COMPLETED
            )
            failure = next(
                (t.exception() for t in done if t is not stopper and t.exception()), None
            )
        finally:
            await self._shutdown(source_tasks, flusher, stopper, writer_task)
        if failure is not None:
            raise failure

    def _build_sources(self) -> list[LogSource]:
        cfg, host = self.config, self.host
        sources: list[LogSource] = []
        if cfg.kmsg:
            open_kmsg = host.open_kmsg or (lambda: OsKmsgDevice(cfg.kmsg_path))
            sources.append(
                KmsgSource(
                    open_kmsg,
                    boot_id=host.boot_id,
                    boot_wall_ms=host.boot_wall_ms,
                    now_ms=host.now_ms,
                    after_seq=self.writer.watermark(kmsg_source_key(host.boot_id)),
                    any_facility=cfg.kmsg_any_facility,
                )
            )
        sources.extend(
            FileSource(
                path,
                watermark=self.writer.watermark,
                boot_wall_ms=host.boot_wall_ms(),
                now_ms=host.now_ms,
                from_start=cfg.log_files_from_start,
            )
            for path in cfg.log_files
        )
        return sources

    async def _flush_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.config.checkpoint_interval_s)
            self.pipeline.flush()

    async def _shutdown(
        self,
        source_tasks: list[asyncio.Task[None]],
        flusher: asyncio.Task[None],
        stopper: asyncio.Task[bool],
        writer_task: asyncio.Task[None],
    ) -> None:
        log.info("daemon_stopping", queued=self.writer.queue_depth)
        for source in self.sources:
            source.stop()
        await asyncio.wait(source_tasks, timeout=self.config.shutdown_timeout_s / 2)
        for task in (*source_tasks, flusher, stopper):
            task.cancel()
        await asyncio.gather(*source_tasks, flusher, stopper, return_exceptions=True)
        self.pipeline.flush()
        await self.writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer_task, self.config.shutdown_timeout_s / 2)
        await self.writer.aclose_connection()
        log.info("daemon_stopped", stored=self.writer.stats.events_stored)
