"""Load generation shared by the HTTP benchmarks (bench/chat, bench/scale)."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client for timed loops.

    With httpx (and JSON parsing of every answer) bench/chat's load generator was the
    bottleneck (one core at 75-100 % while ``roost serve`` used 36-47 %), so the run
    measured the client's cost per response, not the server's.  This one writes the
    request and reads the answer by its length (or its chunks): tens of microseconds a
    request.  At most ``size`` connections, kept alive and shared."""

    def __init__(self, base_url: str, size: int) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port, self.size = host, int(port), size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
            asyncio.Queue()
        self.opened = 0

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, bytes]:
        if self.idle.empty() and self.opened < self.size:
            self.opened += 1
            conn = await asyncio.open_connection(self.host, self.port)
        else:
            conn = await self.idle.get()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}"]
        if body:
            head.append("Content-Type: application/json")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        reader, writer = conn
        writer.write(message)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            # uvicorn closes a keep-alive connection idle for 5 s (one server's
            # connections wait while the other's phase runs): reconnect and send again.
            writer.close()
            conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(message)
            raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in
                  (line.partition(":") for line in lines[1:] if line)}
        if fields.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                chunks.append(await reader.readexactly(size + 2))
            await reader.readuntil(b"\r\n")
            content = b"".join(c[:-2] for c in chunks)
        else:
            content = await reader.readexactly(int(fields.get("content-length", "0")))
        self.idle.put_nowait(conn)
        return status, content

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()

    async def json(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   payload: Any = None) -> tuple[int, Any]:
        """A JSON request (``payload``, if any) and its decoded JSON answer."""
        body = json.dumps(payload).encode() if payload is not None else b""
        status, content = await self.request(method, path, headers=headers, body=body)
        return status, json.loads(content) if content else None
