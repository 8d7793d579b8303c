"""Pod attribution and Kubernetes Events end to end: the daemon on simulated GPUs, the real
``kubernetes`` client against an API server on loopback, and a host ``/proc`` laid out as a
node's (each pid's ``cgroup`` file in the shape containerd writes under systemd, cgroup v2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from store.processes import pods_at
from store.queries import XidFilter, list_xids
from store.records import PodRef
from tests.daemons import run_scenario
from tests.kube_api import KubeApiServer, container_hex_id
from tests.mcp_server.helpers import served
from tests.store.helpers import reading, rows
from tests.watcher.test_prometheus import registry_for
from watcher.config import KubernetesConfig, SimulationSpec
from watcher.daemon import Daemon
from watcher.kernel.catalog import default_catalog
from xidwatch.render import xid_table

NODE = "sim-node"  # run_scenario's node name
CRASHY_UID = "6c1a0b6e-4b7e-4a8e-9d61-2f3f0d7e9a10"
SERVING_UID = "0d4a9c55-1e0f-4f5a-8a7d-3b2c1d0e9f88"
# app-crash-loop: the job on GPU 1 restarts as pids 31000, 31017, 31034 and 31051; the
# jobs on GPUs 0 and 2 are pids 30000 and 30002; 30003 on GPU 3 runs on the host.
CRASHY_PIDS = (31000, 31017, 31034, 31051)
SERVING_PIDS = (30000, 30002)
HOST_PID = 30003


def _containerd_cgroup(pod_uid: str, container: str) -> str:
    slice_uid = pod_uid.replace("-", "_")
    return (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{slice_uid}.slice/"
        f"cri-containerd-{container_hex_id(pod_uid, container)}.scope\n"
    )


def _host_proc(root: Path) -> Path:
    files = {pid: _containerd_cgroup(CRASHY_UID, "trainer") for pid in CRASHY_PIDS}
    files |= {pid: _containerd_cgroup(SERVING_UID, "server") for pid in SERVING_PIDS}
    files[HOST_PID] = "0::/system.slice/benchmark.service\n"
    for pid, text in files.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
    return root


def _cluster(kube: KubeApiServer) -> None:
    kube.add_node(NODE)
    kube.add_pod("crashy-job", "ml", node=NODE, uid=CRASHY_UID, containers=("trainer",))
    kube.add_pod("serving", "inference", node=NODE, uid=SERVING_UID, containers=("server",))
    kube.add_pod("reserved", "ml", node=NODE, annotations={"xidwatch.io/gpus": "3"})
    kube.add_pod("elsewhere", "ml", node="other-node", containers=("trainer",))


async def _crash_loop(tmp_path: Path, kube: KubeApiServer, **k8s: object) -> Daemon:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    return await run_scenario(
        tmp_path / "xidwatch.db",
        SimulationSpec(4, scenario="app-crash-loop", speed=50),
        host_proc=_host_proc(tmp_path / "proc"),
        kubernetes=KubernetesConfig(kubeconfig=kubeconfig, pod_refresh_s=0.2, **k8s),  # type: ignore[arg-type]
    )


@pytest.mark.slow
async def test_xids_processes_and_gpus_are_attributed_to_their_pods(tmp_path: Path) -> None:
    with KubeApiServer() as kube:
        _cluster(kube)
        daemon = await _crash_loop(tmp_path, kube)
        lists = [r for r in kube.requests if r.path == "/api/v1/pods"]
    assert lists and {r.query["fieldSelector"] for r in lists} == {f"spec.nodeName={NODE}"}

    db = daemon.config.db_path
    scrape = generate_latest(registry_for(daemon)).decode()
    assert "xidwatch_k8s_up 1.0" in scrape and "xidwatch_k8s_pods 3.0" in scrape
    assert 'xidwatch_k8s_pid_lookups_total{result="pod"}' in scrape
    crashy = PodRef("ml", "crashy-job", "trainer")
    async with reading(db) as conn:
        page = await list_xids(conn, XidFilter(), limit=100)
        held = {i: await pods_at(conn, i, None) for i in range(4)}
    assert page.events and all(e.pod == crashy for e in page.events if e.pid in CRASHY_PIDS)
    header, newest = xid_table(list(page.events), default_catalog()).splitlines()[:2]
    columns = header.split()
    assert columns.index("POD") == columns.index("PROCESS") + 1
    assert "ml/crashy-job" in newest.split()
    procs = rows(db, "SELECT DISTINCT pid, namespace, pod, container FROM gpu_processes")
    assert set(procs) == {
        *((pid, "ml", "crashy-job", "trainer") for pid in CRASHY_PIDS),
        (30000, "inference", "serving", "server"),
        (30002, "inference", "serving", "server"),
        (HOST_PID, None, None, None),
    }
    assert [(s.pod.pod, s.source) for s in held[3]] == [("reserved", "annotation")]
    assert [(s.pod.pod, s.source) for s in held[0]] == [("serving", "process")]

    async with served(db) as client:
        result = await client.call_tool("list_xid_events", {"codes": [13], "limit": 1})
    (event,) = json.loads(result.content[0].text)["events"]  # type: ignore[union-attr]
    assert (event["namespace"], event["pod"], event["container"]) == (
        "ml",
        "crashy-job",
        "trainer",
    )


@pytest.mark.slow
async def test_fatal_xids_become_node_and_pod_events_and_a_node_condition(
    tmp_path: Path,
) -> None:
    with KubeApiServer() as kube:
        _cluster(kube)
        await _crash_loop(
            tmp_path,
            kube,
            events=True,
            event_actions=("RESTART_APP",),
            node_condition="GpuXidFatal",
        )
        events = list(kube.events)
        condition = kube.node_condition(NODE, "GpuXidFatal")
    on_node = [e for e in events if e["involvedObject"]["kind"] == "Node"]
    on_pod = [e for e in events if e["involvedObject"]["kind"] == "Pod"]
    # 13 and 31 (RESTART_APP) four times each on GPU 1: one Event per code (deduplicated),
    # on the Node and on the crash-looping pod; 43 and 45 (other actions) post nothing.
    assert len(on_node) == 2 and {e["involvedObject"]["name"] for e in on_node} == {NODE}
    assert len(on_pod) == 2 and {e["involvedObject"]["name"] for e in on_pod} == {"crashy-job"}
    assert {e["reason"] for e in events} == {"GpuXid"}
    assert condition is not None and condition["status"] == "True"


async def test_off_cluster_attribution_is_skipped_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config, whoever runs the suite
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with capture_logs() as logs:
        daemon = await run_scenario(
            tmp_path / "x.db",
            SimulationSpec(1, scenario="app-crash-loop", speed=200),
            kubernetes=KubernetesConfig(kubeconfig=None),
        )
    unavailable = [e for e in logs if e["event"] == "k8s_unavailable"]
    assert len(unavailable) == 1 and "pod attribution" in unavailable[0]["reason"]
    assert daemon.pods is None and daemon.k8s_events is None


def test_commands_that_never_connect_do_not_load_the_kubernetes_client() -> None:
    code = "import sys, xidwatch.main; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # about 0.2 s of every `xidwatch` command saved
