"""How Roost reads a request before any route: the size of its head, its content coding,
the media type of a JSON body, bodies the JSON decoder refuses, and HEAD."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.support.server import roost_server, serve_env

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.serving import MAX_REQUEST_HEAD_BYTES

PROBLEM = "application/problem+json"


def problem_of(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, (reply.status_code, reply.text[:500])
    assert reply.headers["content-type"].startswith(PROBLEM), reply.headers
    body: dict[str, Any] = reply.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    return body


@pytest.mark.parametrize("body", [
    pytest.param('{"name": "caf\u00e9"}'.encode("latin-1"), id="not-utf8"),
    pytest.param(b'{"name": "n", "description": ' + b"9" * 5000 + b"}", id="int-over-4300-digits"),
])
async def test_a_body_the_json_decoder_refuses_is_a_malformed_json_400_saying_why(
    client: httpx.AsyncClient, database: Database, body: bytes
) -> None:
    """Any undecodable JSON body is the documented malformed-json 400 with a reason, not
    FastAPI's generic 'There was an error parsing the body' (type bad-request)."""
    _, headers = await make_user(database)
    reply = await client.post("/api/v1/groups", content=body,
                              headers={**headers, "content-type": "application/json"})
    problem = problem_of(reply, 400)
    assert problem["type"].endswith("/malformed-json"), problem
    assert problem["detail"] != "There was an error parsing the body", problem
    assert "UTF-8" in problem["detail"] or "4300 digits" in problem["detail"], problem
    openai = await client.post("/v1/chat/completions", content=body,
                               headers={**headers, "content-type": "application/json"})
    assert openai.status_code == 400, openai.text
    assert openai.json()["error"]["code"] == "invalid_json", openai.text


async def test_a_json_body_in_utf16_or_utf32_is_malformed_json_not_decoded(
    client: httpx.AsyncClient, database: Database
) -> None:
    """docs/operations.md: a body that is not UTF-8 is malformed JSON (400).  Python's
    json.loads guesses UTF-16 and UTF-32 from the bytes: such a body was decoded and the
    group stored (201).  A UTF-8 byte order mark is still dropped."""
    _, headers = await make_user(database)
    json_headers = {**headers, "content-type": "application/json"}
    for encoding in ("utf-16", "utf-16-le", "utf-32", "utf-32-be"):
        reply = await client.post("/api/v1/groups", headers=json_headers,
                                  content=f'{{"name": "g-{encoding}"}}'.encode(encoding))
        assert problem_of(reply, 400)["type"].endswith("/malformed-json"), reply.text
    listed = await client.get("/api/v1/groups", headers=headers)
    assert not any(g["name"].startswith("g-utf") for g in listed.json()["items"]), listed.text
    with_bom = await client.post("/api/v1/groups", headers=json_headers,
                                 content='{"name": "g-bom"}'.encode("utf-8-sig"))
    assert with_bom.status_code == 201, with_bom.text


async def test_a_content_encoding_roost_does_not_decode_is_refused_with_415(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A body declared gzip-encoded is not decoded by Roost, so it is refused (RFC 9110
    15.5.16: 415 naming Content-Encoding), never parsed as if the header were absent."""
    _, headers = await make_user(database)
    compressed = await client.post(
        "/api/v1/groups", content=gzip.compress(b'{"name": "gz"}'),
        headers={**headers, "content-type": "application/json", "content-encoding": "gzip"})
    assert "content-encoding" in problem_of(compressed, 415)["detail"].lower(), compressed.text
    assert compressed.headers["accept-encoding"] == "identity"
    # The same header over a plain body: refused too, not stored as if it were absent.
    plain = await client.post(
        "/api/v1/groups", content=b'{"name": "not-really-gzip"}',
        headers={**headers, "content-type": "application/json", "content-encoding": "gzip"})
    problem_of(plain, 415)
    identity = await client.post(
        "/api/v1/groups", content=b'{"name": "identity"}',
        headers={**headers, "content-type": "application/json", "content-encoding": "identity"})
    assert identity.status_code == 201, identity.text
    listed = await client.get("/api/v1/groups", headers=headers)
    assert [g["name"] for g in listed.json()["items"]] == ["identity"], listed.text


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded",  # what `curl -d '{...}'` sends
    "text/plain", None])
async def test_a_json_body_sent_with_the_wrong_content_type_is_a_415_naming_json(
    client: httpx.AsyncClient, database: Database, content_type: str | None
) -> None:
    """Valid JSON under a non-JSON (or missing) Content-Type is answered 415 saying to send
    'application/json', not a 422 'Input should be a valid dictionary' at loc ['body']."""
    _, headers = await make_user(database)
    if content_type is not None:
        headers = {**headers, "content-type": content_type}
    reply = await client.post("/api/v1/groups", headers=headers, content=b'{"name": "g"}')
    assert "application/json" in problem_of(reply, 415)["detail"], reply.text


async def test_json_media_types_with_parameters_or_a_json_suffix_are_json(
    client: httpx.AsyncClient, database: Database
) -> None:
    _, headers = await make_user(database)
    for n, content_type in enumerate(["application/json; charset=utf-8",
                                      "Application/JSON", "application/merge-patch+json"]):
        reply = await client.post("/api/v1/groups", content=f'{{"name": "g{n}"}}'.encode(),
                                  headers={**headers, "content-type": content_type})
        assert reply.status_code == 201, (content_type, reply.text)


@pytest.mark.parametrize("path", ["/health", "/api/v1/auth/me", "/api/v1/groups"])
async def test_head_is_served_wherever_get_is(
    client: httpx.AsyncClient, database: Database, path: str
) -> None:
    """RFC 9110 9.1: a server supports HEAD wherever it supports GET (uptime checkers probe
    /health with HEAD); HEAD is not a 405 whose Allow omits it."""
    _, headers = await make_user(database)
    get = await client.get(path, headers=headers)
    head = await client.head(path, headers=headers)
    assert head.status_code == get.status_code == 200, (head.status_code, head.headers)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_head_is_not_served_on_a_stream_nor_listed_in_the_openapi_document(
    client: httpx.AsyncClient, database: Database
) -> None:
    """HEAD of a server-sent events stream would take a stream slot for a stream whose
    every byte is dropped: 405.  HEAD is no operation of the document."""
    _, headers = await make_user(database)
    reply = await client.head(f"/api/v1/runs/{uuid.uuid4()}/events", headers=headers)
    assert reply.status_code == 405 and reply.headers["allow"] == "GET", reply.headers
    doc = (await client.get("/openapi.json")).json()
    assert not [path for path, item in doc["paths"].items() if "head" in item]


async def test_request_heads_have_a_size_limit(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial
) -> None:
    """`roost serve` refuses (431) a request whose headers run to megabytes, before any
    authentication: without a limit an anonymous client made the server buffer as many
    header bytes as it sent (200 MB of one header took 200 MB of RSS).  Heads under the
    limit, each request's own on a kept-alive connection, and large bodies are served."""
    with roost_server(serve_env(pg_server, db_name, tmp_path / "data", test_keys)) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000
                         + b"\r\nConnection: close\r\n\r\n")
            try:
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(200), 30)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""  # closed while we sent: refused, also fine
        finally:
            writer.close()
        assert not answer.startswith(b"HTTP/1.1 200"), answer
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer
        # Three requests on one connection, each with a head of most of the limit.
        near = {"x-filler": "a" * (MAX_REQUEST_HEAD_BYTES - 1024)}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            for _ in range(3):
                reply = await http.get("/health", headers=near)
                assert reply.status_code == 200, reply.text
            # A body read together with its head is not counted as head: the app answers.
            large = await http.post("/api/v1/groups", content=b" " * 2_000_000,
                                    headers={"content-type": "application/json"})
            assert large.status_code == 400, large.text
            assert problem_of(large, 400)["type"].endswith("/malformed-json"), large.text
        assert "Traceback" not in server.output, server.output[-4000:]


async def test_a_chunked_body_s_trailers_count_against_a_limit(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial,
    database: Database,
) -> None:
    """Header fields after a chunked body's last chunk (trailers) were counted by no limit:
    httptools buffers a field for as long as it comes, and one signed-in request with a
    150 MB trailer grew the server by 190 MB, unanswered.  A body's bytes on the wire,
    framing and trailers included, are at most twice ROOST_MAX_REQUEST_BYTES and a head:
    past that, 413 and the connection closed.  A small trailer is still fine."""
    env = serve_env(pg_server, db_name, tmp_path / "data", test_keys,
                    ROOST_MAX_REQUEST_BYTES="100000")
    _, headers = await make_user(database)
    head = (b"POST /api/v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + headers["Authorization"].encode() + b"\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with roost_server(env) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(head + b"2\r\n{}\r\n0\r\nX-Trailer: ")
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                for _ in range(20):  # 2 MB of one trailer field, never ended
                    writer.write(b"a" * 100_000)
                    await writer.drain()
            answer = await asyncio.wait_for(reader.read(200), 30)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""  # closed while we sent: refused, also fine
        finally:
            writer.transport.abort()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer
        body = b'{"name": "trailed"}'
        closing = head.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
        small = await _exchange(server.base_url, closing + b"%x\r\n" % len(body) + body
                                + b"\r\n0\r\nX-Checksum: 1\r\n\r\n")
        assert small.startswith(b"HTTP/1.1 201"), small[:300]
        assert "Traceback" not in server.output, server.output[-4000:]


async def _post_head_and_first_byte(
    host: str, port: int, headers: dict[str, str], length: int = 100
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST that declares ``length`` bytes of JSON body and sends only the first one."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /api/v1/groups HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: " + headers["Authorization"].encode() + b"\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(length).encode() + b"\r\n\r\n{")
    await writer.drain()
    return reader, writer


async def test_a_request_body_that_stalls_is_answered_408_and_closed(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    test_keys: KeyMaterial
) -> None:
    """A client that sends a head and a byte of its body, then nothing, no longer holds a
    connection and a request task of `roost serve` for as long as it likes (slowloris):
    after ROOST_SERVE_BODY_TIMEOUT_S without a byte it gets a 408 and the connection is
    closed.  The limit is between two reads: a body that keeps coming, slowly, is served."""
    _, headers = await make_user(database)
    env = serve_env(pg_server, db_name, tmp_path / "data", test_keys,
                    ROOST_SERVE_BODY_TIMEOUT_S="2")
    with roost_server(env) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await _post_head_and_first_byte(host, int(port), headers)
        try:
            answer = await asyncio.wait_for(reader.read(1000), 60)  # the old code: forever
            assert await asyncio.wait_for(reader.read(1000), 10) == b""  # then closed
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        body = b'{"name": "slow but steady"}'
        reader, writer = await _post_head_and_first_byte(host, int(port), headers, len(body))
        try:
            for at in range(1, len(body), 9):  # 3 s in all, 1 s between the pieces
                await asyncio.sleep(1)
                writer.write(body[at:at + 9])
                await writer.drain()
            answer = await asyncio.wait_for(reader.read(1000), 30)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 201"), answer
    assert "Traceback" not in server.output, server.output[-3000:]


async def test_stopping_the_server_while_a_body_has_stalled_answers_503_without_a_traceback(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    test_keys: KeyMaterial
) -> None:
    """SIGTERM while a client's body has stalled (well within the body timeout): the
    request, not acted on yet, is answered 503 and closed at once, rather than held for the
    whole grace period and then cancelled with an 'Exception in ASGI application'
    traceback in the log."""
    _, headers = await make_user(database)
    env = serve_env(pg_server, db_name, tmp_path / "data", test_keys,
                    ROOST_SERVE_SHUTDOWN_GRACE_S="2")
    with roost_server(env) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await _post_head_and_first_byte(host, int(port), headers)
        await asyncio.sleep(1)
    try:
        answer = await asyncio.wait_for(reader.read(1000), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert "Traceback" not in server.output, server.output[-3000:]


async def _answer_before_close(reader: asyncio.StreamReader, wait_s: float) -> bytes | None:
    """What the server sends before it closes the connection, or None when the connection
    is still open after ``wait_s``."""
    answer = b""
    try:
        async with asyncio.timeout(wait_s):
            while chunk := await reader.read(1000):
                answer += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return answer


async def _held_head(host: str, port: int, first_bytes: bytes, *, kept_alive: bool = False,
                     trickle: bool = False) -> bytes | None:
    """Open a connection (after one whole request on it when ``kept_alive``), send
    ``first_bytes`` of a head and then nothing (or, with ``trickle``, a byte of it every
    half second): what the server answers before closing, None if still open at 30 s."""
    reader, writer = await asyncio.open_connection(host, port)

    async def trickle_bytes() -> None:
        with contextlib.suppress(OSError):
            while True:
                await asyncio.sleep(0.5)
                writer.write(b"x")
                await writer.drain()

    trickling: asyncio.Task[None] | None = None
    try:
        if kept_alive:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await asyncio.wait_for(reader.readexactly(length), 30)
        if first_bytes:
            writer.write(first_bytes)
            await writer.drain()
        if trickle:
            trickling = asyncio.create_task(trickle_bytes())
        return await _answer_before_close(reader, 30)
    finally:
        if trickling is not None:
            trickling.cancel()
        writer.close()


async def test_a_request_head_that_does_not_arrive_in_time_is_answered_408_and_closed(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial
) -> None:
    """A client that opens a connection and sends half a request head (or nothing, or
    the head a byte at a time, or half the next head on a kept-alive connection) no
    longer holds the connection for as long as it likes (slowloris on the head): after
    ROOST_SERVE_HEAD_TIMEOUT_S for the whole head the answer is a 408 and the connection
    is closed (a connection that sent no byte is just closed)."""
    env = serve_env(pg_server, db_name, tmp_path / "data", test_keys,
                    ROOST_SERVE_HEAD_TIMEOUT_S="2")
    half = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
    with roost_server(env) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        nothing, half_head, trickled, next_head = await asyncio.gather(
            _held_head(host, int(port), b""),
            _held_head(host, int(port), half),
            _held_head(host, int(port), half, trickle=True),
            _held_head(host, int(port), half, kept_alive=True))
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            assert (await client.get("/health")).status_code == 200  # a timely head is served
    assert nothing == b"", nothing  # the old code: all of them still open (None)
    for answer in (half_head, trickled, next_head):
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    assert "Traceback" not in server.output, server.output[-3000:]


async def test_connections_over_the_cap_are_answered_503_and_served_again_once_closed(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial
) -> None:
    """Clients holding connections open (each within the head's time) no longer take the
    process to its open-files limit, where it could answer nothing: past
    ROOST_SERVE_MAX_CONNECTIONS a request is a 503 at once, and served again when they go."""
    env = serve_env(pg_server, db_name, tmp_path / "data", test_keys,
                    ROOST_SERVE_MAX_CONNECTIONS="3")
    with roost_server(env) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        try:
            for _, writer in held:
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # a head not finished
                await writer.drain()
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                assert (await client.get("/health")).status_code == 503
        finally:
            for _, writer in held:
                writer.close()
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            assert (await client.get("/health")).status_code == 200
    assert "Traceback" not in server.output, server.output[-3000:]


async def test_a_content_encoding_in_a_second_header_line_is_refused_too(
    client: httpx.AsyncClient, database: Database
) -> None:
    """``Content-Encoding: identity`` then ``Content-Encoding: gzip`` (a proxy appending its
    own line) declares "identity, gzip" (RFC 9110 5.3: repeated lines are one list), a 415
    as on one line; only the first line was looked at, and the group stored (201)."""
    _, headers = await make_user(database)
    one_line = await client.post("/api/v1/groups", content=b'{"name": "enc-one-line"}', headers={
        **headers, "content-type": "application/json", "content-encoding": "identity, gzip"})
    assert one_line.status_code == 415, one_line.text
    two_lines = await client.post("/api/v1/groups", content=b'{"name": "enc-two-lines"}', headers=[
        *headers.items(), ("content-type", "application/json"),
        ("content-encoding", "identity"), ("content-encoding", "gzip")])
    assert two_lines.status_code == 415, two_lines.text
    assert two_lines.headers["content-type"].startswith(PROBLEM), two_lines.headers
    listed = await client.get("/api/v1/groups", headers=headers)
    assert all(g["name"] != "enc-two-lines" for g in listed.json()["items"]), listed.text


async def _exchange(base_url: str, request: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)  # Connection: close: read to EOF
    finally:
        writer.close()


async def test_a_transfer_coding_roost_does_not_decode_is_refused(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial,
    database: Database
) -> None:
    """A body declared ``Transfer-Encoding: gzip, chunked`` is gzip data in chunks; the
    server only undoes the chunking, and the undecoded body was parsed and stored (201).
    It is a 501 (RFC 9112 6.1: a transfer coding the server does not understand)."""
    _, headers = await make_user(database)
    body = b'{"name": "te-gzip"}'
    request = (b"POST /api/v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: "
               + headers["Authorization"].encode()
               + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n"
               b"Connection: close\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    with roost_server(serve_env(pg_server, db_name, tmp_path / "data", test_keys)) as server:
        answer = await _exchange(server.base_url, request)
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 501 Not Implemented", answer[:400]
        assert b"application/problem+json" in answer.split(b"\r\n\r\n", 1)[0], answer[:400]
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            listed = await http.get("/api/v1/groups", headers=headers)
        assert all(g["name"] != "te-gzip" for g in listed.json()["items"]), listed.text


async def test_a_cookie_holding_backslashes_is_left_out_and_the_others_kept(
    app: FastAPI,
) -> None:
    """A cookie value may hold no backslash (RFC 6265), and the standard library's unquoting
    (which Starlette parses cookies with) takes quadratic time in them on Python < 3.11.10
    (CVE-2024-7592): a 64 KiB Cookie header of backslashes held the event loop for seconds
    on every request, signed in or not.  Such a cookie is left out before any route reads
    the header; the request's other cookies are kept."""

    @app.get("/_test/cookies")
    async def cookies(request: Request) -> dict[str, str]:
        return dict(request.cookies)

    hostile = 'a="' + "\\\\" * 20_000 + '"'
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as http:
        seen = await http.get("/_test/cookies", headers={"cookie": f"b=1; {hostile}; c=2"})
    assert seen.status_code == 200, seen.text
    assert seen.json() == {"b": "1", "c": "2"}
