from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import certifi
import pytest
from structlog.testing import capture_logs

from tests.kube_api import KubeApiServer
from watcher.k8s.api import KubeCore
from watcher.k8s.client import close_kubernetes, connect_kubernetes


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        server.add_node("node-a")
        yield server


def _unavailable(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "k8s_unavailable"]


async def test_explicit_kubeconfig_gives_a_client_that_reaches_the_server(
    kube: KubeApiServer, tmp_path: Path
) -> None:
    path = kube.kubeconfig(tmp_path / "kubeconfig")
    with capture_logs() as logs:
        api = await connect_kubernetes(path, environ={}, home=tmp_path)
    assert api is not None
    try:
        node = await KubeCore(api).read_node("node-a")
    finally:
        await close_kubernetes(api)
    assert node.metadata is not None
    assert node.metadata.name == "node-a"
    assert kube.requests[-1].headers["authorization"] == f"Bearer {kube.token}"
    assert [e["event"] for e in logs] == ["k8s_connected"]


async def test_kubeconfig_env_then_home_are_used(kube: KubeApiServer, tmp_path: Path) -> None:
    env_path = kube.kubeconfig(tmp_path / "env" / "config")
    api = await connect_kubernetes(
        None, environ={"KUBECONFIG": f"{tmp_path / 'missing'}:{env_path}"}, home=tmp_path
    )
    assert api is not None
    await close_kubernetes(api)

    kube.kubeconfig(tmp_path / "home" / ".kube" / "config")
    with capture_logs() as logs:
        api = await connect_kubernetes(None, environ={}, home=tmp_path / "home")
    assert api is not None
    await close_kubernetes(api)
    assert logs[0]["path"] == str(tmp_path / "home" / ".kube" / "config")


async def test_nothing_configured_logs_one_actionable_line(tmp_path: Path) -> None:
    with capture_logs() as logs:
        api = await connect_kubernetes(
            None, environ={}, home=tmp_path, service_account_dir=tmp_path
        )
    assert api is None
    assert len(logs) == 1
    (line,) = _unavailable(logs)
    assert line["log_level"] == "warning"
    reason = str(line["reason"])
    assert "no in-cluster service account and no kubeconfig" in reason
    assert "pod attribution, Kubernetes events and node conditions are off" in reason


async def test_a_broken_kubeconfig_is_none_with_the_error_logged(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\ncontexts: []\n")
    with capture_logs() as logs:
        api = await connect_kubernetes(bad, environ={}, home=tmp_path)
    assert api is None
    (line,) = _unavailable(logs)
    assert str(bad) in str(line["reason"])
    assert "nowhere" in str(line["reason"])


async def test_in_cluster_service_account_is_used_when_present(
    kube: KubeApiServer, tmp_path: Path
) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(kube.token)
    shutil.copy(certifi.where(), sa / "ca.crt")
    host, port = kube.url.removeprefix("http://").split(":")
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    with capture_logs() as logs:
        api = await connect_kubernetes(None, environ=env, service_account_dir=sa, home=tmp_path)
    assert api is not None
    try:
        assert api.configuration.host == f"https://{host}:{port}"
        assert api.configuration.ssl_ca_cert == str(sa / "ca.crt")
    finally:
        await close_kubernetes(api)
    assert logs[0]["event"] == "k8s_connected"
    assert logs[0]["via"] == "in-cluster"


async def test_in_cluster_without_ca_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with capture_logs() as logs:
        api = await connect_kubernetes(None, environ=env, service_account_dir=tmp_path)
    assert api is None
    (line,) = _unavailable(logs)
    assert "certification file" in str(line["reason"])


async def test_in_cluster_with_a_bad_ca_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with capture_logs() as logs:
        api = await connect_kubernetes(None, environ=env, service_account_dir=tmp_path)
    assert api is None
    assert len(_unavailable(logs)) == 1


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_no_home_directory_means_no_kubeconfig_not_a_crash(tmp_path: Path) -> None:
    """A container user with no passwd entry and no $HOME (``env -i``) has no home at all."""
    code = (
        "import asyncio, os, sys\n"
        "import watcher.k8s.pods, watcher.k8s.event_writer  # load the library at import\n"
        "from watcher.k8s.client import connect_kubernetes\n"
        "sys.exit(0 if asyncio.run(connect_kubernetes(None, environ={})) is None else 1)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65532", "--regid=65532", "--clear-groups", sys.executable, "-c", code],
        env={"PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "no kubeconfig" in done.stderr + done.stdout
