"""A tool's input schema may carry regular expressions (``pattern``,
``patternProperties``) written by whoever defined the tool, matched against arguments
written by whoever calls it.  Python's ``re`` has no time limit: ``^(\\w+\\s?)*$`` against
30 characters ran over a minute on the API's event loop.  The patterns are matched with
one time budget per validation; past it the call is a 422 naming the pattern.  They are
matched in the ``regex`` module as ``re`` (which checks them) and JSON Schema read them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from jsonschema import SchemaError
from sqlalchemy import text

from roost.db.engine import Database
from roost.errors import Unprocessable
from roost.tools import schemacheck, schemaregex
from roost.tools.calls import ToolUnavailable, check_schema_ends, validate_arguments
from tests.agents.api import create_persona
from tests.support.identity import make_user

SLOW = "^(a|a)*$"  # backtracks exponentially in re and in regex alike


@pytest.mark.parametrize(("schema", "arguments"), [
    ({"type": "object", "properties": {"x": {"type": "string", "pattern": SLOW}}},
     {"x": "a" * 40 + "!"}),
    ({"type": "object", "patternProperties": {SLOW: {"type": "string"}}},
     {"a" * 40 + "!": "v"}),
    ({"type": "object", "patternProperties": {SLOW: {"type": "string"}},
      "additionalProperties": False}, {"a" * 40 + "!": "v"}),
    ({"type": "object", "propertyNames": {"pattern": SLOW}}, {"a" * 40 + "!": "v"}),
])
def test_a_pattern_that_backtracks_without_end_is_a_422_naming_it(
        schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="took longer than") as refused:
        validate_arguments(schema, arguments)
    assert refused.value.extra["pattern"] == SLOW


def test_ordinary_patterns_still_decide() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
              "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False}
    validate_arguments(schema, {"code": "EUR", "x-count": 3})
    with pytest.raises(Unprocessable, match="pattern"):
        validate_arguments(schema, {"code": "euro"})
    with pytest.raises(Unprocessable, match="x-count"):
        validate_arguments(schema, {"code": "EUR", "x-count": "three"})
    with pytest.raises(Unprocessable):
        validate_arguments(schema, {"code": "EUR", "other": 1})


@pytest.mark.parametrize("schema", [
    {"allOf": [{"$ref": "#"}]},
    {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
])
def test_a_schema_that_refers_to_itself_without_end_is_a_422(schema: dict[str, Any]) -> None:
    # An MCP server's schema (or a grant's) is valid JSON Schema, but checking any value
    # against it recursed until Python gave up: a RecursionError, a 500.
    with pytest.raises(Unprocessable, match="without end"):
        validate_arguments(schema, {"x": 1})
    with pytest.raises(Unprocessable, match="without end"):
        check_schema_ends(schema)


def test_recursive_schemas_that_follow_the_value_are_fine() -> None:
    tree = {"$defs": {"node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
        "$ref": "#/$defs/node"}
    check_schema_ends(tree)
    validate_arguments(tree, {"children": [{"children": [{"children": []}]}]})
    with pytest.raises(Unprocessable, match="children"):
        validate_arguments(tree, {"children": [{"children": 3}]})


@pytest.mark.parametrize(("pattern", "matching", "not_matching"), [
    ("^[[:alpha:]]$", "a]", "b"),  # the set "[:alph" then "]", as ECMA-262 and re read it
    ("^a{e<=1}$", "a{e<=1}", "b"),  # literal braces, not regex's fuzzy match
])
def test_a_pattern_means_what_re_and_json_schema_read_not_what_regex_would(
        pattern: str, matching: str, not_matching: str) -> None:
    """The schema's patterns are checked with ``re`` and were matched with ``regex``, which
    read ``[[:alpha:]]`` as a POSIX class and ``a{e<=1}`` as a fuzzy match: a valid
    ``"a]"`` was refused and ``"b"`` accepted."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}},
              "patternProperties": {pattern: {"type": "integer"}}}
    validate_arguments(schema, {"a": matching})
    validate_arguments(schema, {matching: 1})
    with pytest.raises(Unprocessable, match="pattern"):
        validate_arguments(schema, {"a": not_matching})
    with pytest.raises(Unprocessable):
        validate_arguments(schema, {matching: "one"})


def test_a_pattern_regex_cannot_read_as_re_does_makes_the_schema_unusable() -> None:
    """``(?x:...)`` (verbose mode for part of a pattern: re and regex read its comments
    differently) is refused when the schema is built: the 409 of an unusable schema."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?x:a b)"}}}
    with pytest.raises(SchemaError, match="regex"):
        schemacheck.build(schema)
    with pytest.raises(ToolUnavailable, match="not a valid JSON Schema"):
        validate_arguments(schema, {"a": "ab"})


def test_a_pattern_the_regex_module_refuses_at_match_time_is_not_a_500(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A difference between re and regex Roost does not know of yet: regex's error (a 500
    before) makes a call a 409 of an unusable schema and a saved grant's schema a 422."""
    monkeypatch.setattr(schemaregex, "for_regex", lambda pattern: "[[:foo:]]")
    schema = {"type": "object", "properties": {"b": {}},
              "patternProperties": {"^unknown-to-regex$": {}}}
    with pytest.raises(ToolUnavailable, match="cannot be matched"):
        validate_arguments(schema, {"b": 1})
    with pytest.raises(Unprocessable, match="cannot be matched") as refused:
        check_schema_ends(schema)
    assert refused.value.extra["field"] == "input_schema"


async def _mcp_tool(database: Database, owner: uuid.UUID, schema: dict[str, Any]) -> uuid.UUID:
    server_id, tool = uuid.uuid4(), uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO mcp_servers (id, user_id, name, transport, url) VALUES "
            "(:id, :uid, :name, 'streamable_http', 'https://mcp.example.com/mcp')"
        ), {"id": server_id, "uid": owner, "name": f"posix-{server_id.hex[:8]}"})
        await session.execute(text(
            "INSERT INTO tools (id, user_id, mcp_server_id, kind, name, input_schema) "
            "VALUES (:id, :uid, :sid, 'mcp', 'posix_tool', CAST(:schema AS jsonb))"
        ), {"id": tool, "uid": owner, "sid": server_id, "schema": json.dumps(schema)})
    return tool


def _pattern_schema(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}


@pytest.mark.asyncio(loop_scope="session")
async def test_calling_a_tool_with_a_posix_lookalike_pattern_checks_it_as_a_set(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An MCP tool whose schema has ``pattern: "[[:foo:]]"`` (valid JSON Schema: the set
    ``[:fo`` then ``]``): arguments outside it are a 422; the regex module's error was a
    500.  A pattern that cannot be matched as written is the 409 of an unusable schema."""
    owner, headers = await make_user(database)
    tool = await _mcp_tool(database, owner, _pattern_schema("[[:foo:]]"))
    called = await client.post(f"/api/v1/tools/{tool}/call", headers=headers,
                               json={"arguments": {"a": "x"}})
    assert called.status_code == 422, called.text[:300]
    assert "pattern" in called.json()["detail"]
    unusable = await _mcp_tool(database, owner, _pattern_schema("(?x:a b)"))
    called = await client.post(f"/api/v1/tools/{unusable}/call", headers=headers,
                               json={"arguments": {"a": "x"}})
    assert called.status_code == 409, called.text[:300]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_grant_schema_with_a_posix_lookalike_pattern_property_is_saved(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A grant's ``input_schema`` with ``patternProperties`` keyed ``[[:foo:]]`` and a
    property (which the check on saving matches against it) is saved; it was a 500.  One
    whose pattern cannot be matched as written is a 422 naming it."""
    _, headers = await make_user(database)
    listed = await client.get("/api/v1/tools", params={"name": "current_time"}, headers=headers)
    tool = listed.json()["items"][0]["id"]
    persona = await create_persona(client, headers)
    url = f"/api/v1/personas/{persona['id']}/tools/{tool}"
    saved = await client.put(url, headers=headers, json={"input_schema": {
        "type": "object", "properties": {"tz": {}}, "patternProperties": {"[[:foo:]]": {}}}})
    assert saved.status_code == 200, saved.text[:300]
    refused = await client.put(url, headers=headers, json={"input_schema": {
        "type": "object", "properties": {"tz": {}}, "patternProperties": {"(?x:a b)": {}}}})
    assert refused.status_code == 422, refused.text[:300]
    assert "(?x:a b)" in refused.json()["detail"]
