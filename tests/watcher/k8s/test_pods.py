from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio import client
from structlog.testing import capture_logs

from store.records import GpuInfo, GpuPod, PodRef
from tests.kube_api import KubeApiServer, container_hex_id
from tests.waiting import wait_until_async
from watcher.k8s.client import close_kubernetes
from watcher.k8s.pods import PodDirectory, annotated_gpus, strip_container_id

NODE = "node-a"
GPUS = [GpuInfo(f"GPU-{i:08x}-1111-2222-3333-444444444444", i, "H100", f"0:{i}") for i in range(4)]


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


def _directory(api: Any, proc: Path, **kwargs: Any) -> PodDirectory:
    return PodDirectory(api, NODE, proc_root=proc, **kwargs)


def _cgroup(proc: Path, pid: int, text: str) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cgroup").write_text(text)


def _gone(proc: Path, pid: int) -> None:
    (proc / str(pid) / "cgroup").unlink()
    (proc / str(pid)).rmdir()


def _systemd(uid: str, scope: str) -> str:
    slice_ = f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
    return f"0::/kubepods.slice/kubepods-burstable.slice/{slice_}/{scope}\n"


def _containerd(uid: str, cid: str) -> str:
    return _systemd(uid, f"cri-containerd-{cid}.scope")


async def test_refresh_lists_this_nodes_pods_with_a_field_selector(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    kube.add_pod("here", "ml", node=NODE)
    kube.add_pod("elsewhere", "ml", node="node-b")
    pods = _directory(api, tmp_path)
    assert await pods.refresh()
    (request,) = kube.requests
    assert request.path == "/api/v1/pods"
    assert request.query["fieldSelector"] == f"spec.nodeName={NODE}"
    assert pods.stats.pods == 1
    assert pods.stats.refreshes == 1
    assert pods.synced


@pytest.mark.parametrize(
    ("runtime", "shape"),
    [
        ("containerd", lambda uid, cid: _containerd(uid, cid)),
        ("cri-o", lambda uid, cid: _systemd(uid, f"crio-{cid}.scope") + "\n"),
        ("cri-o", lambda uid, cid: _systemd(uid, f"crio-{cid}.scope/container")),
        ("docker", lambda uid, cid: f"12:memory:/kubepods/besteffort/pod{uid}/{cid}\n0::/\n"),
        ("docker", lambda uid, cid: _systemd(uid, f"docker-{cid}.scope")),
        ("containerd", lambda uid, cid: f"0::/kubepods/besteffort/pod{uid}/{cid}\n"),  # k3s
    ],
)
async def test_pid_resolves_to_its_container_for_each_runtime(
    kube: KubeApiServer, api: Any, tmp_path: Path, runtime: str, shape: Any
) -> None:
    pod = kube.add_pod("train-0", "ml", node=NODE, containers=("main", "sidecar"), runtime=runtime)
    uid = pod["metadata"]["uid"]
    _cgroup(tmp_path, 100, shape(uid, container_hex_id(uid, "sidecar")))
    pods = _directory(api, tmp_path)
    await pods.refresh()
    assert pods.pod_for_pid(100) == PodRef("ml", "train-0", "sidecar", uid)
    assert (pods.stats.lookups, pods.stats.hits, pods.stats.misses) == (1, 1, 0)


async def test_init_container_ids_are_indexed(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    pod = kube.add_pod("p", node=NODE, init_containers=("fetch",))
    uid = pod["metadata"]["uid"]
    _cgroup(tmp_path, 7, _containerd(uid, container_hex_id(uid, "fetch")))
    pods = _directory(api, tmp_path)
    await pods.refresh()
    assert pods.pod_for_pid(7) == PodRef("default", "p", "fetch", uid)


async def test_unknown_container_in_a_known_pod_falls_back_to_the_pod_uid(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    pod = kube.add_pod("p", "ml", node=NODE)
    uid = pod["metadata"]["uid"]
    _cgroup(tmp_path, 8, _containerd(uid, "f" * 64))  # e.g. the pod's sandbox
    pods = _directory(api, tmp_path)
    await pods.refresh()
    assert pods.pod_for_pid(8) == PodRef("ml", "p", None, uid)
    assert pods.stats.misses == 1


async def test_host_processes_and_unseen_dead_pids_are_none(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    _cgroup(tmp_path, 1, "0::/init.scope\n")
    pods = _directory(api, tmp_path)
    await pods.refresh()
    assert pods.pod_for_pid(1) is None
    assert pods.pod_for_pid(99999) is None
    assert (pods.stats.hits, pods.stats.misses) == (0, 0)


async def test_a_process_that_just_died_still_resolves_until_its_pid_is_reused(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    pod = kube.add_pod("p", "ml", node=NODE)
    uid = pod["metadata"]["uid"]
    _cgroup(tmp_path, 50, _containerd(uid, container_hex_id(uid, "main")))
    pods = _directory(api, tmp_path)
    await pods.refresh()
    expected = PodRef("ml", "p", "main", uid)
    assert pods.pod_for_pid(50) == expected
    _gone(tmp_path, 50)
    assert pods.pod_for_pid(50) == expected
    _cgroup(tmp_path, 50, "0::/system.slice/sshd.service\n")  # reused by a host process
    assert pods.pod_for_pid(50) is None
    _gone(tmp_path, 50)
    assert pods.pod_for_pid(50) is None


async def test_a_deleted_pods_lingering_process_keeps_its_pod(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    pod = kube.add_pod("p", "ml", node=NODE)
    uid = pod["metadata"]["uid"]
    _cgroup(tmp_path, 51, _containerd(uid, container_hex_id(uid, "main")))
    pods = _directory(api, tmp_path)
    await pods.refresh()
    assert pods.pod_for_pid(51) is not None
    kube.remove_pod("p", "ml")
    await pods.refresh()
    assert pods.pod_for_pid(51) == PodRef("ml", "p", "main", uid)


async def test_pid_cache_is_bounded(kube: KubeApiServer, api: Any, tmp_path: Path) -> None:
    pod = kube.add_pod("p", node=NODE)
    uid = pod["metadata"]["uid"]
    pods = _directory(api, tmp_path, pid_cache_size=2)
    await pods.refresh()
    for pid in (10, 11, 12):
        _cgroup(tmp_path, pid, _containerd(uid, container_hex_id(uid, "main")))
        assert pods.pod_for_pid(pid) is not None
    for pid in (10, 11, 12):
        _gone(tmp_path, pid)
    assert pods.pod_for_pid(10) is None  # evicted: the oldest
    assert pods.pod_for_pid(11) is not None
    assert pods.pod_for_pid(12) is not None


async def test_resolve_pid_refreshes_once_for_a_new_pod(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    clock = [1000.0]
    pods = _directory(api, tmp_path, miss_refresh_s=5.0, monotonic=lambda: clock[0])
    await pods.refresh()
    pod = kube.add_pod("new", "ml", node=NODE)
    uid = pod["metadata"]["uid"]
    _cgroup(tmp_path, 60, _containerd(uid, container_hex_id(uid, "main")))

    assert await pods.resolve_pid(60) is None  # refreshed 0 s ago: not again yet
    assert len(kube.requests) == 1
    clock[0] += 5.0
    assert await pods.resolve_pid(60) == PodRef("ml", "new", "main", uid)
    assert len(kube.requests) == 2


async def test_a_lookup_miss_wakes_the_service_for_an_early_refresh(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    pods = _directory(api, tmp_path, refresh_s=3600.0, miss_refresh_s=0.0)
    task = asyncio.create_task(pods.run())
    try:
        await wait_until_async(lambda: pods.stats.refreshes == 1)
        pod = kube.add_pod("late", "ml", node=NODE)
        uid = pod["metadata"]["uid"]
        _cgroup(tmp_path, 70, _containerd(uid, container_hex_id(uid, "main")))
        assert await asyncio.to_thread(pods.pod_for_pid, 70) is None  # from a worker thread
        await wait_until_async(lambda: pods.stats.refreshes == 2)
        assert pods.pod_for_pid(70) == PodRef("ml", "late", "main", uid)
    finally:
        pods.stop()
        await asyncio.wait_for(task, 5)


async def test_api_down_keeps_the_last_list_and_logs_once_then_recovery(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    pod = kube.add_pod("p", "ml", node=NODE)
    uid = pod["metadata"]["uid"]
    _cgroup(tmp_path, 80, _containerd(uid, container_hex_id(uid, "main")))
    pods = _directory(api, tmp_path)
    await pods.refresh()
    kube.down = True
    with capture_logs() as logs:
        assert not await pods.refresh()
        assert not await pods.refresh()
        kube.down = False
        kube.fail_next(1, status=500)
        assert not await pods.refresh()
        assert pods.pod_for_pid(80) == PodRef("ml", "p", "main", uid)
        assert await pods.refresh()
    events = [(e["event"], e.get("error")) for e in logs]
    assert events == [
        ("pods_refresh_failed", "HTTP 503 Service Unavailable"),
        ("pods_refresh_failed", "HTTP 500 Internal Server Error"),
        ("pods_refresh_recovered", None),
    ]
    assert pods.stats.refresh_failures == 3


async def test_unreachable_api_server_is_a_refresh_failure(tmp_path: Path) -> None:
    kube = KubeApiServer().start()
    cfg = kube.configuration()
    kube.stop()  # nothing listens on that port now
    api = client.ApiClient(configuration=cfg)
    try:
        pods = _directory(api, tmp_path, request_timeout_s=2.0)
        with capture_logs() as logs:
            assert not await pods.refresh()
    finally:
        await close_kubernetes(api)
    assert [e["event"] for e in logs] == ["pods_refresh_failed"]
    assert not pods.synced


async def test_gpu_pods_from_annotations_and_whole_node_requests(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    g = [gpu.uuid for gpu in GPUS]
    kube.add_pod("by-uuid", node=NODE, annotations={"xidwatch.io/gpus": f"{g[0]}, {g[1]}"})
    kube.add_pod("by-index", node=NODE, annotations={"ALIYUN_COM_GPU_IDX": "2"})
    kube.add_pod(
        "hami", node=NODE, annotations={"hami.io/vgpu-devices-allocated": f"{g[3]},NVIDIA,3000,2:;"}
    )
    kube.add_pod("all", node=NODE, gpus=4)
    kube.add_pod("one", node=NODE, gpus=1)
    kube.add_pod("done", node=NODE, gpus=4, phase="Succeeded")
    kube.add_pod("other-node", node="node-b", gpus=4)
    pods = _directory(api, tmp_path)
    await pods.refresh()

    found = {(p.uuid, p.pod.pod, p.source) for p in pods.gpu_pods(GPUS)}
    expected = {
        (g[0], "by-uuid", "annotation"),
        (g[1], "by-uuid", "annotation"),
        (g[2], "by-index", "annotation"),
        (g[3], "hami", "annotation"),
    } | {(u, "all", "whole-node") for u in g}
    assert found == expected
    assert all(p.pod.container is None and p.pod.uid for p in pods.gpu_pods(GPUS))
    assert pods.gpu_pods([]) == []


async def test_gpu_annotation_keys_and_resources_are_configurable(
    kube: KubeApiServer, api: Any, tmp_path: Path
) -> None:
    kube.add_pod("a", node=NODE, annotations={"example.com/gpu": "1"})
    kube.add_pod("b", node=NODE, gpus=2, gpu_resource="example.com/gpu-shared")
    pods = _directory(
        api,
        tmp_path,
        gpu_annotations=("example.com/gpu",),
        gpu_resources=("nvidia.com/gpu", "example.com/gpu-shared"),
    )
    await pods.refresh()
    found = pods.gpu_pods(GPUS[:2])
    assert GpuPod(GPUS[1].uuid, PodRef("default", "a", uid=_uid(kube, "a")), "annotation") in found
    assert {p.uuid for p in found if p.pod.pod == "b"} == {GPUS[0].uuid, GPUS[1].uuid}


def _uid(kube: KubeApiServer, name: str) -> str:
    return next(str(p["metadata"]["uid"]) for p in kube.pods if p["metadata"]["name"] == name)


def test_annotation_values_name_gpus_by_uuid_else_index() -> None:
    assert annotated_gpus(GPUS[1].uuid.upper(), GPUS) == [GPUS[1].uuid]
    assert annotated_gpus("0,3", GPUS) == [GPUS[0].uuid, GPUS[3].uuid]
    assert annotated_gpus("GPU-unknown,1", GPUS) == []  # a UUID value: numbers are not indices
    assert annotated_gpus("MIG-1234,9", GPUS) == []


def test_strip_container_id_handles_every_runtime_prefix() -> None:
    for prefix in ("containerd://", "cri-o://", "docker://", ""):
        assert strip_container_id(prefix + "abc") == "abc"
