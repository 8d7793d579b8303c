"""Abuse of the daemon's MCP port: garbage, a huge body, a storm of calls, stalled clients.

One real ``xidwatch run --simulate 2 --listen 127.0.0.1:0`` for the module, reached with
raw HTTP (the stateless JSON server answers each POST as a whole JSON-RPC exchange), so
the bytes on the wire are exactly the ones under test. It must answer every bad request
with a clear 4xx or JSON-RPC error, keep its memory, keep ``/healthz`` answering, and end
with exit status 0.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx2
import pytest

from tests.daemons import DaemonProcess
from tests.waiting import wait_until
from watcher.logs import FOREIGN_LINES_PER_MINUTE

pytestmark = pytest.mark.slow

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
MIB = 1 << 20
HUGE_BYTES = 20 * MIB
STORM_CALLS = 2000
STORM_CONNECTIONS = 20
SIMULATED = ("--simulate", "2", "--sample-interval", "1", "--no-kmsg")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("abuse"), SIMULATED)
    try:
        yield d
    finally:
        rc = d.stop()
    assert rc == 0, d.log.read_text()
    # Every bad request was answered; none crashed a task or was logged as a failure.
    assert "Traceback" not in d.log.read_text()
    assert [r for r in d.log_records() if r.get("level") in ("error", "critical")] == []


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=daemon.url, timeout=30) as c:
        yield c


def rpc(method: str, params: dict[str, Any] | None = None, *, id_: int = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


def post(client: httpx2.Client, body: bytes, **headers: str) -> httpx2.Response:
    return client.post("/mcp", content=body, headers={**MCP_HEADERS, **headers})


# -- garbage ---------------------------------------------------------------------------------

DEEP = b"[" * 50_000 + b"]" * 50_000  # under the size limit: refused for its depth
PARSE_ERROR = {-32700}
INVALID_REQUEST = {-32600}
# JSON-RPC says -32600 (Invalid Request); the SDK answers -32602 (Invalid params).
NOT_A_MESSAGE = {-32600, -32602}


@pytest.mark.parametrize(
    ("body", "codes", "says"),
    [
        (b"this is not json", PARSE_ERROR, "Parse error"),
        (b"", PARSE_ERROR, "Parse error"),
        (b"\xff\xfe\x00garbage", PARSE_ERROR, "Parse error"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"', PARSE_ERROR, "Parse error"),
        (DEEP, INVALID_REQUEST, "nested deeper than 32 levels"),
        (b'{"hello": "world"}', NOT_A_MESSAGE, "jsonrpc"),
        (b"[1, 2, 3]", INVALID_REQUEST, "batch arrays are not supported"),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', INVALID_REQUEST, "batch arrays"),
        (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', INVALID_REQUEST, "id must be"),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', INVALID_REQUEST, "id must be"),
        (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', INVALID_REQUEST, "id must be"),
        (b'{"jsonrpc": "2.0", "id": 1e999, "method": "ping"}', PARSE_ERROR, "out of range"),
        (
            b'{"jsonrpc": "2.0", "id": NaN, "method": "ping"}',
            PARSE_ERROR,
            "NaN and Infinity are not",
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": -Infinity}}',
            PARSE_ERROR,
            "NaN and Infinity are not",
        ),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', NOT_A_MESSAGE, "jsonrpc"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": 7}', NOT_A_MESSAGE, "params"),
    ],
    ids=[
        "not-json",
        "empty",
        "not-utf8",
        "truncated",
        "nested-50k-deep",
        "json-not-jsonrpc",
        "array",
        "batch",
        "object-id",
        "float-id",
        "bool-id",
        "overflowing-id",
        "nan-id",
        "infinite-param",
        "wrong-jsonrpc-version",
        "params-not-an-object",
    ],
)
def test_a_body_that_is_not_a_json_rpc_message_gets_a_400_with_a_json_rpc_error(
    client: httpx2.Client, body: bytes, codes: set[int], says: str
) -> None:
    response = post(client, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None
    assert answer["error"]["code"] in codes
    assert says in answer["error"]["message"]


def test_an_unknown_method_gets_method_not_found(client: httpx2.Client) -> None:
    answer = post(client, rpc("gpus/format_all", {}, id_=41)).json()
    assert answer["id"] == 41
    assert answer["error"]["code"] == -32601
    assert answer["error"]["message"] == "Method not found"


@pytest.mark.parametrize(
    ("tool", "arguments", "says"),
    [
        ("explain_xid", {"code": "seventy-nine"}, "code"),
        ("explain_xid", {"code": -1}, "greater than or equal to 0"),
        ("explain_xid", {"code": 10**30}, "code"),
        ("correlate_xid", {"event_id": 2**63}, "less than or equal to 9223372036854775807"),
        ("explain_xid", {}, "Field required"),
        ("explain_xid", {"code": 79, "kind": "gremlin"}, "kind"),
        ("list_xid_events", {"since": "the day before yesterday-ish"}, "since"),
        ("list_xid_events", {"limit": "all"}, "limit"),
        ("list_xid_events", {"codes": list(range(1000))}, "codes"),
        ("get_gpu_snapshot", {"gpu": ["0", {"x": 1}]}, "gpu"),
        ("no_such_tool", {}, "Unknown tool"),
    ],
    ids=[
        "string-for-int",
        "below-bound",
        "huge-int",
        "event-id-past-int64",
        "missing-required",
        "bad-literal",
        "unparseable-time",
        "string-for-limit",
        "too-many-codes",
        "wrong-shape",
        "unknown-tool",
    ],
)
def test_a_tool_call_with_bad_arguments_is_an_error_result_naming_the_problem(
    client: httpx2.Client, tool: str, arguments: dict[str, Any], says: str
) -> None:
    response = post(client, rpc("tools/call", {"name": tool, "arguments": arguments}, id_=7))
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == 7
    result = answer["result"]
    assert result["isError"] is True
    text = " ".join(c["text"] for c in result["content"] if c["type"] == "text")
    assert says in text, text


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("POST", {"Content-Type": "text/plain"}, 400),
        ("POST", {"Content-Type": "application/x-www-form-urlencoded"}, 400),
        ("POST", {"Accept": "text/html"}, 406),
        ("PUT", {}, 405),
        ("PATCH", {}, 405),
        ("GET", {}, 405),
    ],
    ids=["text-plain", "form", "accepts-no-json", "put", "patch", "get"],
)
def test_wrong_methods_and_headers_are_refused_with_a_4xx(
    client: httpx2.Client, method: str, headers: dict[str, str], status: int
) -> None:
    response = client.request(
        method, "/mcp", content=rpc("tools/list"), headers={**MCP_HEADERS, **headers}
    )
    assert response.status_code == status, response.text
    assert response.text  # says why


# -- a huge body -----------------------------------------------------------------------------


def _huge_chunks() -> Iterator[bytes]:
    """A 20 MiB JSON-RPC call sent chunked, with no Content-Length to refuse it by."""
    yield b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "explain_xid",'
    yield b' "arguments": {"code": 79, "padding": "'
    for _ in range(HUGE_BYTES // MIB):
        yield b"x" * MIB
    yield b'"}}}'


def test_a_huge_body_is_refused_without_the_daemon_growing(
    daemon: DaemonProcess, client: httpx2.Client
) -> None:
    declared = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "' + b"x" * HUGE_BYTES + b'"}'
    post(client, rpc("ping"))  # warm: first-request allocations are not the body's
    daemon.reset_peak()
    before_kib = daemon.memory_kib()
    for _ in range(3):
        with_length = post(client, declared)
        assert with_length.status_code == 413, with_length.text
        chunked = client.post("/mcp", content=_huge_chunks(), headers=MCP_HEADERS)
        assert chunked.status_code == 413, chunked.text
    grown_kib = daemon.memory_kib() - before_kib
    peak_kib = daemon.memory_kib("VmHWM") - before_kib
    print(f"after 6 x 20 MiB bodies: RSS +{grown_kib} KiB, peak +{peak_kib} KiB")
    # The SDK buffers up to 4 MiB before refusing; a body held whole would add 20 MiB.
    assert peak_kib < 16 * 1024
    assert grown_kib < 16 * 1024
    assert post(client, rpc("ping")).json()["result"] == {}  # and it still serves


def _many_small_objects(total_bytes: int) -> bytes:
    """A tool argument of tiny objects: about 100 MB of Python objects if parsed at 4 MiB."""
    items = b",".join([b'{"a":1}'] * (total_bytes // 8))
    return rpc("tools/call", {"name": "explain_xid", "arguments": {"code": 79}})[:-3] + (
        b', "pad": [' + items + b"]}}}"
    )


def test_bodies_of_many_small_objects_are_refused_before_they_are_parsed(
    daemon: DaemonProcess,
) -> None:
    body = _many_small_objects(4 * MIB - 64 * 1024)  # under the SDK's own 4 MiB limit
    with httpx2.Client(base_url=daemon.url, timeout=30) as c:
        post(c, rpc("ping"))  # warm
    daemon.reset_peak()
    before_kib = daemon.memory_kib()

    def send(_: int) -> int:
        with httpx2.Client(base_url=daemon.url, timeout=30) as c:
            return post(c, body).status_code

    with ThreadPoolExecutor(5) as pool:
        statuses = list(pool.map(send, range(10)))
    peak_kib = daemon.memory_kib("VmHWM") - before_kib
    print(f"10 x 4 MiB of small objects, 5 at once: peak RSS +{peak_kib} KiB")
    assert statuses == [413] * 10
    assert peak_kib < 16 * 1024  # parsed, five of them would be about 500 MB


# -- errors a client causes ------------------------------------------------------------------

CLIENT_ERRORS = [
    ("prompts/get", {"name": "no-such-prompt"}),
    ("resources/read", {"uri": "xid://catalog/abc"}),
    ("tools/call", {"name": "correlate_xid", "arguments": {"event_id": 2**63}}),
]


def test_errors_clients_cause_are_answered_and_logged_as_a_few_json_lines(
    daemon: DaemonProcess,
) -> None:
    lines_before = len(daemon.log.read_text().splitlines())

    def call(n: int) -> dict[str, Any]:
        method, params = CLIENT_ERRORS[n % len(CLIENT_ERRORS)]
        with httpx2.Client(base_url=daemon.url, timeout=30) as c:
            answer: dict[str, Any] = post(c, rpc(method, params, id_=n)).json()
            return answer

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(call, range(60)))
    for n, answer in enumerate(answers):
        assert answer["id"] == n
        if n % 3 == 2:  # the tool call: an error result naming the bound
            assert answer["result"]["isError"] is True
            assert "less than or equal to" in answer["result"]["content"][0]["text"]
        else:
            assert "error" in answer
    new_lines = daemon.log.read_text().splitlines()[lines_before:]
    assert all(line.startswith("{") for line in new_lines), new_lines[:20]  # no Rich box
    failed = Counter(
        r["logger"] for r in map(json.loads, new_lines) if r["event"] == "mcp_request_failed"
    )
    assert failed and all(n <= FOREIGN_LINES_PER_MINUTE for n in failed.values()), failed
    assert post_ok(daemon)


def post_ok(daemon: DaemonProcess) -> bool:
    with httpx2.Client(base_url=daemon.url, timeout=10) as c:
        return bool(c.get("/healthz").status_code == 200)


# -- a storm of calls ------------------------------------------------------------------------


def _call_explain(url: str, calls: int, first_id: int) -> Counter[str]:
    """``calls`` explain_xid calls over one keep-alive connection; outcomes counted."""
    outcomes: Counter[str] = Counter()
    with httpx2.Client(base_url=url, timeout=30) as c:
        for n in range(first_id, first_id + calls):
            params = {"name": "explain_xid", "arguments": {"code": 79 + n % 3}}
            r = post(c, rpc("tools/call", params, id_=n))
            ok = r.status_code == 200 and r.json().get("id") == n and "result" in r.json()
            outcomes["ok" if ok else f"{r.status_code}: {r.text[:200]}"] += 1
    return outcomes


def test_thousands_of_calls_leave_healthz_answering_and_the_daemon_ready(
    daemon: DaemonProcess,
) -> None:
    probes: list[tuple[int, float]] = []
    done = threading.Event()

    def probe() -> None:
        with httpx2.Client(base_url=daemon.url, timeout=10) as c:
            while not done.is_set():
                started = time.perf_counter()
                status = c.get("/healthz").status_code
                probes.append((status, time.perf_counter() - started))
                done.wait(0.02)

    prober = threading.Thread(target=probe, name="healthz-probe")
    prober.start()
    per_connection = STORM_CALLS // STORM_CONNECTIONS
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(STORM_CONNECTIONS) as pool:
            futures = [
                pool.submit(_call_explain, daemon.url, per_connection, i * per_connection)
                for i in range(STORM_CONNECTIONS)
            ]
            outcomes = sum((f.result() for f in futures), Counter[str]())
    finally:
        took_s = time.perf_counter() - started
        done.set()
        prober.join()
    slowest_s = max(s for _, s in probes)
    print(
        f"{STORM_CALLS} calls over {STORM_CONNECTIONS} connections in {took_s:.1f} s "
        f"({STORM_CALLS / took_s:.0f}/s); /healthz answered {len(probes)} probes, "
        f"slowest {slowest_s * 1000:.0f} ms"
    )
    assert outcomes == Counter(ok=STORM_CALLS)
    assert len(probes) >= 3 and {status for status, _ in probes} == {200}
    assert daemon.proc.poll() is None
    with httpx2.Client(base_url=daemon.url, timeout=10) as c:
        ready = c.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True


def test_hundreds_of_stalled_connections_do_not_starve_the_probes(
    daemon: DaemonProcess, client: httpx2.Client
) -> None:
    """Slowloris: clients that send half a request and wait hold no worker the probes need."""
    with ExitStack() as stack:
        for n in range(300):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", daemon.port), 5))
            half = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {1000 + n}\r\n"
            sock.sendall(half.encode() + (b"\r\n{" if n % 2 else b""))
        for _ in range(20):
            assert client.get("/healthz").status_code == 200
            assert post(client, rpc("ping")).status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text


def _healthz(d: DaemonProcess) -> int | None:
    """``/healthz``'s status, or None while the daemon cannot take the connection."""
    try:
        return d.get("/healthz")[0]
    except OSError:
        return None


def test_running_out_of_file_descriptors_logs_json_lines_and_recovers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """accept() failing with EMFILE: a few one-line JSON errors, then service resumes."""
    d = DaemonProcess(tmp_path_factory.mktemp("nofile"), SIMULATED)
    try:
        soft, hard = resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE)
        in_use = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (in_use + 4, hard))
        with ExitStack() as stack:
            for _ in range(30):
                stack.enter_context(socket.create_connection(("127.0.0.1", d.port), 5))
            wait_until(lambda: "out of system resource" in d.log.read_text())  # met the limit
        resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
        wait_until(lambda: _healthz(d) == 200)  # accept() resumes a second after it failed
    finally:
        assert d.stop() == 0, d.log.read_text()
    lines = d.log.read_text().splitlines()
    assert all(line.startswith("{") for line in lines), lines
    accept = [r for r in d.log_records() if "out of system resource" in r["event"]]
    assert 1 <= len(accept) <= FOREIGN_LINES_PER_MINUTE
    assert accept[0]["logger"] == "asyncio" and "Too many open files" in accept[0]["exception"]
