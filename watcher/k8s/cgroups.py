"""Which container a process runs in, from its ``/proc/<pid>/cgroup``.

The kubelet and the container runtime name cgroups after the pod uid and the container
id, so the path alone says which container (and pod) a GPU process belongs to:

- systemd driver: ``/kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`` (``crio-<id>.scope``,
  ``docker-<id>.scope``); CRI-O with crun adds a ``/container`` leaf.
- cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>`` (CRI-O: ``crio-<id>``).
- plain Docker: ``/docker/<id>`` or ``/system.slice/docker-<id>.scope``.

cgroup v1 files have one line per hierarchy, v2 one ``0::`` line, hybrid both; the path is
read from the first line (``0::`` first) that names a container. Nested shapes (kind and
other Kubernetes-in-Docker setups) take the container just inside the innermost pod.
``crio-conmon-<id>`` (CRI-O's monitor process) is not a container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ContainerCgroup", "parse_cgroup", "read_cgroup_file", "read_pid_cgroup"]

_LINE_RE = re.compile(r"^(\d+):([^:]*):(/.*)$")
_SCOPE_RE = re.compile(r"^(cri-containerd|crio|docker|libpod)-([0-9a-f]{64})(?:\.scope)?$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_POD_SLICE_RE = re.compile(r"^(?:[a-z]+-)*kubepods(?:-[a-z]+)*-pod([0-9a-fA-F_]{32,36})\.slice$")
_POD_DIR_RE = re.compile(r"^pod([0-9a-fA-F-]{32,36})$")
_RUNTIMES = {
    "cri-containerd": "containerd",
    "crio": "cri-o",
    "docker": "docker",
    "libpod": "podman",
}


@dataclass(frozen=True, slots=True)
class ContainerCgroup:
    """A process's container: ``runtime`` is a hint (``unknown`` for a bare cgroupfs id).

    ``container_id`` is the bare 64-hex id, the same the kubelet reports after its
    ``containerd://`` (``cri-o://``, ``docker://``) prefix. ``pod_uid`` has dashes.
    """

    runtime: str
    container_id: str
    pod_uid: str | None


def _pod_uid(part: str) -> str | None:
    if m := _POD_SLICE_RE.match(part):
        return m.group(1).replace("_", "-").lower()
    if m := _POD_DIR_RE.match(part):
        return m.group(1).lower()
    return None


def _container(part: str, parent: str | None, in_pod: bool) -> tuple[str, str] | None:
    """(runtime, id) when one path component names a container."""
    if m := _SCOPE_RE.match(part):
        return _RUNTIMES[m.group(1)], m.group(2)
    if _HEX_RE.match(part):
        if parent == "docker":
            return "docker", part
        if in_pod:
            return "unknown", part
    return None


def _parse_path(path: str) -> ContainerCgroup | None:
    parts = [p for p in path.split("/") if p]
    pod_at, pod_uid = -1, None
    for i, part in enumerate(parts):
        if (uid := _pod_uid(part)) is not None:
            pod_at, pod_uid = i, uid
    found: tuple[str, str] | None = None
    for i, part in enumerate(parts):
        parent = parts[i - 1] if i else None
        hit = _container(part, parent, in_pod=pod_at >= 0 and i > pod_at)
        if hit is None:
            continue
        found = hit
        if pod_at >= 0 and i > pod_at:
            break  # the first container inside the innermost pod
    if found is None:
        return None
    return ContainerCgroup(found[0], found[1], pod_uid)


def parse_cgroup(text: str) -> ContainerCgroup | None:
    """The container named by a ``/proc/<pid>/cgroup`` file; None for a host process.

    Lines that are not ``id:controllers:/path`` are skipped.
    """
    paths = [(m.group(1), m.group(3)) for line in text.splitlines() if (m := _LINE_RE.match(line))]
    paths.sort(key=lambda p: p[0] != "0")  # the v2 line first; v1 lines keep their order
    for _, path in paths:
        if (found := _parse_path(path)) is not None:
            return found
    return None


def read_cgroup_file(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """The text of ``<proc_root>/<pid>/cgroup``; None when the process is gone or unreadable."""
    try:
        return (proc_root / str(pid) / "cgroup").read_bytes().decode(errors="replace")
    except OSError:
        return None


def read_pid_cgroup(pid: int, proc_root: Path = Path("/proc")) -> ContainerCgroup | None:
    """The container ``pid`` runs in; None for a host process or one that is gone."""
    text = read_cgroup_file(pid, proc_root)
    return parse_cgroup(text) if text is not None else None
