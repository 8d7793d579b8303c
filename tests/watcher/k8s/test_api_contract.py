"""The kubernetes client internals KubeCore calls: their signatures, and the requests they make.

``watcher/k8s/api.py`` sends its five core/v1 calls through ``ApiClient.param_serialize``,
``call_api`` and ``response_deserialize``, the generated client's own internals, which no
release promises to keep. pyproject.toml bounds ``kubernetes`` below the next major; these
tests are what must pass before that bound moves: each internal still takes what we pass,
and each KubeCore call sends the very request the generated ``CoreV1Api`` sends.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from kubernetes.aio.client import ApiClient, CoreV1Api
from kubernetes.aio.client.rest import RESTResponse

from tests.kube_api import STRATEGIC_MERGE_PATCH, KubeApiServer, RecordedRequest
from watcher.k8s.api import KubeCore
from watcher.k8s.client import close_kubernetes, connect_kubernetes

# Each internal, the parameters KubeCore passes by name, and whether it is awaited.
INTERNALS = {
    "param_serialize": (
        {"path_params", "query_params", "header_params", "body", "auth_settings"},
        True,
    ),
    "call_api": ({"_request_timeout"}, True),
    "response_deserialize": (set(), False),
}


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_each_internal_takes_the_arguments_kubecore_passes(name: str) -> None:
    keywords, awaited = INTERNALS[name]
    method = getattr(ApiClient, name)
    params = inspect.signature(method).parameters
    assert keywords <= set(params), f"ApiClient.{name} lost {keywords - set(params)}"
    assert all(params[k].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for k in keywords)
    assert inspect.iscoroutinefunction(method) is awaited


def test_param_serialize_returns_what_call_api_takes_positionally() -> None:
    """``call_api(*param_serialize(...))``: five values, in call_api's first five places."""
    serialized = inspect.signature(ApiClient.param_serialize).return_annotation
    assert len(typing.get_args(serialized)) == 5
    call = list(inspect.signature(ApiClient.call_api).parameters)[1:6]
    assert call == ["method", "url", "header_params", "body", "post_params"]
    first_two = list(inspect.signature(ApiClient.param_serialize).parameters)[1:3]
    assert first_two == ["method", "resource_path"]  # KubeCore passes these by position
    assert list(inspect.signature(ApiClient.response_deserialize).parameters)[1:3] == [
        "response_data",
        "response_types_map",
    ]
    assert inspect.iscoroutinefunction(RESTResponse.read)


@pytest.fixture
async def apis(tmp_path: Path) -> AsyncIterator[tuple[KubeCore, CoreV1Api, KubeApiServer]]:
    with KubeApiServer() as kube:
        kube.add_node("node-a")
        kube.add_pod("train-0", "ml", node="node-a", labels={"app": "train"})
        api = await connect_kubernetes(kube.kubeconfig(tmp_path / "kubeconfig"), environ={})
        assert api is not None
        try:
            yield KubeCore(api), CoreV1Api(api), kube
        finally:
            await close_kubernetes(api)


def _event() -> client.CoreV1Event:
    """The same event twice: the server names each (``generateName``), so neither conflicts."""
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="node-a.xid79.", namespace="default"),
        involved_object=client.V1ObjectReference(kind="Node", name="node-a"),
        reason="GpuXid",
        message="XID 79",
        type="Warning",
    )


CONDITION = {"status": {"conditions": [{"type": "GpuXidFatal", "status": "True"}]}}

# (KubeCore call, the generated CoreV1Api call that does the same)
Call = Callable[[Any], Awaitable[Any]]
PAIRS: dict[str, tuple[Call, Call]] = {
    "list_node_pods": (
        lambda k: k.list_node_pods("node-a", resource_version="0"),
        lambda g: g.list_pod_for_all_namespaces(
            field_selector="spec.nodeName=node-a", resource_version="0"
        ),
    ),
    "list_namespaced_pods": (
        lambda k: k.list_namespaced_pods("ml", label_selector="app=train"),
        lambda g: g.list_namespaced_pod("ml", label_selector="app=train"),
    ),
    "read_node": (lambda k: k.read_node("node-a"), lambda g: g.read_node("node-a")),
    "create_event": (
        lambda k: k.create_event("default", _event()),
        lambda g: g.create_namespaced_event("default", _event()),
    ),
    "patch_node_status": (
        lambda k: k.patch_node_status("node-a", CONDITION),
        lambda g: g.patch_node_status("node-a", CONDITION, _content_type=STRATEGIC_MERGE_PATCH),
    ),
}


def _seen(r: RecordedRequest) -> tuple[object, ...]:
    return (r.method, r.path, r.query, r.content_type, r.headers["authorization"], r.body)


@pytest.mark.parametrize("call", sorted(PAIRS))
async def test_kubecore_sends_the_request_the_generated_client_sends(
    apis: tuple[KubeCore, CoreV1Api, KubeApiServer], call: str
) -> None:
    core, generated, kube = apis
    ours, theirs = PAIRS[call]
    got = await ours(core)
    want = await theirs(generated)
    sent, expected = kube.requests
    assert _seen(sent) == _seen(expected)
    assert type(got) is type(want)
