"""Three real node daemons, shared by the gateway's end-to-end tests in a module; and three
set up for the API server's pod proxy, shared by every module that goes through it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.nodes import API_HOST, Nodes


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    fleet = Nodes(tmp_path_factory.mktemp("nodes"))
    try:
        fleet.start()
        yield fleet
    finally:
        codes = fleet.stop()
    assert all(code in (0, -9) for code in codes), codes


@pytest.fixture(scope="package")
def proxied_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """As behind the api-proxy component: no token, the API server's name allowed as Host."""
    fleet = Nodes(tmp_path_factory.mktemp("proxied"), token=False, allowed_hosts=(API_HOST,))
    try:
        fleet.start()
        yield fleet
    finally:
        codes = fleet.stop()
    assert all(code in (0, -9) for code in codes), codes
