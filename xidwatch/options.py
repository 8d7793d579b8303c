"""Options shared by several ``xidwatch`` commands, and the one rule that names variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from store.paths import DB_HELP, DEFAULT_DB

__all__ = ["DEFAULT_DB", "ENV_PREFIX", "MAX_CODE", "DbOption", "env_name"]

ENV_PREFIX = "XIDWATCH_"
MAX_CODE = 2**31 - 1  # XID and SXid codes are small; SQLite integers stop at 2**63 - 1


def env_name(key: str) -> str:
    """A setting's environment variable: ``sample_interval`` -> ``XIDWATCH_SAMPLE_INTERVAL``."""
    return ENV_PREFIX + key.upper()


DbOption = Annotated[
    Path, typer.Option("--db", envvar=env_name("db"), help=DB_HELP, show_default=True)
]
