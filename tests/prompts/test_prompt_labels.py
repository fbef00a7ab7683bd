"""Labels under concurrency and in numbers: each move audits the version it replaced, a
scope's key has at most ``MAX_LABELS`` labels, and listings show every key's labels."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.prompts.service import MAX_LABELS
from tests.prompts.conftest import User, publish


async def test_concurrent_first_moves_of_a_label_audit_the_version_they_replaced(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    """Concurrent first moves of a new label (and a publish moving it meanwhile): each
    audit entry's from_version is the version it replaced, only the first has none (the
    row lock of the label's read locked nothing while the label did not exist)."""
    _, headers = user
    a = await publish(client, headers, "race.lab", "A", label=None)
    b = await publish(client, headers, "race.lab", "B", label=None)
    c = await publish(client, headers, "race.lab", "C", label=None)
    for i in range(10):
        resps = await asyncio.gather(
            *[client.put("/api/v1/prompts/labels", headers=headers,
                         json={"prompt_id": v["id"], "label": f"l{i}"}) for v in (a, b, c)],
            client.post("/api/v1/prompts", headers=headers, json={
                "prompt_key": "race.lab", "prompt_text": f"D{i}", "label": f"l{i}"}))
        assert [r.status_code for r in resps] == [200, 200, 200, 201], [r.text for r in resps]
    async with database.transaction() as session:
        rows = (await session.execute(text(
            "SELECT action, changes->>'label', changes->>'from_version' FROM audit_logs "
            "WHERE action IN ('prompt.label', 'prompt.publish') "
            "AND changes->>'prompt_key' = 'race.lab'"))).all()
    moves = [(label, before) for action, label, before in rows if action == "prompt.label"]
    assert len(moves) == 30
    for i in range(10):
        replaced = [before for label, before in moves if label == f"l{i}"]
        # One of the four came first: a move (the one entry without a version) or the
        # publish (none without); every other replaced a version no other replaced.
        assert replaced.count(None) <= 1, (i, replaced)
        named = [v for v in replaced if v is not None]
        assert len(named) == len(set(named)), (i, replaced)


async def test_a_keys_labels_stop_at_the_limit(client: httpx.AsyncClient, database: Database,
                                              user: User) -> None:
    """A new label past MAX_LABELS of one key in one scope is a 409; moving one of them
    still works, and another key is not limited by it."""
    uid, headers = user
    v = await publish(client, headers, "capped", "x")  # its production label
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO system_prompt_labels (id, user_id, prompt_key, label, prompt_id) "
            "SELECT gen_random_uuid(), :u, 'capped', 'l' || i, :p "
            "FROM generate_series(2, :n) i"), {"u": uid, "p": v["id"], "n": MAX_LABELS})
    v2 = await publish(client, headers, "capped", "y", label=None)
    resp = await client.put("/api/v1/prompts/labels", headers=headers,
                            json={"prompt_id": v2["id"], "label": "one-more"})
    assert resp.status_code == 409, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["limit"] == MAX_LABELS
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "capped", "prompt_text": "z", "label": "one-more"})
    assert resp.status_code == 409, resp.text
    resp = await client.put("/api/v1/prompts/labels", headers=headers,
                            json={"prompt_id": v2["id"], "label": "l2"})
    assert resp.status_code == 200 and resp.json()["version"] == 2, resp.text
    await publish(client, headers, "uncapped", "x", label="one-more")


async def test_many_labels_of_one_key_hide_no_other_keys_labels(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    """/keys shows each listed key's labels and /labels pages through all of them (here
    the factory's agent.system production label), however many labels another key has
    (both once stopped after the first 1,000 labels, silently)."""
    uid, headers = user
    v = await publish(client, headers, "a.many", "x")
    async with database.transaction() as session:  # past the limit, as an older Roost allowed
        await session.execute(text(
            "INSERT INTO system_prompt_labels (id, user_id, prompt_key, label, prompt_id) "
            "SELECT gen_random_uuid(), :u, 'a.many', 'l' || i, :p "
            "FROM generate_series(1, 1000) i"), {"u": uid, "p": v["id"]})
    keys = (await client.get("/api/v1/prompts/keys", headers=headers)).json()
    agent = next(k for k in keys if k["prompt_key"] == "agent.system")
    assert "production" in agent["labels"], agent
    assert len(next(k for k in keys if k["prompt_key"] == "a.many")["labels"]) == 1001

    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        resp = await client.get("/api/v1/prompts/labels", headers=headers,
                                params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        seen += [(lab["prompt_key"], lab["label"]) for lab in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 1002  # a.many's 1,001, agent.system's production
    assert ("agent.system", "production") in seen


async def test_a_malformed_labels_cursor_is_a_400(client: httpx.AsyncClient,
                                                 user: User) -> None:
    _, headers = user
    for value in ({"k": "a\x00b", "s": "00000000-0000-0000-0000-000000000000", "l": "x"},
                  {"k": "a", "s": "nope", "l": "x"}, {"k": "a", "l": 3}, [1]):
        cursor = base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
        resp = await client.get("/api/v1/prompts/labels", headers=headers,
                                params={"cursor": cursor})
        assert resp.status_code == 400, (value, resp.text)
