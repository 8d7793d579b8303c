"""Fixtures shared by the watcher tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes.aio import client

from tests.kube_api import KubeApiServer
from watcher.k8s.client import close_kubernetes


@pytest.fixture
async def api(kube: KubeApiServer) -> AsyncIterator[Any]:
    """A real ``kubernetes.aio`` client of the module's ``kube`` API server (its own fixture)."""
    api = client.ApiClient(configuration=kube.configuration())
    yield api
    await close_kubernetes(api)
