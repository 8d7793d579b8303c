"""The uvicorn internals ``mcp_server/http_limits.py`` builds on, checked on a live connection.

``_BoundedH11Protocol`` subclasses uvicorn's ``H11Protocol``: it overrides four of its
methods and reads ``loop``, ``connections``, ``conn``, ``cycle`` and ``transport``, none of
which uvicorn promises to keep. pyproject.toml bounds ``uvicorn`` below the next minor
release; this test (with tests/mcp_server/test_http_limits.py, which drives the limits
themselves) is what must pass before that bound moves.
"""

from __future__ import annotations

import asyncio
import inspect

import h11
import uvicorn
from starlette.responses import PlainTextResponse
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

OVERRIDDEN = {
    "connection_made": ["self", "transport"],
    "data_received": ["self", "data"],
    "on_response_complete": ["self"],
    "connection_lost": ["self", "exc"],
}


def test_the_overridden_methods_keep_their_signatures() -> None:
    for name, params in OVERRIDDEN.items():
        assert list(inspect.signature(getattr(H11Protocol, name)).parameters) == params, name


async def test_a_served_connection_has_the_attributes_the_bounded_protocol_reads() -> None:
    loop = asyncio.get_running_loop()
    config = uvicorn.Config(PlainTextResponse("ok"), log_config=None, lifespan="off")
    state = ServerState()
    made: list[H11Protocol] = []

    def protocol() -> H11Protocol:
        made.append(H11Protocol(config=config, server_state=state, app_state={}, _loop=loop))
        return made[-1]

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    try:
        host, port = server.sockets[0].getsockname()[:2]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readexactly(2)  # the body, "ok"
        (conn,) = made
        assert conn.loop is loop
        assert conn in conn.connections and conn.connections is state.connections
        assert isinstance(conn.conn, h11.Connection) and conn.conn.their_state is h11.IDLE
        assert conn.cycle is not None and conn.cycle.response_complete
        assert isinstance(conn.transport, asyncio.Transport) and not conn.transport.is_closing()
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
