"""Real node daemons for the gateway's end-to-end tests, and the fake API server that lists them.

Three ``xidwatch run`` processes with simulated GPUs, each playing a scenario into its own
store, on 127.0.0.2, 127.0.0.3 and 127.0.0.4 with one port (so discovery's default port
reaches all three), each requiring a bearer token, as pods would behind the DaemonSet; or,
to be reached through the API server's pod proxy (which carries no token), without one and
accepting the API server's name as Host.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mcp_server.gateway.discovery import DEFAULT_NAMESPACE, DEFAULT_SELECTOR
from tests.daemons import DaemonProcess
from tests.kube_api import KubeApiServer
from tests.waiting import wait_until

TOKEN = "node-token-for-gateway-tests"
LABELS = dict(kv.split("=") for kv in DEFAULT_SELECTOR.split(","))


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str
    scenario: str
    xids: int  # XID events the scenario stores


SPECS = (
    NodeSpec("node-a", "127.0.0.2", "thermal-runaway", 3),
    NodeSpec("node-b", "127.0.0.3", "ecc-degradation", 6),
    NodeSpec("node-c", "127.0.0.4", "app-crash-loop", 16),
)


class Nodes:
    """The running daemons by node name; :meth:`restart` brings one back where it was.

    ``token``: they require :data:`TOKEN`; ``allowed_hosts``: extra Host names they accept.
    """

    def __init__(
        self, root: Path, *, token: bool = True, allowed_hosts: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        (root / "token").write_text(TOKEN + "\n")
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.port = 0
        self.daemons: dict[str, DaemonProcess] = {}

    def args(self, spec: NodeSpec, *, scenario: bool = True) -> list[str]:
        args = ["--node", spec.name, "--simulate", "4", "--no-kmsg", "--sample-interval", "1"]
        if self.token:
            args += ["--auth-token-file", str(self.root / "token")]
        args += [f"--allowed-host={host}" for host in self.allowed_hosts]
        if scenario:
            args += ["--scenario", spec.scenario, "--scenario-speed", "50"]
        return args

    def start(self) -> None:
        first, *rest = SPECS
        self._start(first, f"{first.ip}:0")
        self.port = self.daemons[first.name].port
        with ThreadPoolExecutor(len(rest)) as pool:
            list(pool.map(lambda s: self._start(s, f"{s.ip}:{self.port}"), rest))
        for spec in SPECS:
            wait_for_xids(self.daemons[spec.name].url, spec.xids)

    def _start(self, spec: NodeSpec, listen: str, *, scenario: bool = True) -> None:
        tmp = self.root / spec.name
        tmp.mkdir(exist_ok=True)
        self.daemons[spec.name] = DaemonProcess(
            tmp, self.args(spec, scenario=scenario), listen=listen
        )

    def kill(self, name: str) -> None:
        daemon = self.daemons[name]
        daemon.proc.kill()
        daemon.stop()

    def restart(self, name: str) -> None:
        """Start the node again on its address and port, on its store, with no new scenario."""
        spec = next(s for s in SPECS if s.name == name)
        self._start(spec, f"{spec.ip}:{self.port}", scenario=False)

    def stop(self) -> list[int]:
        return [d.stop() for d in self.daemons.values()]

    def url(self, name: str) -> str:
        return self.daemons[name].url


def call_node(url: str, tool: str, args: dict[str, object]) -> dict[str, object]:
    """One tools/call to a node daemon (with the token), its structured content."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args},
    }
    request = urllib.request.Request(
        f"{url}/mcp",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        result: dict[str, object] = json.loads(r.read())["result"]["structuredContent"]
        return result


def wait_for_xids(url: str, total: int) -> None:
    """Until the node has stored its scenario's ``total`` XIDs (the scenario has played)."""
    seen: list[object] = [None]

    def stored() -> bool:
        seen[0] = call_node(url, "summarize_xid_events", {"since": "1d"})["total"]
        return seen[0] == total

    wait_until(stored, 30, message=lambda: f"{url} stored {seen[0]} XIDs, expected {total}")


# Listed pod IPs where nothing listens: only the API server's proxy reaches the daemons.
UNROUTABLE = {"node-a": "127.0.0.12", "node-b": "127.0.0.13", "node-c": "127.0.0.14"}
API_HOST = "127.0.0.9"  # the fake API server's address: the Host the daemons see via proxy


@contextmanager
def kube_listing(nodes: Nodes, *, proxied: bool = False) -> Iterator[KubeApiServer]:
    """An API server whose namespace holds one ready daemon pod per node (and noise).

    ``proxied``: the server is on :data:`API_HOST` and lists each daemon at an unroutable
    pod IP that only its pod proxy reaches (the pod network as only the API server sees it).
    """
    with KubeApiServer(host=API_HOST if proxied else "127.0.0.1") as kube:
        add_daemon_pods(kube, nodes, SPECS, proxied=proxied)
        kube.add_pod("dcgm-exporter", DEFAULT_NAMESPACE, node="node-a", labels={"app": "dcgm"})
        yield kube


def add_daemon_pods(
    kube: KubeApiServer, nodes: Nodes, specs: Iterable[NodeSpec], *, proxied: bool
) -> None:
    """One ready daemon pod per node; ``proxied``: at an unroutable IP only its proxy reaches."""
    for spec in specs:
        pod_ip = UNROUTABLE[spec.name] if proxied else spec.ip
        kube.add_pod(
            f"xidwatch-{spec.name}",
            DEFAULT_NAMESPACE,
            node=spec.name,
            labels=LABELS,
            pod_ip=pod_ip,
            ports={"http": nodes.port},
        )
        kube.route(pod_ip, spec.ip)
