"""``xidwatch replay``: saved kernel log captures into the store, each event once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from store.windows import parse_instant_ms
from watcher.clock import now_ms, stable_boot_wall_ms
from watcher.replayer import replay_captures
from xidwatch.options import DEFAULT_DB, DbOption

__all__ = ["replay"]


def replay(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Captures: dmesg, dmesg -T, raw kmsg, syslog (.gz too).",
            exists=True,
            dir_okay=False,
        ),
    ],
    db: DbOption = DEFAULT_DB,
    node: Annotated[str, typer.Option(help="Node name to record with the events.")] = "",
    boot_time: Annotated[
        str | None,
        typer.Option(
            help="When the captured machine booted (ISO 8601), to date dmesg's "
            "seconds-since-boot stamps. Default: this machine's boot."
        ),
    ] = None,
) -> None:
    """Ingest saved kernel log captures; replaying the same capture again stores nothing new."""
    given = parse_instant_ms(boot_time, now_ms=now_ms()) if boot_time else None
    boot_ms = given if given is not None else stable_boot_wall_ms()
    result = asyncio.run(replay_captures(files, db, node=node, boot_wall_ms=boot_ms))
    folded = f", {result.folded} folded into bursts" if result.folded else ""
    dupes = f", {result.duplicates} already stored" if result.duplicates else ""
    typer.echo(
        f"stored {result.stored} events from {result.lines} lines "
        f"({result.events} XID/SXid lines{folded}{dupes}) into {db}"
    )
