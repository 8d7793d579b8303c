"""``xidwatch explain``: what an XID means and what to do about it, from the packaged catalog."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from watcher.kernel.catalog import default_catalog
from xidwatch.options import MAX_CODE
from xidwatch.render import explain_json, explain_text

__all__ = ["explain"]


def explain(
    code: Annotated[
        int,
        typer.Argument(
            min=0, max=MAX_CODE, metavar="CODE", help="The XID (or, with --sxid, SXid) number."
        ),
    ],
    sxid: Annotated[bool, typer.Option(help="Explain an NVSwitch SXid.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What an XID means and what to do about it, from the packaged catalog."""
    catalog = default_catalog()
    info = catalog.lookup(code, "sxid" if sxid else "xid")
    if as_json:
        typer.echo(json.dumps(explain_json(info, catalog), indent=2))
    else:
        typer.echo(explain_text(info, catalog))
