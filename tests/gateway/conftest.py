"""Three real node daemons, shared by the gateway's end-to-end tests in a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.nodes import Nodes


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    fleet = Nodes(tmp_path_factory.mktemp("nodes"))
    try:
        fleet.start()
        yield fleet
    finally:
        codes = fleet.stop()
    assert all(code in (0, -9) for code in codes), codes
