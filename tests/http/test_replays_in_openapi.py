"""Idempotent replays answer 200, as the docs say, and the OpenAPI document declares it."""

from __future__ import annotations

import httpx
from tests.support.identity import make_user

from roost.db.engine import Database

NODES = [{"id": "s", "type": "start", "position": {"x": 0, "y": 0}, "data": {}},
         {"id": "e", "type": "end", "position": {"x": 0, "y": 100}, "data": {}}]
EDGES = [{"id": "se", "source": "s", "target": "e"}]


async def test_idempotent_replays_answer_200_and_the_openapi_document_declares_it(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """docs/tasks.md and docs/workflows.md promise 200 for a reused idempotency key, and the
    app answers 200, so the OpenAPI document (what generated clients follow) declares it."""
    _, alice = await make_user(database, username="alice")
    job = {"task_type": "audit.retention", "payload": {}, "idempotency_key": "k1",
           "scheduled_at": "2099-01-01T00:00:00Z"}
    first = await client.post("/api/v1/tasks", headers=admin_headers, json=job)
    again = await client.post("/api/v1/tasks", headers=admin_headers, json=job)
    assert (first.status_code, again.status_code) == (201, 200), again.text

    made = await client.post("/api/v1/workflows", headers=alice,
                             json={"name": "W", "nodes": NODES, "edges": EDGES})
    wid = made.json()["id"]
    assert (await client.post(f"/api/v1/workflows/{wid}/publish", headers=alice)).status_code == 201
    run = {"inputs": {}, "idempotency_key": "k"}
    first = await client.post(f"/api/v1/workflows/{wid}/runs", headers=alice, json=run)
    again = await client.post(f"/api/v1/workflows/{wid}/runs", headers=alice, json=run)
    assert (first.status_code, again.status_code) == (202, 200), again.text

    spec = (await client.get("/openapi.json")).json()
    undeclared = [f"{method.upper()} {path}" for path, method in (
        ("/api/v1/tasks", "post"), ("/api/v1/workflows/{workflow_id}/runs", "post"))
        if "200" not in spec["paths"][path][method]["responses"]]
    assert not undeclared, f"200 answered and documented but not in the OpenAPI document: {undeclared}"
