"""An account suspended, deactivated, sent back to approval or deleted through one
server process is refused by another on the very next request (API key, access token,
refresh token and sign-in; REST and /mcp alike), though that process had used and
remembered each credential; and a group, or a persona with another owner, outlives its
deleted creator."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.identity.conftest import login, password_user
from tests.support.identity import join_group, join_persona, make_user
from tests.support.lifecycle import CHANGES, assert_audit_chain_intact, end_account
from tests.support.pg import PgTestServer
from tests.support.server import roost_server, serve_env
from tests.support.sql import fetch, scalar

ME = "/api/v1/auth/me"
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


async def test_an_ended_account_is_refused_by_another_process_on_the_next_request(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    """The administrator works through this test's app; the account's credentials are
    used at a ``roost serve`` of the same database, a process of its own."""
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        served = await asyncio.to_thread(stack.enter_context, roost_server(
            serve_env(pg_server, db_name, tmp_path / "served", test_keys)))
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as other:
            for how in ("delete", *CHANGES):
                name = f"ending-{how}"
                user_id = await password_user(database, name)
                signed_in = await login(other, name)
                assert signed_in.status_code == 200, signed_in.text
                tokens = signed_in.json()
                token = {"Authorization": f"Bearer {tokens['access_token']}"}
                made = await other.post("/api/v1/api-keys", json={"name": how}, headers=token)
                assert made.status_code == 201, made.text
                key = {"Authorization": f"Bearer {made.json()['key']}"}
                for _ in range(2):  # looked up, then remembered and confirmed
                    for credential in (key, token):
                        assert (await other.get(ME, headers=credential)).status_code == 200
                await end_account(client, admin_headers, user_id, how)
                for kind, credential in (("key", key), ("token", token)):
                    rest = await other.get(ME, headers=credential)
                    mcp = await other.post("/mcp", json=TOOLS_LIST,
                                           headers={**credential, **MCP_ACCEPT})
                    if (rest.status_code, mcp.status_code) != (401, 401):
                        problems.append(f"{how}: the {kind} answered {rest.status_code} "
                                        f"(REST), {mcp.status_code} (/mcp)")
                refreshed = await other.post("/api/v1/auth/refresh",
                                             json={"refresh_token": tokens["refresh_token"]})
                again = await login(other, name)
                if refreshed.status_code != 401 or again.status_code not in (401, 403):
                    problems.append(f"{how}: a refresh answered {refreshed.status_code}, "
                                    f"a sign-in {again.status_code}")
        await asyncio.to_thread(stack.close)
    assert not problems, problems
    assert "Traceback" not in served.output, served.output[-3000:]
    await assert_audit_chain_intact(database)


async def test_a_group_outlives_its_deleted_creator(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    creator_id, creator = await make_user(database)
    member_id, member = await make_user(database)
    made = await client.post("/api/v1/groups", json={"name": "herons"}, headers=creator)
    assert made.status_code == 201, made.text
    group = f"/api/v1/groups/{made.json()['id']}"
    await join_group(client, creator, made.json()["id"], member_id, member)
    await end_account(client, admin_headers, creator_id)
    for path in (group, f"{group}/members", "/api/v1/groups"):
        seen = await client.get(path, headers=member)
        assert seen.status_code == 200, (path, seen.text)
    assert (await client.get(group, headers=admin_headers)).status_code == 200
    # The creator was its only admin: the member left is its admin now, and manages it.
    members = (await client.get(f"{group}/members", headers=member)).json()
    assert [(m["user_id"], m["role"]) for m in members] == [(str(member_id), "admin")]
    renamed = await client.patch(group, json={"name": "mine now"}, headers=member)
    assert renamed.status_code == 200, renamed.text


async def test_a_persona_with_another_owner_outlives_its_deleted_creator(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """Deleting the account of a persona's owner (``owner_id``) hands the persona to its
    longest-standing member with role owner (as a group outlives its creator): they keep
    it, with the agents they made in it, and own it now (no longer a member row).  A
    persona with no other owner is deleted, audited as its owner's deletion would be."""
    creator_id, creator = await make_user(database)
    first_id, first = await make_user(database)
    second_id, second = await make_user(database)
    editor_id, editor = await make_user(database)
    made = await client.post("/api/v1/personas", headers=creator, json={"name": "Desk"})
    alone = await client.post("/api/v1/personas", headers=creator, json={"name": "Alone"})
    assert (made.status_code, alone.status_code) == (201, 201), (made.text, alone.text)
    persona, lone = made.json()["id"], alone.json()["id"]
    await join_persona(client, creator, persona, first_id, first, role="owner")
    await join_persona(client, creator, persona, second_id, second, role="owner")
    await join_persona(client, creator, lone, editor_id, editor, role="editor")
    agent = await client.post("/api/v1/agents", headers=first, json={
        "name": "A", "slug": "a1", "persona_id": persona, "system_prompt": "x"})
    assert agent.status_code == 201, agent.text
    await end_account(client, admin_headers, creator_id)
    kept = await client.get(f"/api/v1/personas/{persona}", headers=first)
    assert kept.status_code == 200, kept.text
    assert (kept.json()["owner_id"], kept.json()["my_role"]) == (str(first_id), "owner")
    assert (await client.get(f"/api/v1/agents/{agent.json()['id']}",
                             headers=first)).status_code == 200
    members = (await client.get(f"/api/v1/personas/{persona}/members", headers=second)).json()
    assert [(m["user_id"], m["role"]) for m in members] == [(str(second_id), "owner")]
    assert (await client.get(f"/api/v1/personas/{lone}", headers=editor)).status_code == 404
    records = await fetch(database, "SELECT action, resource_id FROM audit_logs "
                                    "WHERE action IN ('persona.owner_changed', 'persona.delete')"
                                    " ORDER BY created_at")
    assert [(r.action, r.resource_id) for r in records] == [
        ("persona.owner_changed", persona), ("persona.delete", lone)]
    await assert_audit_chain_intact(database)


async def test_a_deletion_that_closes_a_lock_cycle_with_a_job_is_done_again_not_refused(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """A job writing for the account (a call it stores names the account, so it holds the
    account's row as a foreign key does) and then touching the account's persona, while
    the deletion has taken the persona and waits for the account's row: a lock cycle the
    database ends as a deadlock.  The deletion is done again and succeeds, and the job's
    own work stands; the administrator once got a 503 (seen in CI with a memory job)."""
    user_id, headers = await make_user(database)
    made = await client.post("/api/v1/personas", headers=headers, json={"name": "Kestrel"})
    assert made.status_code == 201, made.text
    async with database.transaction() as job:
        await job.execute(text("SELECT 1 FROM users WHERE id = :u FOR KEY SHARE"),
                          {"u": user_id})
        deletion = asyncio.create_task(end_account(client, admin_headers, user_id))
        deadline = asyncio.get_running_loop().time() + 15
        while not await scalar(database, "SELECT count(*) FROM pg_stat_activity WHERE "
                                         "wait_event_type = 'Lock' AND query LIKE 'DELETE FROM users%'"):
            assert asyncio.get_running_loop().time() < deadline, "the deletion never waited"
            assert not deletion.done(), deletion
            await asyncio.sleep(0.05)
        await job.execute(text("UPDATE personas SET updated_at = now() WHERE id = :p"),
                          {"p": made.json()["id"]})
    await deletion  # a 204, not a 503
    assert await scalar(database, "SELECT count(*) FROM users WHERE id = :u", u=user_id) == 0
    assert await scalar(database, "SELECT count(*) FROM personas WHERE id = :p",
                        p=made.json()["id"]) == 0
    assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE action = "
                                  "'user.deleted' AND resource_id = :u", u=str(user_id)) == 1
    await assert_audit_chain_intact(database)
