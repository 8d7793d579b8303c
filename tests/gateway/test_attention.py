"""``nodes_needing_attention`` asks two questions of each node; a node that hangs costs one
timeout, not two (the XID summary goes only to the nodes that answered the health question)."""

from __future__ import annotations

import asyncio

from mcp_server.gateway import CallPolicy, Fleet, RetryPolicy


async def test_a_hanging_node_is_asked_once_and_named_unreachable() -> None:
    requests = 0

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await reader.readuntil(b"\r\n\r\n")  # a request arrived; it is never answered
        requests += 1
        try:
            await reader.read()  # until the gateway gives up and closes
        finally:
            writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    policy = CallPolicy(node_timeout_s=0.3, retry=RetryPolicy(retries=0))
    try:
        async with Fleet.static({"hung": f"http://127.0.0.1:{port}"}, policy=policy) as fleet:
            answer = await fleet.needing_attention("1h")
    finally:
        server.close()
        await server.wait_closed()
    assert requests == 1
    assert (answer.nodes_asked, answer.nodes_answered) == (1, 0)
    assert [(f.node, f.reason) for f in answer.nodes_failed] == [("hung", "timeout")]
    assert [(n.node, n.status) for n in answer.nodes] == [("hung", "unreachable")]
