from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.k8s.cgroups import ContainerCgroup, parse_cgroup, read_cgroup_file, read_pid_cgroup

FIXTURES = Path(__file__).parents[2] / "fixtures" / "cgroups"
CID = "3f5e1a7b9c2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"
UID = "1c5f4d0e-8a3b-4c2d-9e1f-0a2b3c4d5e6f"

EXPECTED: dict[str, ContainerCgroup | None] = {
    "containerd-systemd-v2": ContainerCgroup("containerd", CID, UID),
    "containerd-systemd-v2-guaranteed": ContainerCgroup(
        "containerd", CID, "7d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"
    ),
    "containerd-cgroupfs-v1": ContainerCgroup("unknown", CID, UID),
    "containerd-systemd-hybrid": ContainerCgroup("containerd", CID, UID),
    "containerd-cgroupns-v2": ContainerCgroup("containerd", CID, UID),
    "crio-v2": ContainerCgroup("cri-o", CID, UID),
    "crio-v1": ContainerCgroup("cri-o", CID, UID),
    "crio-conmon-v2": None,
    "docker-dockershim-v1": ContainerCgroup("unknown", CID, UID),
    "docker-cri-dockerd-systemd-v2": ContainerCgroup("docker", CID, UID),
    "docker-plain-v1": ContainerCgroup("docker", CID, None),
    "docker-plain-v2": ContainerCgroup("docker", CID, None),
    "host-v1": None,
    "host-v2": None,
    "kind-v1": ContainerCgroup("unknown", CID, UID),
    "kind-v2": ContainerCgroup("containerd", CID, UID),
    "k3s-v2": ContainerCgroup("unknown", CID, UID),
    "static-pod-v2": ContainerCgroup("containerd", CID, "5c3e0b4ac18b2a1c7e6f9d8b0a1c2e3f"),
}


def test_every_fixture_has_an_expected_answer() -> None:
    assert {p.stem for p in FIXTURES.glob("*.cgroup")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_resolves_to_its_container(name: str) -> None:
    text = (FIXTURES / f"{name}.cgroup").read_text()
    assert parse_cgroup(text) == EXPECTED[name]


def test_unified_line_wins_over_v1_lines_when_both_name_a_container() -> None:
    other = "a" * 64
    text = f"4:memory:/kubepods/pod{UID}/{other}\n0::/kubepods/pod{UID}/{CID}\n"
    found = parse_cgroup(text)
    assert found is not None
    assert found.container_id == CID


def test_container_nested_in_a_pod_container_is_attributed_to_the_pod_container() -> None:
    inner = "b" * 64  # docker-in-docker inside a pod: the pod's container is what k8s knows
    text = f"0::/kubepods/burstable/pod{UID}/{CID}/docker/{inner}\n"
    assert parse_cgroup(text) == ContainerCgroup("unknown", CID, UID)


def test_malformed_and_empty_text_is_a_host_process() -> None:
    assert parse_cgroup("") is None
    assert parse_cgroup("garbage\n\n:::\n") is None
    assert parse_cgroup(f"0::/kubepods/burstable/pod{UID}\n") is None  # pod cgroup, no container
    assert parse_cgroup("0::/kubepods/burstable/pod123/notanid\n") is None


def test_read_pid_cgroup_reads_a_fake_proc_root(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text((FIXTURES / "crio-v2.cgroup").read_text())
    assert read_pid_cgroup(4242, proc_root=tmp_path) == ContainerCgroup("cri-o", CID, UID)
    assert read_pid_cgroup(4243, proc_root=tmp_path) is None


def test_read_pid_cgroup_on_this_process_does_not_raise() -> None:
    text = read_cgroup_file(os.getpid())
    assert text is not None
    assert text.strip()
    found = read_pid_cgroup(os.getpid())
    assert found is None or len(found.container_id) == 64


def test_read_pid_cgroup_of_a_dead_process_is_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: /proc/<pid> is gone (pids are not reused this soon)
    assert read_cgroup_file(proc.pid) is None
    assert read_pid_cgroup(proc.pid) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_cgroup_file_is_none(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    target = tmp_path / "7" / "cgroup"
    target.write_text("0::/\n")
    target.chmod(0)
    assert read_pid_cgroup(7, proc_root=tmp_path) is None
