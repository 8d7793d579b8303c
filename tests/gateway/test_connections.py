"""The node calls' HTTP/1.1: kept connections, every way an answer can be framed or broken,
TLS as a kubeconfig sets it, and a forward proxy, each against a real server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp_server.gateway.client import NodeClient
from mcp_server.gateway.connections import (
    IDLE_S,
    MAX_HEAD_BYTES,
    MAX_INTERIM,
    ConnectionPool,
    Response,
)
from mcp_server.gateway.errors import GatewayError, NodeCallError
from mcp_server.gateway.transport import ApiProxyTransport, PodEndpoint
from tests.gateway.http_peer import (
    HANG,
    Answer,
    HttpPeer,
    Seen,
    http_peer,
    json_answer,
    raw_answer,
    read_request,
)
from watcher.k8s.client import connect_kubernetes

OK = raw_answer(200, b'{"ok": true}')
GPUS = {"content": [], "structuredContent": {"gpus": []}}
MAX = 1024


@contextlib.asynccontextmanager
async def _pool(**options: object) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(**options)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        await pool.aclose()


async def _post(pool: ConnectionPool, url: str, body: bytes = b"{}") -> Response:
    async with asyncio.timeout(5):
        return await pool.post(url, body, {"Content-Type": "application/json"}, max_bytes=MAX)


async def _failure(pool: ConnectionPool, url: str) -> NodeCallError:
    with pytest.raises(NodeCallError) as failed:
        await _post(pool, url)
    return failed.value


# -- keep-alive ----------------------------------------------------------------------------


async def test_answers_to_one_origin_share_a_kept_connection() -> None:
    async with http_peer(lambda seen: OK) as peer, _pool() as pool:
        for _ in range(3):
            assert (await _post(pool, peer.url)).body == b'{"ok": true}'
        assert pool.idle == 1
    assert peer.connections == 1 and len(peer.seen) == 3


async def test_a_connection_the_node_closed_while_kept_is_replaced_once() -> None:
    async with http_peer(lambda seen: OK) as peer, _pool() as pool:
        await _post(pool, peer.url)
        peer.close_idle()  # the daemon's keep-alive ran out
        assert (await _post(pool, peer.url)).status == 200
    assert peer.connections == 2


async def test_a_connection_close_answer_is_not_kept() -> None:
    closing = raw_answer(200, b"{}", headers={"Connection": "close"})
    async with http_peer(lambda seen: closing) as peer, _pool() as pool:
        await _post(pool, peer.url)
        await _post(pool, peer.url)
        assert pool.idle == 0
    assert peer.connections == 2


async def test_an_http_1_0_answer_read_to_the_end_of_the_connection() -> None:
    def answer(seen: Seen) -> bytes:
        return b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + b"x" * 700

    async with http_peer(answer, then_close=True) as peer, _pool() as pool:
        response = await _post(pool, peer.url)
        assert (
            response.body == b"x" * 700 and response.headers["content-type"] == "application/json"
        )
        assert pool.idle == 0


async def test_a_call_cut_short_closes_its_connection() -> None:
    hang = asyncio.Event()

    def answer(seen: Seen) -> bytes:
        hang.set()
        return HANG

    async with http_peer(answer) as peer, _pool() as pool:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.post(peer.url, b"{}", {}, max_bytes=MAX)
        assert hang.is_set() and pool.idle == 0


async def test_a_connection_kept_past_its_idle_time_is_not_used_again() -> None:
    now = [100.0]
    async with (
        http_peer(lambda seen: OK) as a,
        http_peer(lambda seen: OK) as b,
        _pool(clock=lambda: now[0]) as pool,
    ):
        await _post(pool, a.url)
        now[0] += IDLE_S  # a's connection is now as old as the daemon lets it get
        await _post(pool, b.url)  # putting b's back sweeps a's away
        assert pool.idle == 1
        await _post(pool, a.url)
    assert a.connections == 2 and b.connections == 1


async def test_the_host_header_never_carries_a_urls_credentials() -> None:
    async with http_peer(lambda seen: OK) as peer, _pool() as pool:
        await _post(pool, f"http://user:secret@127.0.0.1:{peer.port}/mcp?x=1")
    assert peer.seen[0].headers["host"] == f"127.0.0.1:{peer.port}"
    assert peer.seen[0].line == "POST /mcp?x=1 HTTP/1.1"


async def test_the_idle_connections_kept_are_capped() -> None:
    async with (
        http_peer(lambda seen: OK) as a,
        http_peer(lambda seen: OK) as b,
        _pool(max_idle=1) as pool,
    ):
        await _post(pool, a.url)
        await _post(pool, b.url)
        assert pool.idle == 1


# -- framing -------------------------------------------------------------------------------


async def test_a_chunked_answer_with_a_trailer_is_joined() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    async with http_peer(lambda seen: chunked) as peer, _pool() as pool:
        assert (await _post(pool, peer.url)).body == b"hello world"
        assert (await _post(pool, peer.url)).body == b"hello world"  # framing kept it usable
    assert peer.connections == 1


async def test_interim_answers_before_the_answer_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" * MAX_INTERIM
    async with http_peer(lambda seen: interim + OK) as peer, _pool() as pool:
        assert (await _post(pool, peer.url)).status == 200


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (raw_answer(200, b"x" * (MAX + 1)), f"larger than {MAX} B"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n801\r\n", f"larger than {MAX}"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed answer header"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", "headers larger"),
        (b"HTTP/1.1 102 Processing\r\n\r\n" * (MAX_INTERIM + 1) + OK, "interim (1xx)"),
    ],
)
async def test_a_malformed_or_oversized_answer_is_a_protocol_failure(
    answer: bytes, message: str
) -> None:
    async with http_peer(lambda seen: answer) as peer, _pool() as pool:
        failed = await _failure(pool, peer.url)
        assert pool.idle == 0
    assert failed.reason == "protocol" and message in str(failed)


async def test_an_answer_cut_off_midway_is_a_transport_failure() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{partial"
    async with http_peer(lambda seen: cut, then_close=True) as peer, _pool() as pool:
        failed = await _failure(pool, peer.url)
    assert failed.reason == "transport" and "in the middle of the answer" in str(failed)


async def test_a_header_value_with_a_line_break_is_never_sent() -> None:
    async with http_peer(lambda seen: OK) as peer, _pool() as pool:
        with pytest.raises(NodeCallError, match="line break"):
            await pool.post(
                peer.url, b"", {"Authorization": "Bearer x\r\nX-Evil: 1"}, max_bytes=MAX
            )
    assert peer.seen == []


@pytest.mark.parametrize("url", ["ftp://node:21/mcp", "http:///mcp", "http://node:99999/mcp"])
async def test_a_url_the_pool_cannot_call_is_named(url: str) -> None:
    async with _pool() as pool:
        failed = await _failure(pool, url)
    assert failed.reason == "protocol" and url in str(failed)


# -- TLS and proxies -----------------------------------------------------------------------


async def test_https_checks_the_certificate_against_the_tls_server_name(tmp_path: Path) -> None:
    with _tls_files(tmp_path, "kube-api.internal") as (server_tls, client_tls):
        async with _tls_peer(lambda seen: OK, server_tls) as port:
            url = f"https://127.0.0.1:{port}/mcp"
            async with _pool(tls=client_tls, server_hostname="kube-api.internal") as pool:
                assert (await _post(pool, url)).status == 200
            async with _pool(tls=client_tls) as pool:  # no name: 127.0.0.1 is not on it
                failed = await _failure(pool, url)
    assert failed.reason == "transport" and "TLS with 127.0.0.1" in str(failed)


async def test_through_a_proxy_http_names_the_whole_url_and_https_tunnels(tmp_path: Path) -> None:
    async with http_peer(lambda seen: OK) as node, _connect_proxy() as proxy:
        async with _pool(proxy=proxy.url.removesuffix("/mcp")) as pool:
            assert (await _post(pool, node.url)).status == 200
        assert node.seen == [] and proxy.seen[0].line == f"POST {node.url} HTTP/1.1"
        with _tls_files(tmp_path, "kube-api.internal") as (server_tls, client_tls):
            async with _tls_peer(lambda seen: OK, server_tls) as port:
                options = {"tls": client_tls, "server_hostname": "kube-api.internal"}
                proxy_url = f"http://user:p%40ss@127.0.0.1:{proxy.port}"
                async with _pool(proxy=proxy_url, **options) as pool:
                    assert (
                        await _post(pool, f"https://kube-api.internal:{port}/mcp")
                    ).status == 200
    connect = proxy.seen[-1]
    assert connect.line == f"CONNECT kube-api.internal:{port} HTTP/1.1"
    assert connect.headers["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss


async def test_a_proxy_that_refuses_the_tunnel_is_named() -> None:
    refuse = raw_answer(407, b"", headers={"Proxy-Authenticate": "Basic"})
    async with (
        http_peer(lambda seen: refuse) as proxy,
        _pool(proxy=f"http://127.0.0.1:{proxy.port}") as pool,
    ):
        failed = await _failure(pool, "https://kube.example.com:6443/mcp")
    assert failed.reason == "refused"
    assert f"proxy 127.0.0.1:{proxy.port} refused CONNECT kube.example.com:6443: HTTP 407" in str(
        failed
    )


@pytest.mark.parametrize("through_proxy", [False, True])
async def test_a_kubeconfigs_ca_tls_server_name_and_proxy_url_carry_a_pod_proxy_call(
    tmp_path: Path, through_proxy: bool
) -> None:
    """From the kubeconfig file to the wire: the real client library loads it, and the
    call goes where and how it says (its CA, its TLS name, its proxy, its token)."""
    seen: list[Seen] = []

    def api_server(request: Seen) -> bytes:
        seen.append(request)
        return json_answer(200, {"jsonrpc": "2.0", "id": request.json()["id"], "result": GPUS})

    with _tls_files(tmp_path, "kube-api.internal") as (server_tls, _):
        async with _tls_peer(api_server, server_tls) as port, _connect_proxy() as proxy:
            cluster = {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority": str(tmp_path / "tls.crt"),
                "tls-server-name": "kube-api.internal",
            }
            if through_proxy:
                cluster["proxy-url"] = f"http://127.0.0.1:{proxy.port}"
            api = await connect_kubernetes(_kubeconfig(tmp_path, cluster), environ={})
            assert api is not None
            transport = ApiProxyTransport(api)
            pool = transport.pool()
            try:
                url = transport.url(PodEndpoint("gpu", "xidwatch-a", "10.0.3.17", 9607))
                client = NodeClient(pool, transport)
                assert await client.call_tool(url, "list_gpus", {}, timeout_s=5) == {"gpus": []}
            finally:
                await pool.aclose()
                await api.close()  # type: ignore[no-untyped-call]  # untyped library
    (request,) = seen
    assert request.line == "POST /api/v1/namespaces/gpu/pods/xidwatch-a:9607/proxy/mcp HTTP/1.1"
    assert request.headers["authorization"] == "Bearer kube-token"
    tunnels = [s.line for s in proxy.seen]
    assert tunnels == ([f"CONNECT 127.0.0.1:{port} HTTP/1.1"] if through_proxy else [])


def _kubeconfig(tmp: Path, cluster: dict[str, str]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "kube-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp / "kubeconfig"
    path.write_text(json.dumps(doc))
    return path


def test_only_an_http_proxy_is_accepted() -> None:
    with pytest.raises(GatewayError, match="only an http:// forward proxy"):
        ConnectionPool(proxy="socks5://127.0.0.1:1080")


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def _tls_files(tmp: Path, name: str) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server, client) contexts: a certificate for ``name`` and a client trusting only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "tls.crt", tmp / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    yield server, client


@contextlib.asynccontextmanager
async def _tls_peer(answer: Answer, tls: ssl.SSLContext) -> AsyncIterator[int]:
    peer = HttpPeer(answer)
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await peer.stop()


@contextlib.asynccontextmanager
async def _connect_proxy() -> AsyncIterator[HttpPeer]:
    """A forward proxy: plain requests are answered by itself (as the node's stand-in);
    ``CONNECT`` opens a tunnel to the named loopback port and pipes bytes both ways."""
    proxy = HttpPeer(lambda seen: OK)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        assert request is not None
        proxy.seen.append(request)
        if not request.line.startswith("CONNECT "):
            writer.write(OK)
            await writer.drain()
            writer.close()
            return
        port = int(request.line.split()[1].rsplit(":", 1)[1])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
