"""A real HTTP/1.1 server on loopback whose answers a test writes byte for byte.

The node client's tests need answers no well-behaved server gives (a chunked body, a body
read to the end of the connection, a connection closed mid-answer, garbage, an API server's
``Status``), over a real socket so the client's own connection handling is what is tested.
Each request is parsed (request line, headers, ``Content-Length`` body), recorded, and given
to ``answer``, which returns the raw bytes to send, :data:`HANG` (never answer) or
:data:`DROP` (close without a byte).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DROP",
    "HANG",
    "HttpPeer",
    "Seen",
    "http_peer",
    "json_answer",
    "raw_answer",
    "read_request",
    "rpc_result",
]

HANG = b"<hang>"
DROP = b"<drop>"


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as it arrived."""

    line: str
    headers: dict[str, str]  # names lower-case
    body: bytes
    connection: int  # which accepted connection carried it, from 1

    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[Seen], bytes]


@dataclass
class HttpPeer:
    answer: Answer
    then_close: bool = False  # end each connection after one answer (its body ends at EOF)
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.append(writer)
        if (task := asyncio.current_task()) is not None:
            self._tasks.add(task)
        try:
            while request := await read_request(reader, number):
                self.seen.append(request)
                out = self.answer(request)
                if out == HANG:
                    await self._stopping.wait()
                if out in (HANG, DROP):
                    return
                writer.write(out)
                await writer.drain()
                if self.then_close or b"\r\nConnection: close" in out.split(b"\r\n\r\n", 1)[0]:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def close_idle(self) -> None:
        """Close every connection from this side, as a server whose keep-alive ran out."""
        for writer in self._writers:
            writer.close()

    async def stop(self) -> None:
        """End every connection and wait for them: no socket outlives the test."""
        self._stopping.set()
        self.close_idle()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def http_peer(answer: Answer, *, then_close: bool = False) -> AsyncIterator[HttpPeer]:
    """A peer on 127.0.0.1, on a port of its own, for the ``async with`` block."""
    peer = HttpPeer(answer, then_close)
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await peer.stop()


async def read_request(reader: asyncio.StreamReader, connection: int = 1) -> Seen | None:
    """The next request on a connection (its body by ``Content-Length``); None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *rest = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for item in rest:
        name, _, value = item.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Seen(line, headers, body, connection)


def raw_answer(status: int, body: bytes, *, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 answer with a ``Content-Length``."""
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_answer(status: int, doc: Any) -> bytes:
    return raw_answer(
        status, json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )


def rpc_result(result: Any) -> Answer:
    """Answers every ``tools/call`` with ``result``, under the request's own id."""

    def answer(seen: Seen) -> bytes:
        return json_answer(200, {"jsonrpc": "2.0", "id": seen.json()["id"], "result": result})

    return answer
