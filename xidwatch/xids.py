"""``xidwatch xids``: the stored XID events, newest first, as a table or JSON."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from store.db import open_reader
from store.errors import InvalidQueryError
from store.inventory import select_gpus
from store.queries import MAX_PAGE, XidFilter, list_xids
from store.records import EventKind, StoredXid
from store.windows import parse_instant_ms
from watcher.clock import now_ms
from watcher.kernel.catalog import default_catalog
from xidwatch.options import DEFAULT_DB, MAX_CODE, DbOption
from xidwatch.render import event_json, xid_table

__all__ = ["xids"]


def xids(
    db: DbOption = DEFAULT_DB,
    since: Annotated[str, typer.Option(help="Window start: 24h, 7d, or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(help="Window end (default now).")] = None,
    gpu: Annotated[
        list[str] | None,
        typer.Option(
            help="GPU index, UUID or unique prefix, or PCI bus id in any spelling "
            "(0000:3b:00.0, 3b:00); repeatable."
        ),
    ] = None,
    code: Annotated[
        list[int] | None, typer.Option(min=0, max=MAX_CODE, help="XID code (repeatable).")
    ] = None,
    action: Annotated[
        list[str] | None, typer.Option(help="Catalog action, e.g. RESET_GPU (repeatable).")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="xid or sxid.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE)] = 200,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array instead of a table.")
    ] = False,
) -> None:
    """List stored XID events, newest first. Bursts show their exact count."""
    now = now_ms()
    filters = XidFilter(
        since_ms=parse_instant_ms(since, now_ms=now),
        until_ms=parse_instant_ms(until, now_ms=now) if until else None,
        codes=list(code or ()),
        actions=[a.upper() for a in action or ()],
        kind=_kind(kind),
    )
    events = asyncio.run(_list(db, filters, list(gpu or ()), limit))
    catalog = default_catalog()
    if as_json:
        typer.echo(json.dumps([event_json(e, catalog) for e in events], indent=2))
    elif events:
        typer.echo(xid_table(events, catalog))
    else:
        typer.echo(f"no XID events since {since} in {db}")


async def _list(db: Path, filters: XidFilter, gpus: list[str], limit: int) -> list[StoredXid]:
    """The events, on the GPUs ``gpus`` name (the MCP tools' resolver) when there are any."""
    conn = await open_reader(db)
    try:
        if gpus:
            pcis = (await select_gpus(conn, gpus)).pci_bus_ids
            filters = replace(filters, pci_bus_ids=pcis)
        return list((await list_xids(conn, filters, limit=limit)).events)
    finally:
        await conn.close()


def _kind(text: str | None) -> EventKind | None:
    if text is None:
        return None
    if text not in ("xid", "sxid"):
        raise InvalidQueryError(f"--kind {text!r}: use xid or sxid")
    return "xid" if text == "xid" else "sxid"
