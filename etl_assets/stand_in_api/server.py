"""Run the stand-in API with uvicorn on a loopback port."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from .app import create_app
from .settings import StandInSettings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class PortInUseError(OSError):
    """The requested port is already bound by another socket."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is already in use")
        self.host = host
        self.port = port


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on (host, port); port 0 picks a free port.

    Binding before uvicorn starts gives the caller the real port at once and
    turns "address in use" into a `PortInUseError` instead of a uvicorn exit.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Lets a restarted server reuse a port whose old connections are in TIME_WAIT;
    # on Linux it does not allow two listeners on one port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from error
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class StandInServer(uvicorn.Server):
    """uvicorn server that calls `on_started(port)` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[int], None] | None = None):
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None and sockets:
            self.on_started(sockets[0].getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    """A started stand-in server: its base URL and its app (tables in `app.state.store`)."""

    base_url: str
    host: str
    port: int
    app: FastAPI


def format_base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def wait_until_answering(base_url: str, thread: threading.Thread, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as error:
            if not thread.is_alive():
                raise RuntimeError(f"stand-in server at {base_url} stopped during startup") from error
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"stand-in server at {base_url} did not respond within {timeout_s} s"
                ) from error
        time.sleep(0.02)


@contextmanager
def serve_in_thread(
    settings: StandInSettings,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    **uvicorn_options: Any,
) -> Iterator[RunningServer]:
    """Run the stand-in API in a background thread until the block exits.

    Yields once GET /openapi.json returns 200. Raises `PortInUseError`
    when `port` is taken.
    """
    app = create_app(settings)
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    base_url = format_base_url(host, bound_port)

    config = uvicorn.Config(app, log_level=log_level, lifespan="off", **uvicorn_options)
    server = StandInServer(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"stand-in-api-{bound_port}", daemon=True
    )
    thread.start()

    try:
        wait_until_answering(base_url, thread, START_TIMEOUT_S)
        logger.info("stand-in API started at %s", base_url)
        yield RunningServer(base_url=base_url, host=host, port=bound_port, app=app)
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        sock.close()
        if thread.is_alive():
            logger.error("stand-in API at %s did not stop within %s s", base_url, STOP_TIMEOUT_S)
        else:
            logger.info("stand-in API at %s stopped", base_url)
