"""The built-in ``web_fetch`` tool and streamable-HTTP MCP servers against a hostile HTTP
server on loopback (allowed by the tools tests' ``ROOST_TOOLS_ALLOWED_HOSTS=127.0.0.1``),
and URLs naming private hosts in other notations.  The server answers at the socket
level, so it can drip, never end, lie about lengths or send bombs, and it counts what it
managed to send: every call ends in a clear answer, recorded as the tool's run, and Roost
stops reading far short of what the server would send."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from roost.db.engine import Database
from roost.tools.mcpclient import MAX_MESSAGE_BYTES
from tests.support.identity import make_user
from tests.tools.test_tools_api import tool_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

FETCH = "/api/v1/tools/by-name/web_fetch/call"
PROBLEMS = "https://roost.dev/problems/"
MB = 1024 * 1024
SEND_CAP = 96 * MB  # the hostile server never sends more than this (protects the machine)
# Roost's caps (5 MiB a fetch, 16 MiB an MCP answer) plus what the socket buffers took
# before it stopped reading.
READ_AT_MOST = 32 * MB
HOLD_S = 120  # how long the server keeps a connection it is done writing to
# The server answers one request a connection: a client must not send another on it.
CLOSE = b"Connection: close\r\n"


# A compression bomb decodes to this; Roost must hold about its cap (5 MiB a fetch, 16 MiB
# an MCP answer), never the bomb.
BOMB_SIZE = 128 * MB
PEAK_AT_MOST = 64 * MB
ZSTD_HELLO = bytes.fromhex("28b52ffd2005290000") + b"hello"  # one raw block, no checksum


@functools.cache
def _gzip_zeros(total: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(b"\0" * MB) for _ in range(total // MB)]
    out.append(comp.flush())
    return b"".join(out)


def _bomb(coding: str) -> bytes:
    """BOMB_SIZE zeros, gzipped (~130 KB) or gzipped twice (~300 bytes)."""
    return {"gzip": _gzip_zeros(BOMB_SIZE),
            "gzip, gzip": gzip.compress(_gzip_zeros(BOMB_SIZE), 9)}[coding]


async def _peak_of(work: Callable[[], Awaitable[httpx.Response]]) -> tuple[httpx.Response, int]:
    """``work``'s answer and the most memory Python held meanwhile."""
    tracemalloc.start()
    try:
        answer = await work()
        return answer, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


Route = Callable[[socket.socket, str, bytes], None]


class Hostile:
    """A raw-socket HTTP/1.1 server on 127.0.0.1; ``routes`` maps a path to a writer."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.sent: dict[str, int] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        self.routes: dict[str, Route] = {}
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append((method, path, body))
            route = self.routes.get(path.split("?", 1)[0])
            if route is None:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n")
            else:
                route(conn, method, body)
        except OSError:
            pass
        finally:
            conn.close()

    def send(self, path: str, conn: socket.socket, data: bytes) -> bool:
        """Send ``data``, counted for ``path``; False once the client hung up or the cap
        is reached."""
        if self.sent.get(path, 0) >= SEND_CAP:
            return False
        try:
            conn.sendall(data)
        except OSError:
            return False
        self.sent[path] = self.sent.get(path, 0) + len(data)
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    try:
        yield server
    finally:
        server.close()


def _hold(conn: socket.socket) -> None:
    """Keep the connection open without sending, until the client leaves."""
    conn.settimeout(HOLD_S)
    try:
        conn.recv(1)
    except OSError:
        pass


# --------------------------------------------------------------------------- web_fetch

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


def _web_routes(h: Hostile) -> dict[str, Route]:
    def endless(conn: socket.socket, method: str, body: bytes) -> None:
        h.send("/endless", conn, OK + b"Transfer-Encoding: chunked\r\n\r\n")
        while h.send("/endless", conn, b"%x\r\n%s\r\n" % (MB, b"a" * MB)):
            pass
        _hold(conn)

    def no_length(conn: socket.socket, method: str, body: bytes) -> None:
        h.send("/no-length", conn, OK + b"Connection: close\r\n\r\n")
        while h.send("/no-length", conn, b"b" * MB):
            pass
        _hold(conn)

    def gzip_bomb(conn: socket.socket, method: str, body: bytes) -> None:
        bomb = _gzip_zeros(512 * MB)  # ~500 KB on the wire
        h.send("/gzip-bomb", conn, OK + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
               % len(bomb) + bomb)

    def header_drip(conn: socket.socket, method: str, body: bytes) -> None:
        h.send("/header-drip", conn, b"HTTP/1.1 200 OK\r\n")
        for _ in range(200):  # 50 s of headers
            if not h.send("/header-drip", conn, b"X-A: b\r\n"):
                return
            time.sleep(0.25)

    def body_drip(conn: socket.socket, method: str, body: bytes) -> None:
        h.send("/body-drip", conn, OK + b"Content-Length: 100000\r\n\r\n")
        for _ in range(400):  # 100 s of body
            if not h.send("/body-drip", conn, b"z"):
                return
            time.sleep(0.25)

    def answer(path: str, head: bytes, payload: bytes = b"", hold: bool = False,
               sized: bool = False) -> Route:
        """``head``, then ``payload`` (with its true Content-Length when ``sized``)."""
        if sized:
            head += b"Content-Length: %d\r\n" % len(payload)

        def route(conn: socket.socket, method: str, body: bytes) -> None:
            h.send(path, conn, head + b"\r\n" + payload)
            if hold:
                _hold(conn)
        return route

    return {
        "/endless": endless, "/no-length": no_length, "/gzip-bomb": gzip_bomb,
        "/header-drip": header_drip, "/body-drip": body_drip,
        "/lying-length": answer("/lying-length", OK + b"Content-Length: 5000\r\n",
                                b"only a little", hold=True),
        "/huge-length": answer("/huge-length",
                               OK + b"Content-Length: 99999999999999999999999\r\n", b"small"),
        "/bad-length": answer("/bad-length", OK + b"Content-Length: -5\r\n", b"small"),
        "/garbage": answer("/garbage", b"\x00\xff not http at all \r\n"),
        "/huge-header": answer("/huge-header", OK + b"X-Big: " + b"h" * (8 * MB)
                               + b"\r\nContent-Length: 2\r\n", b"ok"),
        "/bad-utf8": answer("/bad-utf8", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; "
                            b"charset=utf-8\r\n",
                            b"caf\xe9 \xff\xfe broken \xc3\x28 utf-8 \x00 nul", sized=True),
        "/bad-charset": answer("/bad-charset", b"HTTP/1.1 200 OK\r\nContent-Type: text/html; "
                               b"charset=x-no-such-charset\r\n",
                               b"<html><body><p>hello</p></body></html>", sized=True),
        "/bad-gzip": answer("/bad-gzip", OK + b"Content-Encoding: gzip\r\nContent-Length: 10\r\n",
                            b"not gzip!!"),
        "/zstd": answer("/zstd", OK + b"Content-Encoding: zstd\r\n", ZSTD_HELLO, sized=True),
        "/stacked-gzip-bomb": answer("/stacked-gzip-bomb",
                                     OK + b"Content-Encoding: gzip, gzip\r\n",
                                     _bomb("gzip, gzip"), sized=True),
        "/to-file": answer("/to-file", b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n"
                           b"Content-Length: 0\r\n"),
        "/early-hints": answer("/early-hints", b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                               + OK + b"Content-Length: 2\r\n", b"ok"),
    }


# path -> (status, problem) for a refusal, or (200, the text returned)
HOSTILE_RESPONSES = {
    "/endless": (413, "fetch-too-large"), "/no-length": (413, "fetch-too-large"),
    "/gzip-bomb": (413, "fetch-too-large"),
    "/header-drip": (504, "fetch-timeout"), "/body-drip": (504, "fetch-timeout"),
    "/lying-length": (504, "fetch-timeout"),
    "/huge-length": (502, "fetch-failed"), "/bad-length": (502, "fetch-failed"),
    "/garbage": (502, "fetch-failed"), "/huge-header": (502, "fetch-failed"),
    "/bad-gzip": (502, "fetch-failed"),
    "/zstd": (502, "fetch-failed"),  # Roost asks for gzip and deflate only
    "/stacked-gzip-bomb": (413, "fetch-too-large"),
    "/bad-utf8": (422, "tool-failed"),  # a NUL: binary, not text
    "/to-file": (403, "fetch-refused"),  # a redirect to file://
    "/bad-charset": (200, "hello"), "/early-hints": (200, "ok"),
}


async def test_web_fetch_of_a_hostile_response_ends_in_a_clear_answer(
    client: httpx.AsyncClient, database: Database, hostile: Hostile,
) -> None:
    """All at once: the drips would take 50-100 s and the held connections 120 s; each
    call ends by its 6 s deadline (the 504s), the rest at once."""
    hostile.routes.update(_web_routes(hostile))
    _, alice = await make_user(database)
    answers = await asyncio.wait_for(asyncio.gather(*(
        client.post(FETCH, headers=alice, json={"arguments": {"url": hostile.url(path)}})
        for path in HOSTILE_RESPONSES)), 60)
    for (path, (status, expected)), answer in zip(HOSTILE_RESPONSES.items(), answers,
                                                  strict=True):
        body = answer.json()
        assert answer.status_code == status, (path, answer.text[:400])
        if status == 200:
            assert (body["status"], body["output"]["text"]) == ("success", expected), body
        else:
            assert body["type"] == PROBLEMS + expected and body["detail"], (path, body)
            run = (await client.get(f"/api/v1/tool-runs/{body['tool_run_id']}",
                                    headers=alice)).json()
            assert run["status"] == ("timeout" if status == 504 else "error"), (path, run)
            assert run["error"] == body["detail"], (path, run)
        assert hostile.sent.get(path, 0) < READ_AT_MOST, (path, hostile.sent.get(path))


@pytest.mark.parametrize("coding", ["gzip", "gzip, gzip"])
async def test_web_fetch_of_a_compression_bomb_is_a_413_holding_about_its_cap(
    client: httpx.AsyncClient, database: Database, hostile: Hostile, coding: str,
) -> None:
    """A few hundred bytes decoding to 128 MiB stop at the 5 MiB cap: the answer is
    decoded in bounded pieces (httpx decodes each network chunk whole)."""
    bomb = _bomb(coding)
    path = "/bomb-" + coding.replace(", ", "-")
    hostile.routes[path] = lambda conn, method, body: hostile.send(path, conn, OK + (
        b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (coding.encode(), len(bomb))
    ) + bomb)
    _, alice = await make_user(database)
    answer, peak = await _peak_of(lambda: client.post(
        FETCH, headers=alice, json={"arguments": {"url": hostile.url(path)}}))
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["type"] == PROBLEMS + "fetch-too-large"
    assert peak < PEAK_AT_MOST, f"web_fetch held {peak // MB} MiB for {len(bomb)} bytes"


# url -> (status, problem); a trailing-dot name is refused or unresolvable, as the
# machine's resolver has it
PRIVATE_NOTATIONS = {
    "http://127.1:{port}/x": (403, "fetch-refused"),
    "http://2130706433:{port}/x": (403, "fetch-refused"),
    "http://0x7f000001:{port}/x": (403, "fetch-refused"),
    "http://[::ffff:127.0.0.1]:{port}/x": (403, "fetch-refused"),
    "http://0:{port}/x": (403, "fetch-refused"),
    "http://localhost:{port}/x": (403, "fetch-refused"),
    "http://[fd00::1]/": (403, "fetch-refused"),
    "http://100.64.0.1/": (403, "fetch-refused"),
    "http://[::ffff:a9fe:a9fe]/": (403, "fetch-refused"),
    "http://169.254.169.254./": (0, "fetch-refused or fetch-failed"),
    "http://127.0.0.1@169.254.169.254/": (400, "invalid-url"),
    "gopher://127.0.0.1:{port}/x": (403, "fetch-refused"),
    "data:text/plain,hi": (403, "fetch-refused"),
    "file:///etc/passwd": (403, "fetch-refused"),
    "ftp://127.0.0.1:{port}/": (403, "fetch-refused"),
    "http://127.0.0.1:{port}/" + "x" * 20_000: (422, "validation-error"),
}


def _refused_as(answer: httpx.Response, status: int, problem: str) -> bool:
    body = answer.json()
    if status == 0:  # either
        return (answer.status_code, body["type"]) in (
            (403, PROBLEMS + "fetch-refused"), (502, PROBLEMS + "fetch-failed"))
    return (answer.status_code, body["type"]) == (status, PROBLEMS + problem) and bool(
        body["detail"])


async def test_web_fetch_reaches_loopback_only_by_its_allow_listed_name(
    client: httpx.AsyncClient, database: Database, hostile: Hostile,
) -> None:
    """Only the literal allow-listed name '127.0.0.1' may reach loopback."""
    _, alice = await make_user(database)
    before = len(hostile.requests)
    wrong = []
    for url, (status, problem) in PRIVATE_NOTATIONS.items():
        answer = await client.post(FETCH, headers=alice, json={
            "arguments": {"url": url.format(port=hostile.port)}})
        if not _refused_as(answer, status, problem):
            wrong.append((url[:60], answer.status_code, answer.text[:300]))
    assert not wrong, wrong
    assert len(hostile.requests) == before


# --------------------------------------------------------------------------- MCP

INIT_RESULT = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
               "serverInfo": {"name": "hostile", "version": "1"}}
FLOOD_TOOL = {"name": "flood", "description": "d", "inputSchema": {"type": "object"}}


def _json_response(result: object, msg_id: object) -> bytes:
    payload = json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + CLOSE
            + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)


def _mcp_route(h: Hostile, path: str, flood: str, as_sse: bool) -> None:
    """An MCP endpoint answering initialize properly, then ``flood`` ("tools/list" or
    "tools/call") with a JSON (or SSE) body that never ends."""

    def route(conn: socket.socket, method: str, body: bytes) -> None:
        if method != "POST":
            h.send(path, conn, b"HTTP/1.1 405 Method Not Allowed\r\n" + CLOSE
                   + b"Content-Length: 0\r\n\r\n")
            return
        try:
            msg = json.loads(body or b"{}")
        except ValueError:
            msg = {}
        name, msg_id = msg.get("method"), msg.get("id")
        if msg_id is None:  # a notification
            h.send(path, conn, b"HTTP/1.1 202 Accepted\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n")
        elif name == "initialize":
            h.send(path, conn, _json_response(INIT_RESULT, msg_id))
        elif name != flood:
            h.send(path, conn, _json_response({"tools": [FLOOD_TOOL]}, msg_id))
        else:
            ctype = b"text/event-stream" if as_sse else b"application/json"
            h.send(path, conn, b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype
                   + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            start = (b"event: message\ndata: " if as_sse else b"") + (
                b'{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"'
                % json.dumps(msg_id).encode())
            h.send(path, conn, b"%x\r\n%s\r\n" % (len(start), start))
            while h.send(path, conn, b"%x\r\n%s\r\n" % (MB, b"q" * MB)):
                pass
            _hold(conn)

    h.routes[path] = route


async def _new_server(client: httpx.AsyncClient, headers: dict[str, str], url: str,
                      name: str) -> str:
    created = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": name, "transport": "streamable_http", "url": url})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _assert_cut_off(answer: httpx.Response, as_sse: bool, read: int) -> None:
    """A 502 (not the deadline's 504: reading stopped at the cap), having read far less
    than the server would send."""
    assert answer.status_code == 502, answer.text[:300]
    detail = answer.json()["detail"]
    if as_sse:  # the SDK's own limit for one event
        assert "exceeded" in detail and "limit" in detail, detail
    else:
        assert f"larger than {MAX_MESSAGE_BYTES} bytes" in detail, detail
    assert read < READ_AT_MOST, f"Roost read {read // MB} MiB of one answer"


@pytest.mark.parametrize("as_sse", [False, True], ids=["json", "sse"])
async def test_an_endless_mcp_answer_is_cut_off_in_discovery_and_in_a_call(
    client: httpx.AsyncClient, database: Database, hostile: Hostile, as_sse: bool,
) -> None:
    _, alice = await make_user(database)
    kind = "sse" if as_sse else "json"
    listing, calling = f"/mcp-list-{kind}", f"/mcp-call-{kind}"
    _mcp_route(hostile, listing, "tools/list", as_sse)
    _mcp_route(hostile, calling, "tools/call", as_sse)

    server = await _new_server(client, alice, hostile.url(listing), f"list-{kind}")
    synced = await client.post(f"/api/v1/mcp-servers/{server}/sync", headers=alice)
    _assert_cut_off(synced, as_sse, hostile.sent.get(listing, 0))

    server = await _new_server(client, alice, hostile.url(calling), f"call-{kind}")
    synced = await client.post(f"/api/v1/mcp-servers/{server}/sync", headers=alice)
    assert synced.status_code == 200, synced.text
    hostile.sent[calling] = 0
    called = await client.post(f"/api/v1/tools/{await tool_id(client, alice, server, 'flood')}"
                               "/call", headers=alice, json={"arguments": {}})
    _assert_cut_off(called, as_sse, hostile.sent[calling])
    run = (await client.get(f"/api/v1/tool-runs/{called.json()['tool_run_id']}",
                            headers=alice)).json()
    assert run["status"] == "error", run


async def test_an_mcp_server_on_loopback_is_allowed_only_by_its_allow_listed_name(
    client: httpx.AsyncClient, database: Database, hostile: Hostile,
) -> None:
    _mcp_route(hostile, "/mcp-notation", "tools/call", False)
    _, alice = await make_user(database)
    before = len(hostile.requests)
    wrong = []
    for host in ("127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]",
                 "[::ffff:7f00:1]", "localhost", "0", "127.0.0.1."):
        answer = await client.post("/api/v1/mcp-servers", headers=alice, json={
            "name": "notation", "transport": "streamable_http",
            "url": f"http://{host}:{hostile.port}/mcp-notation"})
        if not _refused_as(answer, 0 if host.endswith(".") else 403, "fetch-refused"):
            wrong.append((host, answer.status_code, answer.text[:300]))
    assert not wrong, wrong
    assert len(hostile.requests) == before


def _mcp_encoded_route(h: Hostile, path: str, coding: str,
                       listing: Callable[[object], bytes]) -> None:
    """An MCP endpoint answering initialize properly, and tools/list with
    ``listing(message id)`` as a body encoded with ``coding``."""

    def route(conn: socket.socket, method: str, body: bytes) -> None:
        if method != "POST":
            h.send(path, conn, b"HTTP/1.1 405 Method Not Allowed\r\n" + CLOSE
                   + b"Content-Length: 0\r\n\r\n")
            return
        msg = json.loads(body or b"{}")
        if msg.get("id") is None:  # a notification
            h.send(path, conn, b"HTTP/1.1 202 Accepted\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n")
        elif msg.get("method") == "initialize":
            h.send(path, conn, _json_response(INIT_RESULT, msg["id"]))
        else:
            payload = listing(msg["id"])
            h.send(path, conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + CLOSE
                   + b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
                   % (coding.encode(), len(payload)) + payload)

    h.routes[path] = route


@pytest.mark.parametrize("coding", ["gzip", "gzip, gzip"])
async def test_an_mcp_answer_decoding_past_the_cap_is_cut_off_holding_about_it(
    client: httpx.AsyncClient, database: Database, hostile: Hostile, coding: str,
) -> None:
    """The 16 MiB cap counts decoded bytes: a small compressed answer decoding to 128 MiB
    is a 502 having held about the cap (the SDK reads a JSON answer whole)."""
    path = "/mcp-bomb-" + coding.replace(", ", "-")
    bomb = _bomb(coding)
    _mcp_encoded_route(hostile, path, coding, lambda msg_id: bomb)
    _, alice = await make_user(database)
    server = await _new_server(client, alice, hostile.url(path), path[1:])
    synced, peak = await _peak_of(lambda: client.post(f"/api/v1/mcp-servers/{server}/sync",
                                                      headers=alice))
    assert synced.status_code == 502, synced.text[:300]
    assert f"larger than {MAX_MESSAGE_BYTES} bytes" in synced.json()["detail"]
    assert peak < PEAK_AT_MOST, f"an MCP sync held {peak // MB} MiB"


async def test_mcp_answers_are_decoded_only_in_the_codings_roost_asks_for(
    client: httpx.AsyncClient, database: Database, hostile: Hostile,
) -> None:
    """A gzip answer is read (decoded once, by Roost's transport); a zstd one, which
    Roost does not ask for, is a 502 saying so."""
    _mcp_encoded_route(hostile, "/mcp-gzip", "gzip", lambda msg_id: gzip.compress(json.dumps(
        {"jsonrpc": "2.0", "id": msg_id, "result": {"tools": [FLOOD_TOOL]}}).encode()))
    _mcp_encoded_route(hostile, "/mcp-zstd", "zstd", lambda msg_id: ZSTD_HELLO)
    _, alice = await make_user(database)

    server = await _new_server(client, alice, hostile.url("/mcp-gzip"), "gzip")
    synced = await client.post(f"/api/v1/mcp-servers/{server}/sync", headers=alice)
    assert synced.status_code == 200, synced.text
    assert await tool_id(client, alice, server, "flood")

    server = await _new_server(client, alice, hostile.url("/mcp-zstd"), "zstd")
    synced = await client.post(f"/api/v1/mcp-servers/{server}/sync", headers=alice)
    assert synced.status_code == 502, synced.text
    assert "'zstd', which Roost did not ask for" in synced.json()["detail"]
