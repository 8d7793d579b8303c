"""A store the real daemon filled from simulated GPUs playing thermal-runaway, per module."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.mcp_server.helpers import fill


@pytest.fixture(scope="module")
def runaway_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runaway") / "xidwatch.db"
    asyncio.run(fill(path))
    return path
