"""What every cursor-paginated list does with what a client sends it: a cursor it did not
issue (tampered, out of its column's range, a score beyond a float) is a 400 naming the
cursor, a ``limit`` out of bounds a 422 naming it, a NUL in a query parameter or the path
a 422 naming it; rows sharing one timestamp, and rows added or deleted between pages, are
each read exactly once; another tenant's cursor or ids show nothing of theirs; and every
``next_cursor`` the server issues is accepted back."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from tests.support.identity import make_user

from roost.config import Settings
from roost.db.engine import Database
from roost.pagination import MALFORMED_CURSOR, encode_cursor

Headers = dict[str, str]
PROBLEM = "application/problem+json"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    # The hash embedder: a memory is embedded without loading the local model.
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
                    llm_local_model=False, knowledge_embedding_provider="hash")


def raw_cursor(raw: bytes) -> str:
    """``raw`` encoded the way the server encodes its cursors (no padding)."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def json_cursor(value: Any) -> str:
    return raw_cursor(json.dumps(value).encode())


def assert_problem(resp: httpx.Response, status: int, names: str) -> None:
    assert resp.status_code == status, (resp.request.url, resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers["content-type"]
    assert names in resp.text, (resp.request.url, resp.text)


async def _created(client: httpx.AsyncClient, path: str, body: dict[str, Any],
                   headers: Headers) -> str:
    resp = await client.post(path, json=body, headers=headers)
    assert resp.status_code == 201, (path, resp.text)
    return str(resp.json()["id"])


async def _every_list(client: httpx.AsyncClient, app: FastAPI, headers: Headers,
                      admin_headers: Headers) -> list[tuple[str, Headers]]:
    """Every GET of the OpenAPI document that takes a ``cursor``, its path parameters
    filled with rows of the user's, with the headers that may read it (the task queue and
    the audit log are the administrators')."""
    filled = {
        "{session_id}": await _created(client, "/api/v1/chat/sessions", {"title": "t"}, headers),
        "{persona_id}": await _created(client, "/api/v1/personas", {"name": "p"}, headers),
        "{workflow_id}": await _created(client, "/api/v1/workflows", {"name": "w"}, headers),
        "{group_id}": await _created(client, "/api/v1/groups", {"name": "g"}, headers),
        "{memory_id}": await _created(client, "/api/v1/memories", {
            "content": "Ada knows Cy",
            "relationships": [{"source": "Ada", "relation": "knows", "target": "Cy"}]}, headers),
    }
    entities = await client.get("/api/v1/memories/graph/entities", headers=headers)
    filled["{entity_id}"] = str(entities.json()[0]["id"])
    found = []
    for path, ops in app.openapi()["paths"].items():
        params = [p["name"] for p in ops.get("get", {}).get("parameters", []) if p["in"] == "query"]
        if "cursor" not in params:
            continue
        for name, value in filled.items():
            path = path.replace(name, value)
        assert "{" not in path, f"a list with a path parameter this test does not fill: {path}"
        admins_only = path == "/api/v1/tasks" or path.startswith(("/api/v1/audit/", "/api/v1/tasks/"))
        found.append((path, admin_headers if admins_only else headers))
    assert len(found) >= 25, found
    return found


TIME_AND_ID = {"t": "2024-01-01T00:00:00+00:00", "id": str(uuid.uuid4())}
# Cursors no list issued, each refused by every list.
TAMPERED = {
    "not base64": "!!!not-base64!!!",
    "base64 of bytes": raw_cursor(b"\xff\xfe garbage"),
    "base64 of non-JSON": raw_cursor(b"{not json"),
    "JSON list": json_cursor([1, 2]),
    "JSON string": json_cursor("x"),
    "wrong types": json_cursor({"id": 5, "t": 5, "seq": "5", "s": "5", "key": 5, "p": 5}),
    "bad uuid": json_cursor({"id": "nope", "t": "2024-01-01T00:00:00+00:00", "s": 1}),
    "float seq": json_cursor({"seq": 1.5}),
    "bool seq": json_cursor({"seq": True}),
    "seq beyond bigint": json_cursor({"seq": 2**63}),
    "negative seq": json_cursor({"seq": -(10**30)}),
    "empty object": json_cursor({}),
    # text keys (a plan's key, a price's pattern, a group's name) the database cannot hold
    "NUL in text": json_cursor({"key": "a\x00", "p": "a\x00", "n": "a\x00",
                                "id": "01a24fe4-4edc-7000-b908-d118fa3d27c2"}),
    "lone surrogate in text": raw_cursor(
        b'{"key": "\\ud800", "p": "\\ud800", "n": "\\ud800", '
        b'"id": "01a24fe4-4edc-7000-b908-d118fa3d27c2"}'),
}
# Cursors with a valid id, refused by every list but those whose cursor is the id alone.
TAMPERED_BESIDE_AN_ID = {
    "naive time": encode_cursor({**TIME_AND_ID, "t": "2024-01-01T00:00:00"}),
    # year 0 and year 10000 in UTC: no timestamp column holds them
    "time before year 1 in UTC": encode_cursor({**TIME_AND_ID, "t": "0001-01-01T00:00:00+14:00"}),
    "time after year 9999 in UTC": encode_cursor({**TIME_AND_ID, "t": "9999-12-31T23:59:59-14:00"}),
    # the tasks board's cursor is a score and an id
    "score beyond a float": json_cursor({"s": 10**309, "id": TIME_AND_ID["id"]}),
    "score NaN": raw_cursor(b'{"s": NaN, "id": "%s"}' % TIME_AND_ID["id"].encode()),
    "score Infinity": raw_cursor(b'{"s": -Infinity, "id": "%s"}' % TIME_AND_ID["id"].encode()),
}
ID_ONLY = {"/api/v1/tasks", "/api/v1/tasks/dead-letters", "/api/v1/knowledge/ingestion-runs"}


async def test_a_cursor_the_server_did_not_issue_is_a_400_naming_the_cursor_on_every_list(
    client: httpx.AsyncClient, app: FastAPI, database: Database, admin_headers: Headers,
) -> None:
    _, user_headers = await make_user(database)
    for path, headers in await _every_list(client, app, user_headers, admin_headers):
        tampered = TAMPERED if path in ID_ONLY else {**TAMPERED, **TAMPERED_BESIDE_AN_ID}
        for name, cursor in tampered.items():
            resp = await client.get(path, params={"cursor": cursor}, headers=headers)
            assert resp.status_code == 400, (path, name, resp.status_code, resp.text)
            assert_problem(resp, 400, MALFORMED_CURSOR)
        too_long = await client.get(path, params={"cursor": "A" * 5000}, headers=headers)
        assert_problem(too_long, 422, "cursor")


async def test_a_limit_out_of_bounds_is_a_422_naming_limit_on_every_list(
    client: httpx.AsyncClient, app: FastAPI, database: Database, admin_headers: Headers,
) -> None:
    _, user_headers = await make_user(database)
    for path, headers in await _every_list(client, app, user_headers, admin_headers):
        for limit in ("0", "-1", "501", "9" * 30, "x", "1.5", "", "1e2"):
            resp = await client.get(path, params={"limit": limit}, headers=headers)
            assert_problem(resp, 422, '"limit"')
        ok = await client.get(path, params={"limit": "500"}, headers=headers)
        assert ok.status_code == 200, (path, ok.text)
        assert {"items", "next_cursor"} <= set(ok.json())  # an entity's history: and the entity


@pytest.mark.parametrize(("path", "param"), [
    ("/api/v1/chat/sessions", "external_id"), ("/api/v1/tools", "name"),
    ("/api/v1/knowledge/documents", "tag"), ("/api/v1/tool-runs", "trace_id"),
    ("/api/v1/code-versions", "branch"), ("/api/v1/lsp-servers", "language"),
])
async def test_a_nul_in_a_text_filter_is_a_422_naming_the_parameter(
    client: httpx.AsyncClient, database: Database, path: str, param: str,
) -> None:
    _, headers = await make_user(database)
    resp = await client.get(path, params={param: "a\x00b"}, headers=headers)
    assert_problem(resp, 422, f"query parameter '{param}' holds a NUL character")


async def test_a_nul_in_the_path_is_a_422_saying_so(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    resp = await client.get("/api/v1/prompts/a%00b", headers=headers)
    assert_problem(resp, 422, "the path holds a NUL character")


@pytest.mark.parametrize("due", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_time_filter_outside_years_1_to_9999_in_utc_is_a_422_naming_it(
    client: httpx.AsyncClient, database: Database, due: str,
) -> None:
    _, headers = await make_user(database)
    resp = await client.get("/api/v1/tasks-board", params={"due_before": due}, headers=headers)
    assert_problem(resp, 422, "due_before")
    assert "between the years 1 and 9999" in resp.text


async def _page_all(client: httpx.AsyncClient, path: str, headers: Headers, *, limit: int,
                    between: Callable[[int], Awaitable[None]] | None = None) -> list[str]:
    """Every id of ``path``, page after page (``between(page_number)`` runs after each)."""
    seen: list[str] = []
    cursor = None
    for page in range(200):
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        resp = await client.get(path, params=params, headers=headers)
        assert resp.status_code == 200, (path, resp.text)
        body = resp.json()
        assert set(body) == {"items", "next_cursor"}, body.keys()
        assert len(body["items"]) <= limit
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert body["items"], "a next_cursor after an empty page"
        if between is not None:
            await between(page)
    raise AssertionError("paging never ended")


async def _all_at_once(client: httpx.AsyncClient, path: str, headers: Headers) -> list[str]:
    resp = await client.get(path, params={"limit": 500}, headers=headers)
    assert resp.status_code == 200, resp.text
    return [item["id"] for item in resp.json()["items"]]


HISTORY = "/api/v1/chat/sessions/{session}/history"


def _body(path: str, i: int) -> dict[str, Any]:
    """A new row's body for the list at ``path``."""
    if path == HISTORY:
        return {"event_type": "note", "message": {"role": "system", "content": f"e{i}"}}
    return {"/api/v1/chat/sessions": {"title": f"s{i}"}, "/api/v1/personas": {"name": f"p{i}"},
            "/api/v1/projects": {"name": f"p{i}"}, "/api/v1/tasks-board": {"title": f"t{i}"},
            "/api/v1/memories": {"content": f"fact number {i}"}}[path]


async def _list_path(client: httpx.AsyncClient, path: str, headers: Headers) -> str:
    if path != HISTORY:
        return path
    return HISTORY.format(session=await _created(client, "/api/v1/chat/sessions", {"title": "t"},
                                                 headers))


@pytest.mark.parametrize(("path", "table"), [
    ("/api/v1/chat/sessions", "chat_sessions"), ("/api/v1/personas", "personas"),
    ("/api/v1/projects", "projects"), ("/api/v1/tasks-board", "tasks"),  # equal scores too
    ("/api/v1/memories", "memories"), (HISTORY, "chat_history"),
])
async def test_rows_sharing_one_timestamp_are_each_paged_once_in_order(
    client: httpx.AsyncClient, database: Database, path: str, table: str,
) -> None:
    """Twelve rows with one created_at, read five at a time: every row exactly once, in the
    order of one big page."""
    _, headers = await make_user(database)
    url = await _list_path(client, path, headers)
    made = [await _created(client, url, _body(path, i), headers) for i in range(12)]
    async with database.transaction() as session:
        await session.execute(text(
            f"UPDATE {table} SET created_at = '2024-05-05T05:05:05.123456+00' "
            "WHERE id = ANY(:ids)"), {"ids": [uuid.UUID(m) for m in made]})
    paged = [i for i in await _page_all(client, url, headers, limit=5) if i in set(made)]
    assert len(paged) == len(set(paged)) == 12, paged
    assert paged == [i for i in await _all_at_once(client, url, headers) if i in set(made)]


@pytest.mark.parametrize(("path", "delete"), [
    (HISTORY, None), ("/api/v1/personas", "/api/v1/personas/{}"),
    ("/api/v1/tasks-board", "/api/v1/tasks-board/{}"), ("/api/v1/projects", "/api/v1/projects/{}"),
    ("/api/v1/chat/sessions", "/api/v1/chat/sessions/{}"),
])
async def test_paging_while_rows_are_added_and_deleted_reads_each_survivor_once(
    client: httpx.AsyncClient, database: Database, path: str, delete: str | None,
) -> None:
    """Between pages new rows arrive, and the row the cursor names and a row not read yet
    are deleted: no error, no row twice, every row of the start that survives exactly
    once."""
    _, headers = await make_user(database)
    url = await _list_path(client, path, headers)
    for i in range(20):
        await _created(client, url, _body(path, i), headers)
    order = await _all_at_once(client, url, headers)
    deleted: set[str] = set()

    async def between(page: int) -> None:
        for j in range(3):
            await _created(client, url, _body(path, 100 + page * 10 + j), headers)
        if delete is None or page > 1:
            return
        for victim in (order[(page + 1) * 7 - 1], order[-1 - page]):  # the cursor's, an unread one
            resp = await client.delete(delete.format(victim), headers=headers)
            assert resp.status_code in (200, 204), resp.text
            deleted.add(victim)

    seen = await _page_all(client, url, headers, limit=7, between=between)
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in set(order)] == [
        i for i in order if i not in deleted or i in seen]


async def test_another_tenants_cursor_shows_nothing_of_theirs(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, a = await make_user(database)
    _, b = await make_user(database)
    a_ids = [await _created(client, "/api/v1/personas", {"name": f"a{i}"}, a) for i in range(5)]
    b_ids = [await _created(client, "/api/v1/personas", {"name": f"b{i}"}, b) for i in range(3)]
    a_ids += [await _created(client, "/api/v1/personas", {"name": f"a{i}"}, a) for i in range(3)]
    page = (await client.get("/api/v1/personas", params={"limit": 2}, headers=a)).json()
    resp = await client.get("/api/v1/personas", params={"cursor": page["next_cursor"]}, headers=b)
    assert resp.status_code == 200
    got = {p["id"] for p in resp.json()["items"]}
    assert got == set(b_ids) and not got & set(a_ids)
    # A's chat session, with or without a cursor: as unknown to B as a made-up one.
    sid = await _created(client, "/api/v1/chat/sessions", {"title": "t"}, a)
    for session_id in (sid, str(uuid.uuid4())):
        for suffix, params in (("messages", {"cursor": encode_cursor({"seq": 5})}),
                               ("history", {})):
            r = await client.get(f"/api/v1/chat/sessions/{session_id}/{suffix}", params=params,
                                 headers=b)
            assert r.status_code == 404, r.text


async def test_another_tenants_ids_in_filters_behave_like_unknown_ids(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, a = await make_user(database)
    _, b = await make_user(database)
    persona = await _created(client, "/api/v1/personas", {"name": "pa"}, a)
    project = await _created(client, "/api/v1/projects", {"name": "pa"}, a)
    await _created(client, "/api/v1/chat/sessions", {"title": "t", "project_id": project}, a)
    await _created(client, "/api/v1/agents", {"name": "H", "slug": "h-" + uuid.uuid4().hex[:6],
                                              "persona_id": persona, "project_id": project}, a)
    await _created(client, "/api/v1/memories", {"content": "a fact", "persona_id": persona}, a)
    await _created(client, "/api/v1/workflows", {"name": "w", "project_id": project}, a)
    for path, param, value in (
        ("/api/v1/chat/sessions", "project_id", project), ("/api/v1/agents", "persona_id", persona),
        ("/api/v1/agents", "project_id", project), ("/api/v1/workflows", "project_id", project),
        ("/api/v1/memories", "persona_id", persona),
        ("/api/v1/knowledge/documents", "persona_id", persona),
        ("/api/v1/runs", "persona_id", persona), ("/api/v1/tasks-board", "project_id", project),
    ):
        theirs = await client.get(path, params={param: value}, headers=b)
        unknown = await client.get(path, params={param: str(uuid.uuid4())}, headers=b)
        assert theirs.status_code == unknown.status_code, (path, theirs.text, unknown.text)
        if theirs.status_code == 200:
            assert theirs.json()["items"] == [], (path, theirs.text)


async def test_every_next_cursor_of_the_prices_is_accepted_back(
    client: httpx.AsyncClient, admin_headers: Headers,
) -> None:
    """A price's cursor holds its model pattern (up to 255 characters, any text): the
    longest the server issues must be accepted back."""
    for pattern in ("a" + "\u00e9" * 254, "b" + "\\" * 254, "c-model"):
        resp = await client.post("/api/v1/billing/prices", headers=admin_headers, json={
            "model_pattern": pattern, "input_per_million": "1", "output_per_million": "2"})
        assert resp.status_code == 201, resp.text
    every = await _all_at_once(client, "/api/v1/billing/prices", admin_headers)
    assert await _page_all(client, "/api/v1/billing/prices", admin_headers, limit=1) == every
