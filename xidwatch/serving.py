"""Serving MCP: over stdio (``xidwatch mcp``) and on the daemon's HTTP port (``run --listen``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import structlog
import typer
from prometheus_client import CollectorRegistry

from mcp_server.deps import LiveReadings, ToolDeps
from mcp_server.http import HttpService, allowed_hosts, build_http_app, read_token
from mcp_server.http_settings import HttpSettings
from mcp_server.server import build_server
from store.db import open_reader
from store.records import GpuSample
from watcher.daemon import Daemon
from watcher.nvml.device import NvmlUnavailableError
from watcher.nvml.sampler import NvmlSampler
from watcher.prometheus import DaemonCollector
from xidwatch.options import DEFAULT_DB, DbOption, env_name

__all__ = ["http_service", "mcp"]

log = structlog.get_logger("xidwatch.serving")


def http_service(daemon: Daemon, http: HttpSettings) -> HttpService:
    """The daemon's HTTP port: MCP (live readings from its sampler), metrics, probes."""
    cfg = daemon.config
    deps = ToolDeps(
        db_path=cfg.db_path,
        node=cfg.node,
        live=daemon.live_readings,
        retention_of=lambda: daemon.config.retention,
    )
    registry = CollectorRegistry()  # this daemon's metrics only, none of the process defaults
    registry.register(DaemonCollector(daemon))
    app = build_http_app(
        build_server(deps),
        readiness=daemon.readiness,
        hosts=allowed_hosts(http.host, http.allowed_hosts),
        token=read_token(http.auth_token_file) if http.auth_token_file else None,
        registry=registry,
    )
    return HttpService(app, http.host, http.port)


def mcp(
    db: DbOption = DEFAULT_DB,
    node: Annotated[str, typer.Option(envvar=env_name("node"), help="Node name to report.")] = "",
    nvml: Annotated[
        bool, typer.Option("--nvml/--no-nvml", help="Answer snapshots from live NVML.")
    ] = True,
) -> None:
    """Serve the MCP tools over stdio (Claude Desktop, Cursor, ...), reading the store."""
    asyncio.run(_serve_stdio(db, node, nvml))
    _end_with_the_client()


def _end_with_the_client() -> None:
    """The client closed stdin: end the process now, whatever is still running.

    A tool call cut short can leave an aiosqlite worker thread (not a daemon thread) waiting
    for a close that never comes, and Python waits for every such thread at exit: the
    process would outlive its client. Nothing here needs saving (the server only reads).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)


async def _serve_stdio(db: Path, node: str, nvml: bool) -> None:
    conn = await open_reader(db)  # fail now, clearly, if there is no store
    await conn.close()
    sampler = await _live_sampler() if nvml else None
    deps = ToolDeps(db_path=db, node=node, live=_one_tick(sampler) if sampler else None)
    try:
        await build_server(deps).run_stdio_async()
    finally:
        if sampler is not None:
            await sampler.close()


async def _live_sampler() -> NvmlSampler | None:
    sampler = NvmlSampler(lambda item: None)
    try:
        await sampler.start()
    except NvmlUnavailableError as e:
        log.info("mcp_without_live_nvml", reason=str(e))
        return None
    return sampler


def _one_tick(sampler: NvmlSampler) -> LiveReadings:
    """Live readings for a server that is not the daemon: one NVML tick per snapshot call."""

    async def current() -> Mapping[str, GpuSample]:
        await asyncio.to_thread(sampler.tick_now)
        return dict(sampler.latest)

    return current
