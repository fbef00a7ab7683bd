"""A tool's input schema is written by whoever defined the tool (a user's MCP server, a
persona's tool): validating arguments against it must never fetch a URL it names, fail
with a 500 on a ``$ref`` that resolves nowhere or a number too large for a float, nor
hold the event loop comparing every pair of an array's items (roost.tools.schemacheck),
nor with a 500 on a schema nested too deep to check (the metaschema check recurses)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.errors import RoostError, Unprocessable
from roost.tools.calls import ToolUnavailable, check_schema_ends, validate_arguments
from tests.agents.api import create_persona
from tests.support.identity import make_user
from tests.tools.test_hostile_servers import CLOSE, Hostile, _json_response
from tests.tools.test_tools_api import tool_id


@pytest.mark.parametrize("ref", ["#/$defs/missing", "urn:roost:nothing",
                                 "http://localhost:9/schema"])
def test_a_ref_that_resolves_nowhere_is_a_broken_schema_not_a_500(ref: str) -> None:
    """A call: 409 as for an invalid schema (the tool's to fix); a schema a user saves:
    422 naming input_schema."""
    schema = {"type": "object", "properties": {"a": {"$ref": ref}}}
    with pytest.raises(ToolUnavailable, match="resolves nowhere"):
        validate_arguments(schema, {"a": 1})
    with pytest.raises(Unprocessable, match="input_schema has a \\$ref"):
        check_schema_ends(schema)


def test_refs_within_the_schema_still_decide() -> None:
    schema = {"type": "object", "$defs": {"n": {"type": "integer"}},
              "properties": {"a": {"$ref": "#/$defs/n"}}}
    validate_arguments(schema, {"a": 1})
    with pytest.raises(Unprocessable, match="at /a"):
        validate_arguments(schema, {"a": "x"})


def test_a_huge_integer_against_a_fractional_multiple_of_is_a_422_naming_it() -> None:
    """A 400-digit integer against ``multipleOf: 0.1``: an OverflowError in jsonschema, once
    a 500."""
    schema = {"type": "object", "properties": {"n": {"multipleOf": 0.1}}}
    with pytest.raises(Unprocessable, match="at /n: fails 'multipleOf'"):
        validate_arguments(schema, {"n": 10 ** 400})
    validate_arguments(schema, {"n": 0.5})


def test_unique_items_are_checked_without_comparing_every_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``uniqueItems`` on an array mixing a string and integers (unsortable): jsonschema
    compares every pair, on the API's event loop (8,000 items held it about a minute);
    far fewer comparisons than the 2,000,000 pairs of 2,000 items."""
    from jsonschema import _utils

    compared = 0
    real_equal = _utils.equal

    def counting(one: Any, two: Any) -> bool:
        nonlocal compared
        compared += 1
        return bool(real_equal(one, two))

    monkeypatch.setattr(_utils, "equal", counting)
    schema = {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}
    try:
        validate_arguments(schema, {"a": ["s", *range(2000)]})
    except RoostError:  # a refusal (422) is as good as a quick answer
        pass
    assert compared < 200_000, f"{compared} comparisons for 2,001 items"


@pytest.mark.parametrize(("items", "unique"), [
    ([1, 1.0], False), ([1, True], True), ([0, False, None, "0"], True),
    ([{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}], False), ([[1, 2], [2, 1]], True),
])
def test_unique_items_counts_as_equal_what_json_schema_does(items: list[Any],
                                                             unique: bool) -> None:
    schema = {"type": "object", "properties": {"a": {"uniqueItems": True}}}
    if unique:
        validate_arguments(schema, {"a": items})
    else:
        with pytest.raises(Unprocessable, match="uniqueItems"):
            validate_arguments(schema, {"a": items})


@pytest.fixture
def hostile_http() -> Iterator[Hostile]:
    server = Hostile()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_tool_schema_cannot_make_roost_fetch_a_url(
    client: httpx.AsyncClient, database: Database, hostile_http: Hostile,
) -> None:
    """A user's own MCP server (on the allow-listed 127.0.0.1) declares a tool whose input
    schema has ``$ref: http://localhost:PORT/secret``: validating the arguments fetched
    that URL (jsonschema's default registry, urllib, past the SSRF guard: ``localhost`` is
    not allow-listed, and it could be the cloud metadata address).  Now the $ref resolves
    nowhere: a 409, nothing fetched, the tool not called."""
    secret_url = f"http://localhost:{hostile_http.port}/secret"
    listed = {"tools": [{"name": "grab", "description": "d", "inputSchema": {
        "type": "object", "properties": {"a": {"$ref": secret_url}}}}]}
    called_tools: list[str] = []

    def mcp(conn: socket.socket, method: str, body: bytes) -> None:
        msg = json.loads(body or b"{}")
        if msg.get("id") is None:
            conn.sendall(b"HTTP/1.1 202 Accepted\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n")
        elif msg.get("method") == "initialize":
            conn.sendall(_json_response({
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1"}}, msg["id"]))
        elif msg.get("method") == "tools/list":
            conn.sendall(_json_response(listed, msg["id"]))
        else:
            called_tools.append(str(msg.get("method")))
            conn.sendall(_json_response({"content": [{"type": "text", "text": "x"}]},
                                        msg["id"]))

    def secret(conn: socket.socket, method: str, body: bytes) -> None:
        payload = b'{"type": "integer"}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + CLOSE
                     + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)

    hostile_http.routes.update({"/mcp": mcp, "/secret": secret})
    _, alice = await make_user(database)
    created = await client.post("/api/v1/mcp-servers", headers=alice, json={
        "name": "schemaref", "transport": "streamable_http", "url": hostile_http.url("/mcp")})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    synced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=alice)
    assert synced.status_code == 200, synced.text
    tid = await tool_id(client, alice, sid, "grab")
    called = await client.post(f"/api/v1/tools/{tid}/call", headers=alice,
                               json={"arguments": {"a": 1}})
    fetched = [path for _, path, _ in hostile_http.requests if path.startswith("/secret")]
    assert fetched == [], f"Roost fetched {secret_url} while validating arguments"
    assert called.status_code == 409, called.text[:300]
    assert "resolves nowhere" in called.json()["detail"]
    assert "tools/call" not in called_tools


def deep_schema(depth: int) -> dict[str, Any]:
    """``{"not": {"not": ...}}``, ``depth`` levels: valid JSON Schema, 7 bytes a level."""
    schema: dict[str, Any] = {}
    for _ in range(depth):
        schema = {"not": schema}
    return schema


@pytest.mark.parametrize("depth", [200, 2000])
def test_a_schema_nested_too_deep_to_check_is_an_invalid_schema_not_a_500(depth: int) -> None:
    """The metaschema check recurses per level (a RecursionError past ~150 levels, 1.4 KB);
    2,000 levels overflow even the cache key's json.dumps.  A call: the 409 of an invalid
    schema, every time; a schema a user saves is left to its own check."""
    for _ in range(2):  # the second answered from the validator cache
        with pytest.raises(ToolUnavailable, match="not a valid JSON Schema"):
            validate_arguments(deep_schema(depth), {})
    check_schema_ends(deep_schema(depth))


@pytest.mark.asyncio(loop_scope="session")
async def test_calling_a_tool_whose_schema_nests_too_deep_is_a_409_not_a_500(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A tool stored with a 200-level schema (a sync now skips such a tool; one stored
    before, or written otherwise): the call is refused as for an invalid schema."""
    owner, headers = await make_user(database)
    server_id, tool = uuid.uuid4(), uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO mcp_servers (id, user_id, name, transport, url) VALUES "
            "(:id, :uid, 'deep', 'streamable_http', 'https://mcp.example.com/mcp')"
        ), {"id": server_id, "uid": owner})
        await session.execute(text(
            "INSERT INTO tools (id, user_id, mcp_server_id, kind, name, input_schema) "
            "VALUES (:id, :uid, :sid, 'mcp', 'deep_tool', CAST(:schema AS jsonb))"
        ), {"id": tool, "uid": owner, "sid": server_id, "schema": json.dumps(deep_schema(200))})
    for _ in range(2):
        called = await client.post(f"/api/v1/tools/{tool}/call", headers=headers,
                                   json={"arguments": {}})
        assert called.status_code == 409, called.text[:300]
        assert "not a valid JSON Schema" in called.json()["detail"]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_grant_schema_is_checked_under_its_own_draft_when_saved(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A grant's ``input_schema`` is checked as its calls build it, under its ``$schema``:
    ``exclusiveMinimum: 5`` is invalid under draft-04 (a boolean there) and was saved (a
    2020-12 check), then every call was a 409 blaming the tool."""
    _, headers = await make_user(database)
    listed = await client.get("/api/v1/tools", params={"name": "current_time"}, headers=headers)
    tool = listed.json()["items"][0]["id"]
    persona = await create_persona(client, headers)
    url = f"/api/v1/personas/{persona['id']}/tools/{tool}"
    draft4 = "http://json-schema.org/draft-04/schema#"
    refused = await client.put(url, headers=headers, json={"input_schema": {
        "$schema": draft4, "exclusiveMinimum": 5}})
    assert refused.status_code == 422, refused.text[:300]
    assert "not a valid JSON Schema" in refused.json()["detail"]
    saved = await client.put(url, headers=headers, json={"input_schema": {
        "$schema": draft4, "minimum": 5, "exclusiveMinimum": True}})
    assert saved.status_code == 200, saved.text[:300]
    deep = await client.put(url, headers=headers, json={"input_schema": deep_schema(97)})
    assert deep.status_code in (200, 422), deep.text[:300]  # within the request depth cap
