"""A real HTTP server speaking the slice of the Kubernetes REST API that xidwatch uses.

Tests point the real ``kubernetes.aio`` client at it (through :meth:`KubeApiServer.kubeconfig`
or :meth:`KubeApiServer.configuration`) and then read what it was sent. It runs in its own
daemon thread, so sync and async tests both use it::

    with KubeApiServer() as kube:
        kube.add_node("node-a")
        kube.add_pod("mcp-0", namespace="gpu", node="node-a", labels={"app": "xidwatch"},
                     pod_ip="10.0.0.7", ready=True)
        path = kube.kubeconfig(tmp_path / "kubeconfig")
        ...  # await config.load_kube_config(str(path), client_configuration=...)
        assert kube.requests[-1].query["labelSelector"] == "app=xidwatch"

Endpoints (every one needs ``Authorization: Bearer <token>``, else 401):

- ``GET /api/v1/pods`` and ``GET /api/v1/namespaces/{ns}/pods``: ``labelSelector``
  (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``,
  comma-joined) and ``fieldSelector`` (``spec.nodeName``, ``status.phase``,
  ``metadata.namespace``, ``metadata.name``, ``status.podIP`` with ``=``, ``==``, ``!=``).
- ``GET /api/v1/namespaces/{ns}/pods/{name}``.
- ``POST /api/v1/namespaces/{ns}/events`` stores the event (``metadata.name`` from
  ``generateName`` when absent, ``uid``, ``resourceVersion``); ``PATCH .../events/{name}``
  merges into it; ``GET .../events`` lists them.
- ``GET /api/v1/nodes/{name}``; ``PATCH /api/v1/nodes/{name}/status`` merges the patch,
  ``status.conditions`` by ``type`` (strategic merge). A PATCH whose Content-Type is not a
  patch type answers 415, as the real API server does.
- ``/api/v1/namespaces/{ns}/pods/{name}[:{port}]/proxy/{path}`` (any method): the pod
  proxy, as the real API server does it: authenticated first, then forwarded to the pod's
  IP and port (``port`` absent: its first container port) with the ``Authorization`` header
  removed, the caller's ``Host`` header kept, and ``X-Forwarded-For``/``X-Forwarded-Uri``
  added; the pod's answer is relayed as it is. No such pod: 404; the pod unreachable: 503
  ``error trying to reach service``. :meth:`route` says where a pod IP is really reached
  (the pod network as the API server sees it), so tests can list pod IPs where nothing
  listens; :attr:`proxied` holds the headers each forwarded request carried.
- Anything else: 404 with a ``Status`` object.

State: :attr:`requests` (every request, with the status it got), :attr:`events`,
:attr:`nodes`, :attr:`pods`. Faults: :meth:`fail_next` answers the next ``n`` requests
with a status; :attr:`down` answers 503 until cleared.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["STRATEGIC_MERGE_PATCH", "KubeApiServer", "RecordedRequest", "container_hex_id"]

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (
    STRATEGIC_MERGE_PATCH,
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
)
_RUNTIME_PREFIX = {"containerd": "containerd://", "cri-o": "cri-o://", "docker": "docker://"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_hex_id(pod_uid: str, container: str) -> str:
    """The 64-hex container id :meth:`KubeApiServer.add_pod` gives a container by default."""
    return hashlib.sha256(f"{pod_uid}/{container}".encode()).hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. ``headers`` keys are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


@dataclass
class _State:
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    proxied: list[dict[str, str]] = field(default_factory=list)
    routes: dict[str, str] = field(default_factory=dict)
    fail: list[int] = field(default_factory=list)
    down: bool = False


# --- selectors -------------------------------------------------------------------------


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside ``(...)``."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


_SET_RE = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")


def _label_term(term: str) -> Callable[[Mapping[str, str]], bool]:
    if m := _SET_RE.match(term):
        key, op, raw = m.groups()
        values = {v.strip() for v in raw.split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (s.strip() for s in term.split(op, 1))
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        return lambda labels: term[1:] not in labels
    return lambda labels: term in labels


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    return all(_label_term(t)(labels) for t in _split_selector(selector))


_POD_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "spec.nodeName": lambda p: p["spec"].get("nodeName", ""),
    "status.phase": lambda p: p["status"].get("phase", ""),
    "metadata.namespace": lambda p: p["metadata"]["namespace"],
    "metadata.name": lambda p: p["metadata"]["name"],
    "status.podIP": lambda p: p["status"].get("podIP", ""),
}


class _BadRequestError(Exception):
    pass


def field_selector_matches(selector: str, pod: dict[str, Any]) -> bool:
    for term in _split_selector(selector):
        op = next(o for o in ("!=", "==", "=") if o in term) if "=" in term else None
        if op is None:
            raise _BadRequestError(f"invalid field selector term {term!r}")
        key, value = (s.strip() for s in term.split(op, 1))
        if key not in _POD_FIELDS:
            raise _BadRequestError(f'field label not supported: "{key}"')
        equal = _POD_FIELDS[key](pod) == value
        if equal != (op != "!="):
            return False
    return True


# --- merge -----------------------------------------------------------------------------


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """JSON merge patch, except ``conditions`` lists merge by ``type`` (strategic merge)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif key == "conditions" and isinstance(value, list):
            current = {c["type"]: c for c in target.get(key) or []}
            for cond in value:
                current.setdefault(cond["type"], {}).update(cond)
            target[key] = list(current.values())
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "AlreadyExists",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


# --- the server ------------------------------------------------------------------------


class KubeApiServer:
    """The fake API server. Use as a context manager, or call :meth:`start`/:meth:`stop`."""

    def __init__(self, token: str = "xidwatch-test-token", *, host: str = "127.0.0.1") -> None:
        self.token = token
        self.host = host
        self._state = _State()
        self._lock = threading.Lock()
        self._versions = itertools.count(1000)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> KubeApiServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer((self.host, 0), handler, bind_and_activate=False)
        self._httpd.daemon_threads = True
        # listen()'s backlog: socketserver's 5 drops connections a gateway's fan-out opens at
        # once (each then waits a 1 s SYN retry); a real API server gets the kernel's maximum.
        self._httpd.request_queue_size = 1024
        self._httpd.server_bind()
        self._httpd.server_activate()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="kube-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig (JSON, which is YAML) pointing at this server; return ``path``."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2))
        return path

    def configuration(self) -> Any:
        """A ``kubernetes.aio.client.Configuration`` for this server (bearer token set)."""
        from kubernetes.aio import client

        cfg = client.Configuration(host=self.url)
        cfg.api_key = {"BearerToken": self.token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        return cfg

    # state: pods

    def add_pod(
        self,
        name: str,
        namespace: str = "default",
        *,
        node: str = "node-a",
        uid: str | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        pod_ip: str | None = "10.0.0.10",
        phase: str = "Running",
        ready: bool = True,
        containers: Sequence[str] = ("main",),
        init_containers: Sequence[str] = (),
        gpus: int = 0,
        gpu_resource: str = "nvidia.com/gpu",
        runtime: str = "containerd",
        container_ids: Mapping[str, str] | None = None,
        ports: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Add (or replace) a pod; return a copy of its v1 Pod dict.

        ``gpus`` goes into the first container's limits and requests, ``ports`` (name ->
        number) into its ``ports``. Container ids are
        ``<runtime>://<64 hex>`` from :func:`container_hex_id` unless ``container_ids`` maps
        a container name to its bare id.
        """
        uid = uid or str(uuid.uuid4())
        ids = dict(container_ids or {})
        ports = dict(ports or {})
        prefix = _RUNTIME_PREFIX[runtime]

        def spec(i: int, cname: str) -> dict[str, Any]:
            res: dict[str, Any] = {"requests": {"cpu": "100m"}, "limits": {}}
            if i == 0 and gpus:
                res["limits"][gpu_resource] = str(gpus)
                res["requests"][gpu_resource] = str(gpus)
            named = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()]
            out = {"name": cname, "image": f"example.com/{cname}:1", "resources": res}
            return out | {"ports": named} if i == 0 and named else out

        def cstatus(cname: str, init: bool) -> dict[str, Any]:
            cid = ids.get(cname) or container_hex_id(uid, cname)
            state = {"terminated": {"exitCode": 0, "reason": "Completed"}} if init else None
            return {
                "name": cname,
                "image": f"example.com/{cname}:1",
                "imageID": f"example.com/{cname}@sha256:{'0' * 64}",
                "containerID": prefix + cid,
                "ready": ready and not init,
                "restartCount": 0,
                "started": not init,
                "state": state or {"running": {"startedAt": _now()}},
            }

        status_ready = "True" if ready else "False"
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": str(next(self._versions)),
                "creationTimestamp": _now(),
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
            },
            "spec": {
                "nodeName": node,
                "containers": [spec(i, c) for i, c in enumerate(containers)],
                "initContainers": [spec(1, c) for c in init_containers],
                "restartPolicy": "Always",
            },
            "status": {
                "phase": phase,
                "conditions": [
                    {"type": "Ready", "status": status_ready, "lastTransitionTime": _now()},
                    {"type": "ContainersReady", "status": status_ready},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "hostIP": "192.168.0.2",
                "startTime": _now(),
                "containerStatuses": [cstatus(c, False) for c in containers],
                "initContainerStatuses": [cstatus(c, True) for c in init_containers],
            },
        }
        if pod_ip:
            pod["status"]["podIP"] = pod_ip
            pod["status"]["podIPs"] = [{"ip": pod_ip}]
        with self._lock:
            self._state.pods[(namespace, name)] = pod
            return copy.deepcopy(pod)

    def remove_pod(self, name: str, namespace: str = "default") -> None:
        with self._lock:
            self._state.pods.pop((namespace, name), None)

    def set_ready(self, name: str, ready: bool, namespace: str = "default") -> None:
        with self._lock:
            pod = self._state.pods[(namespace, name)]
            value = "True" if ready else "False"
            for cond in pod["status"]["conditions"]:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond["status"] = value
            for cs in pod["status"]["containerStatuses"]:
                cs["ready"] = ready
            pod["metadata"]["resourceVersion"] = str(next(self._versions))

    def set_pod_phase(self, name: str, phase: str, namespace: str = "default") -> None:
        with self._lock:
            self._state.pods[(namespace, name)]["status"]["phase"] = phase

    @property
    def pods(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._state.pods.values()))

    # state: nodes and events

    def add_node(
        self,
        name: str,
        *,
        uid: str | None = None,
        labels: Mapping[str, str] | None = None,
        conditions: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": uid or str(uuid.uuid4()),
                "resourceVersion": str(next(self._versions)),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
            "spec": {},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                    *(dict(c) for c in conditions),
                ]
            },
        }
        with self._lock:
            self._state.nodes[name] = node
            return copy.deepcopy(node)

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._state.nodes)

    def node_condition(self, node: str, type_: str) -> dict[str, Any] | None:
        conditions = self.nodes[node]["status"].get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._state.events.values()))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._state.requests.clear()

    # the pod network, as the API server reaches it

    def route(self, pod_ip: str, to: str) -> None:
        """The proxy reaches ``pod_ip`` at address ``to`` (same port)."""
        with self._lock:
            self._state.routes[pod_ip] = to

    @property
    def proxied(self) -> list[dict[str, str]]:
        """The headers of every request the pod proxy forwarded (keys lower-case)."""
        with self._lock:
            return copy.deepcopy(self._state.proxied)

    # faults

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` (after authentication)."""
        with self._lock:
            self._state.fail.extend([status] * n)

    @property
    def down(self) -> bool:
        return self._state.down

    @down.setter
    def down(self, value: bool) -> None:
        with self._lock:
            self._state.down = value

    # request handling (runs on the server's threads)

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            status, doc = self._answer(method, parts.path, query, headers, body)
            self._state.requests.append(
                RecordedRequest(method, parts.path, query, headers, body, status)
            )
        return status, doc

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
    ) -> tuple[int, dict[str, Any]]:
        if refused := self._refusal(headers):
            return refused
        if body is _BAD_JSON:
            return 400, _status(400, "BadRequest", "request body is not JSON")
        if method == "PATCH" and headers.get("content-type") not in PATCH_TYPES:
            ctype = headers.get("content-type")
            return 415, _status(415, "UnsupportedMediaType", f"unsupported patch type {ctype}")
        try:
            return self._route(method, path, query, body)
        except _BadRequestError as e:
            return 400, _status(400, "BadRequest", str(e))

    def _refusal(self, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]] | None:
        """Authentication, then the injected faults (callers hold the lock)."""
        auth = headers.get("authorization", "")
        if auth.split(" ", 1)[-1] != self.token or auth[:7].lower() != "bearer ":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        if self._state.down:
            return 503, _status(503, "ServiceUnavailable", "the server is down (test)")
        if self._state.fail:
            code = self._state.fail.pop(0)
            return code, _status(code, _REASONS.get(code, "InternalError"), "injected failure")
        return None

    def _proxy(
        self, method: str, raw_path: str, headers: dict[str, str], raw: bytes, client: str
    ) -> tuple[int, dict[str, str], bytes]:
        """The pod proxy subresource: (status, headers, body) to send back."""
        parts = urlsplit(raw_path)
        match = _PROXY_PATH.match(parts.path)
        assert match is not None
        ns, target, rest = match.group(1), unquote(match.group(2)), match.group(3) or "/"
        name, _, port = target.partition(":")
        with self._lock:
            refused = self._refusal(headers)
            pod = copy.deepcopy(self._state.pods.get((ns, name)))
            ip = (pod or {}).get("status", {}).get("podIP")
            address = self._state.routes.get(ip, ip) if ip else None
            status = refused[0] if refused else 404 if pod is None else 200
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            self._state.requests.append(
                RecordedRequest(method, parts.path, query, headers, None, status)
            )
        if refused:
            return _json_answer(*refused)
        if pod is None or address is None:
            return _json_answer(404, _status(404, "NotFound", f'pods "{name}" not found'))
        port = port or str(_first_port(pod))
        forward = {k: v for k, v in headers.items() if k not in _NOT_FORWARDED}
        forward["x-forwarded-for"] = client
        forward["x-forwarded-uri"] = parts.path
        with self._lock:
            self._state.proxied.append(dict(forward))
        path = rest + (f"?{parts.query}" if parts.query else "")
        try:
            return _forward(address, int(port), method, path, forward, raw)
        except OSError as e:
            message = f"error trying to reach service: dial tcp {ip}:{port}: {e}"
            return _json_answer(503, _status(503, "ServiceUnavailable", message))

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        seg = [s for s in path.split("/") if s]
        if seg[:2] != ["api", "v1"]:
            return _not_found(path)
        rest = seg[2:]
        match (method, rest):
            case ("GET", ["pods"]):
                return 200, self._list_pods(None, query)
            case ("GET", ["namespaces", ns, "pods"]):
                return 200, self._list_pods(ns, query)
            case ("GET", ["namespaces", ns, "pods", name]):
                return self._get(self._state.pods.get((ns, name)), "pods", name)
            case ("GET", ["namespaces", ns, "events"]):
                items = [e for (n, _), e in self._state.events.items() if n == ns]
                return 200, _list("EventList", items, next(self._versions))
            case ("POST", ["namespaces", ns, "events"]):
                return self._create_event(ns, body)
            case ("PATCH", ["namespaces", ns, "events", name]):
                return self._patch(self._state.events.get((ns, name)), "events", name, body)
            case ("GET", ["nodes", name]):
                return self._get(self._state.nodes.get(name), "nodes", name)
            case ("PATCH", ["nodes", name, "status"]):
                return self._patch(self._state.nodes.get(name), "nodes", name, body)
        return _not_found(path)

    def _list_pods(self, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        pods = [p for (ns, _), p in self._state.pods.items() if namespace in (None, ns)]
        if sel := query.get("labelSelector"):
            pods = [p for p in pods if label_selector_matches(sel, p["metadata"]["labels"])]
        if sel := query.get("fieldSelector"):
            pods = [p for p in pods if field_selector_matches(sel, p)]
        return _list("PodList", pods, next(self._versions))

    def _get(self, obj: dict[str, Any] | None, kind: str, name: str) -> tuple[int, dict[str, Any]]:
        if obj is None:
            return 404, _status(404, "NotFound", f'{kind} "{name}" not found')
        return 200, copy.deepcopy(obj)

    def _patch(
        self, obj: dict[str, Any] | None, kind: str, name: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if obj is None:
            return 404, _status(404, "NotFound", f'{kind} "{name}" not found')
        if not isinstance(body, Mapping):
            return 400, _status(400, "BadRequest", "patch body must be an object")
        _merge(obj, body)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return 200, copy.deepcopy(obj)

    def _create_event(self, ns: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, Mapping) or "involvedObject" not in body:
            return 400, _status(400, "BadRequest", "event needs involvedObject")
        if problems := _event_problems(ns, body):
            return 422, _status(422, "Invalid", "Event is invalid: " + "; ".join(problems))
        event = copy.deepcopy(dict(body))
        meta = event.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                return 400, _status(400, "BadRequest", "name or generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if (ns, meta["name"]) in self._state.events:
            return 409, _status(409, "AlreadyExists", f'events "{meta["name"]}" already exists')
        meta.update(
            namespace=ns,
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(self._versions)),
            creationTimestamp=_now(),
        )
        event.setdefault("apiVersion", "v1")
        event.setdefault("kind", "Event")
        self._state.events[(ns, meta["name"])] = event
        return 201, copy.deepcopy(event)


_BAD_JSON = object()
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


def _event_problems(ns: str, body: Mapping[str, Any]) -> list[str]:
    """The API server's core/v1 Event checks (``legacyValidateEvent``) that bite clients."""
    problems = []
    involved_ns = body["involvedObject"].get("namespace") or ""
    if not body.get("eventTime"):
        mismatch = (involved_ns != ns) if involved_ns else (ns not in ("", "default"))
        if mismatch:
            problems.append("involvedObject.namespace: does not match event.namespace")
        return problems
    if not _MICRO_TIME.match(body["eventTime"]):
        problems.append(f"eventTime: {body['eventTime']!r} is not RFC3339 with microseconds")
    if not involved_ns and ns not in ("default", "kube-system"):
        problems.append("involvedObject.namespace: does not match event.namespace")
    for key, limit in (("reportingComponent", 253), ("reportingInstance", 128)):
        if not body.get(key) or len(body[key]) > limit:
            problems.append(f"{key}: Required value (at most {limit} characters)")
    for key in ("action", "reason"):
        if not body.get(key) or len(body[key]) > 128:
            problems.append(f"{key}: Required value (at most 128 characters)")
    if len(body.get("message") or "") > 1024:
        problems.append("message: Too long: may not be longer than 1024")
    return problems


def _list(kind: str, items: list[dict[str, Any]], version: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(version)},
        "items": copy.deepcopy(items),
    }


def _not_found(path: str) -> tuple[int, dict[str, Any]]:
    return 404, _status(404, "NotFound", f"the server could not find the requested resource {path}")


_PROXY_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/proxy(/.*)?$")
# Not passed to the pod: the caller's credential (the API server strips it once it has
# authenticated the caller) and the hop-by-hop headers.
_NOT_FORWARDED = {
    "authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
PROXY_TIMEOUT_S = 30.0


def _first_port(pod: Mapping[str, Any]) -> int:
    for container in pod["spec"]["containers"]:
        for port in container.get("ports") or ():
            return int(port["containerPort"])
    return 80


def _json_answer(status: int, doc: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(doc).encode()


def _forward(
    host: str, port: int, method: str, path: str, headers: Mapping[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One request to the pod, its Host header the caller's; the answer as it came."""
    conn = http.client.HTTPConnection(host, port, timeout=PROXY_TIMEOUT_S)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            if key != "content-length":
                conn.putheader(key, value)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        kept = {k: v for k, v in response.getheaders() if k.lower() not in _NOT_FORWARDED}
        kept.pop("Content-Length", None)
        kept.pop("content-length", None)
        return response.status, kept, data
    finally:
        conn.close()


def _make_handler(server: KubeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if _PROXY_PATH.match(urlsplit(self.path).path):
                headers = {k.lower(): v for k, v in self.headers.items()}
                client = self.client_address[0]
                self._reply(*server._proxy(self.command, self.path, headers, raw, client))
                return
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = _BAD_JSON
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._reply(*_json_answer(*server._handle(self.command, self.path, headers, body)))

        def _reply(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
