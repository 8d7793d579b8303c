"""Options shared by several ``xidwatch`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["DEFAULT_DB", "DbOption"]

DEFAULT_DB = Path("/var/lib/xidwatch/xidwatch.db")
DbOption = Annotated[
    Path, typer.Option("--db", envvar="XIDWATCH_DB", help="SQLite store file.", show_default=True)
]
