"""Servers a test starts on loopback (an SMTP relay, a scripted peer, a web site), each
on a port the system picks, all closed when the test ends."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Serve = Callable[[Awaitable[Any]], Awaitable[int]]


@contextlib.asynccontextmanager
async def loopback_servers() -> AsyncIterator[Serve]:
    """``serve(loop.create_server(..., "127.0.0.1", 0))`` (or ``asyncio.start_server``):
    the started server's port; every server is closed on the way out."""
    servers: list[Any] = []

    async def serve(started: Awaitable[Any]) -> int:
        server = await started
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    try:
        yield serve
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@contextlib.contextmanager
def http_site(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server answering with ``handler`` in a thread on 127.0.0.1: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(BaseHTTPRequestHandler):
    """A handler for :func:`http_site` that logs nothing and answers with :meth:`send`."""

    def send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output quiet

