"""Connection resets: close a client's socket without sending a response."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

ABORT_SCOPE_KEY = "stand_in.abort_connection"

Scope = dict[str, Any]
AsgiApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


class ConnectionAbortMiddleware:
    """Outermost ASGI middleware that lets a route reset its connection.

    ASGI has no message for "drop the connection", and uvicorn sends a 500 response
    when an app raises before starting a response. So this middleware puts a
    callable into the scope that reaches the server's transport and aborts it.
    It needs uvicorn's own `send`, which is why it must wrap the whole app.
    """

    def __init__(self, app: AsgiApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            async def abort() -> None:
                await abort_connection(send)

            scope[ABORT_SCOPE_KEY] = abort

        await self.app(scope, receive, send)


async def abort_connection(send: Any) -> None:
    """Reset the TCP connection behind uvicorn's `send` with an RST.

    Raises RuntimeError when `send` is not a uvicorn response cycle's method.
    """
    # NOTE: relies on uvicorn's RequestResponseCycle keeping its asyncio transport in
    # `.transport` (true of the h11, httptools and zttp protocols in uvicorn 0.55).
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        raise RuntimeError("cannot reset the connection: the ASGI server is not uvicorn")

    sock = transport.get_extra_info("socket")
    if sock is not None:
        # A zero linger time makes close() send RST instead of FIN, so the client
        # sees "connection reset by peer" rather than an empty response.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()

    # Let the loop run connection_lost(), which marks the cycle disconnected, so that
    # uvicorn drops the response the route still returns instead of logging an error.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
