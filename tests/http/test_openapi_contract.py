"""What the OpenAPI document promises matches what Roost answers: declared error answers,
the ``Allow`` header of a 405, strictly typed request bodies (issue 10, item 6)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field, ValidationError
from tests.support.identity import make_user
from tests.support.routes import api_routes

from roost.db.engine import Database
from roost.http.openapi import PROBLEM_STATUSES
from roost.inputs import StrictInput, strict_kind

PROBLEM = "application/problem+json"
METHODS = {"get", "put", "post", "delete", "patch"}


async def test_every_api_operation_declares_its_problem_answers(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert {"type", "title", "status", "detail"} <= set(schemas["Problem"]["properties"])
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 shape is never sent
    api_ops = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            responses = op["responses"]
            if path.startswith("/api/"):
                api_ops += 1
                for status in PROBLEM_STATUSES:
                    content = responses[str(status)]["content"]
                    assert list(content) == [PROBLEM], (method, path, status)
                    assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
            elif path.startswith("/v1/"):
                # OpenAI-compatible routes answer OpenAI's error shape, never problem+json.
                assert all(PROBLEM not in r.get("content", {}) for r in responses.values())
                assert responses["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/OpenAIError"}
    assert api_ops > 50


async def test_405_allow_names_every_method_of_the_path(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    # GET and POST are two routes on /api/v1/api-keys; Starlette named only the first.
    # HEAD is served wherever GET is.
    reply = await client.put("/api/v1/api-keys", headers=admin_headers)
    assert reply.status_code == 405
    assert reply.headers["content-type"] == PROBLEM
    assert reply.headers["allow"] == "GET, HEAD, POST"
    assert "allowed: GET, HEAD, POST" in reply.json()["detail"]
    one = await client.delete("/health")
    assert one.status_code == 405 and one.headers["allow"] == "GET, HEAD"
    item = await client.post(f"/api/v1/api-keys/{uuid.uuid4()}", headers=admin_headers)
    assert item.status_code == 405 and item.headers["allow"] == "DELETE"


@pytest.mark.parametrize("body", [{"name": "k", "expires_at": 0},
                                  {"name": "k", "expires_at": 1_900_000_000},
                                  {"name": "k", "expires_at": "1900000000"},
                                  {"name": "k", "expires_at": True}])
async def test_timestamps_must_be_iso_strings(
    client: httpx.AsyncClient, database: Database, body: dict[str, Any]
) -> None:
    _, headers = await make_user(database)
    reply = await client.post("/api/v1/api-keys", json=body, headers=headers)
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["loc"] == ["body", "expires_at"]
    ok = await client.post("/api/v1/api-keys", headers=headers,
                           json={"name": "k", "expires_at": "2099-01-01T00:00:00Z"})
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("url", ["http://[::1", "http://[", "https://:99999/", "http://a:b",
                                 "https://host:" + "9" * 400])
async def test_a_url_that_does_not_parse_is_refused(
    client: httpx.AsyncClient, database: Database, url: str
) -> None:
    """A pattern like ``^https?://\\S+$`` let these through: stored, then every reader of
    the field failed on them (registering an MCP server with one was a 500)."""
    user_id, headers = await make_user(database)
    for method, path, body in [
        ("PATCH", f"/api/v1/users/{user_id}", {"avatar_url": url}),
        ("POST", "/api/v1/agents", {"name": "a", "slug": "a", "avatar_url": url}),
        ("POST", "/api/v1/projects", {"name": "p", "repository_url": url}),
        ("POST", "/api/v1/mcp-servers", {"name": "m", "transport": "streamable_http", "url": url}),
    ]:
        reply = await client.request(method, path, headers=headers, json=body)
        assert reply.status_code == 422, (path, reply.text)
        error = reply.json()["errors"][0]
        field = next(k for k in body if k.endswith("url"))
        assert error["loc"] == ["body", field] and "valid URL" in error["msg"], error
        assert url not in reply.text  # the value is not echoed
    for path in ("/api/v1/agents", "/api/v1/projects", "/api/v1/mcp-servers"):
        assert (await client.get(path, headers=headers)).json()["items"] == [], path


@pytest.mark.parametrize(("path", "field", "body"), [
    ("/api/v1/api-keys", "expires_at", {"name": "k"}),
    ("/api/v1/chat/sessions", "expires_at", {"title": "t"}),
    ("/api/v1/memories", "valid_from", {"content": "Likes tea"}),
    ("/api/v1/tasks-board", "due_date", {"title": "t"}),
])
async def test_a_stored_moment_needs_its_utc_offset(
    client: httpx.AsyncClient, database: Database, path: str, field: str, body: dict[str, Any]
) -> None:
    """The same rule on every route: a bare timestamp is a 422 naming the field, not read
    as UTC on some routes and refused on others; nothing is stored."""
    _, headers = await make_user(database)

    async def stored() -> list[Any]:
        listed = await client.get(path, headers=headers)
        assert listed.status_code == 200, listed.text
        page = listed.json()
        return page if isinstance(page, list) else list(page["items"])

    before = await stored()
    reply = await client.post(path, headers=headers, json={**body, field: "2020-01-01T09:00:00"})
    assert reply.status_code == 422, reply.text
    error = reply.json()["errors"][0]
    assert error["loc"] == ["body", field] and "UTC offset" in error["msg"], error
    assert await stored() == before


@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
async def test_booleans_must_be_json_booleans(
    client: httpx.AsyncClient, database: Database, value: Any
) -> None:
    user_id, headers = await make_user(database)
    reply = await client.patch(f"/api/v1/users/{user_id}/devices/{uuid.uuid4()}",
                               json={"is_trusted": value}, headers=headers)
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["loc"] == ["body", "is_trusted"]
    # A real boolean passes validation (and then finds no such device).
    real = await client.patch(f"/api/v1/users/{user_id}/devices/{uuid.uuid4()}",
                              json={"is_trusted": True}, headers=headers)
    assert real.status_code == 404


@pytest.mark.parametrize("body", [{"priority": False}, {"priority": "3"}, {"weight": True},
                                  {"enabled": 1}])
async def test_numbers_must_be_json_numbers(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, Any]
) -> None:
    reply = await client.patch(f"/api/v1/llm/providers/{uuid.uuid4()}", json=body,
                               headers=admin_headers)
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["loc"] == ["body", next(iter(body))]


@pytest.mark.parametrize("value", ["0.5", "1700000000", "-1"])
async def test_timestamp_query_parameters_must_be_iso(
    client: httpx.AsyncClient, admin_headers: dict[str, str], value: str
) -> None:
    """Every timestamp in a query, on every operation that reads one: lax parsing would
    take a number as seconds since 1970 and answer for 1970."""
    doc = (await client.get("/openapi.json")).json()
    checked = []
    for path, item in doc["paths"].items():
        for param in item.get("get", {}).get("parameters", []):
            schema = param["schema"]
            formats = {schema.get("format")} | {s.get("format") for s in schema.get("anyOf", [])}
            if param["in"] != "query" or "date-time" not in formats:
                continue
            url = re.sub(r"{[^}]+}", str(uuid.uuid4()), path)
            reply = await client.get(url, params={param["name"]: value}, headers=admin_headers)
            assert reply.status_code == 422, (path, param["name"], reply.text)
            assert param["name"] in reply.text, reply.text
            checked.append((path, param["name"]))
    assert len(checked) >= 20 and ("/api/v1/memories", "as_of") in checked, checked
    ok = await client.get("/api/v1/audit/logs?since=2026-01-01T00:00:00Z", headers=admin_headers)
    assert ok.status_code == 200, ok.text


def test_strict_input_types() -> None:
    class Body(StrictInput):
        flag: bool = False
        maybe: bool | None = None
        when: datetime | None = None
        count: int = 0
        ratio: float | None = None
        # Constrained types, also inside an optional one.
        bounded: Annotated[int, Field(ge=0)] | None = None
        at: Annotated[datetime, Field(description="x")] | None = None

    assert Body.model_validate({"flag": True, "when": "2027-01-01T00:00:00Z", "count": 3}).count == 3
    assert Body.model_validate({"maybe": None, "when": None, "ratio": 1}).ratio == 1.0
    assert Body.model_validate({"bounded": 3, "at": "2027-01-01T00:00:00Z"}).bounded == 3
    for bad in ({"flag": 0}, {"maybe": "false"}, {"when": 0}, {"when": "12.5"}, {"when": 1.5e9},
                {"count": "3"}, {"count": True}, {"ratio": "0.5"}, {"unknown": 1},
                {"bounded": False}, {"bounded": "3"}, {"at": 0},
                {"when": "2027-01-01T00:00:00"}, {"at": "2027-01-01"}):
        with pytest.raises(ValidationError):
            Body.model_validate(bad)

    class ModelAnswer(Body):
        naive_is_utc = True  # a model's output, not a client's request

    read = ModelAnswer.model_validate({"when": "2027-01-01T08:00:00", "at": "2027-01-01"})
    assert read.when == datetime(2027, 1, 1, 8, tzinfo=UTC) and read.at is not None


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found = [annotation]
        for field in annotation.model_fields.values():
            found += _models(field.annotation)
        return found
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models(arg)]


def test_every_json_body_outside_v1_is_strict(app: FastAPI) -> None:
    """Bodies are validated from decoded JSON: a lax model would take 0 for false.  Every
    model in a body that has a boolean, number or timestamp field derives from StrictInput."""
    lax = set()
    routes = list(api_routes(app.router.routes))
    assert len(routes) > 50
    for route in routes:
        if route.path.startswith("/v1/"):
            continue
        body = route.body_field
        if body is None or "json" not in getattr(body.field_info, "media_type", "json"):
            continue
        for model in _models(body.field_info.annotation):
            typed = any(strict_kind(f.annotation) for f in model.model_fields.values())
            if typed and not issubclass(model, StrictInput):
                lax.add(f"{route.path}: {model.__name__}")
    assert lax == set()
