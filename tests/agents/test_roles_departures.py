"""What a persona keeps when someone leaves (docs/agents.md "Personas and members",
docs/agents-mail.md): an account deleted takes none of the persona's mail, attachments or
grants with it (migration 1250: their ``user_id`` becomes NULL), and a persona deleted
takes none of its runs' artifacts (``attachments.persona_id`` becomes NULL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from roost.agents import attachments
from roost.config import Settings
from roost.db.engine import Database
from roost.principal import Principal
from tests.agents.api import Headers, create_agent
from tests.agents.roles import make_cast
from tests.agents.test_mail import address, relay_factory
from tests.agents.test_roles_mail import receive
from tests.support.sql import scalar

__all__ = ["relay_factory"]  # a fixture

SYSTEM = Principal(user_id=None, is_admin=True, kind="system")


async def test_the_co_owner_who_inherits_a_persona_keeps_its_mailbox(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    test_settings: Settings,
) -> None:
    c = await make_cast(client, database, admin_headers, email_address=address())
    email_id, attachment_id = await receive(database, test_settings, c.persona["email_address"])
    gone = await client.delete(f"/api/v1/users/{c.owner.id}", headers=admin_headers)
    assert gone.status_code == 204, gone.text
    persona = await client.get(f"/api/v1/personas/{c.pid}", headers=c.co_owner.headers)
    assert persona.status_code == 200 and persona.json()["owner_id"] == str(c.co_owner.id)
    for member in (c.co_owner, c.editor, c.viewer):
        one = await client.get(f"/api/v1/emails/{email_id}", headers=member.headers)
        assert one.status_code == 200, one.text
        att = await client.get(f"/api/v1/attachments/{attachment_id}/content",
                               headers=member.headers)
        assert att.status_code == 200 and att.content == b"payroll,1", att.text
    # Still the persona's only: another tenant sees neither.
    assert (await client.get(f"/api/v1/emails/{email_id}",
                             headers=c.outsider.headers)).status_code == 404
    assert (await client.get(f"/api/v1/attachments/{attachment_id}",
                             headers=c.outsider.headers)).status_code == 404
    assert await scalar(database, "SELECT user_id FROM emails WHERE id = :e",
                        e=email_id) is None


async def test_the_mail_an_editor_sent_for_the_persona_stays_when_their_account_goes(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    test_settings: Settings, relay_factory: Callable[..., Any],
) -> None:
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    c = await make_cast(client, database, admin_headers, email_address=address())
    sent = await client.post(f"/api/v1/personas/{c.pid}/emails", headers=c.editor.headers,
                             json={"to": ["bob@example.org"], "subject": "Q3", "body": "x"})
    assert sent.status_code == 201, sent.text
    gone = await client.delete(f"/api/v1/users/{c.editor.id}", headers=admin_headers)
    assert gone.status_code == 204, gone.text
    box = await client.get(f"/api/v1/personas/{c.pid}/emails", headers=c.owner.headers)
    assert box.status_code == 200, box.text
    assert sent.json()["id"] in [e["id"] for e in box.json()["items"]]
    one = await client.get(f"/api/v1/emails/{sent.json()['id']}", headers=c.viewer.headers)
    assert one.status_code == 200 and one.json()["subject"] == "Q3", one.text


async def test_deleting_a_persona_keeps_its_runs_artifacts_for_the_run_s_user(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    test_settings: Settings,
) -> None:
    c = await make_cast(client, database, admin_headers, email_address=address())
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid)
    run = await client.post(f"/api/v1/agents/{agent['id']}/runs", headers=c.viewer.headers,
                            json={"input": "hi"})
    assert run.status_code == 202, run.text
    _, mail_attachment = await receive(database, test_settings, c.persona["email_address"])
    async with database.transaction() as session:
        art = await attachments.add_run_artifact(
            session, SYSTEM, test_settings.data_dir, uuid.UUID(run.json()["id"]),
            name="report.txt", data=b"artifact-bytes")
        art_id = art.id
    before = await client.get(f"/api/v1/attachments/{art_id}", headers=c.editor.headers)
    assert before.status_code == 200, before.text  # a member sees the persona's artifact
    deleted = await client.delete(f"/api/v1/personas/{c.pid}", headers=c.owner.headers)
    assert deleted.status_code == 204, deleted.text
    kept = await client.get(f"/api/v1/runs/{run.json()['id']}", headers=c.viewer.headers)
    assert kept.status_code == 200, kept.text  # the run stays, as documented
    after = await client.get(f"/api/v1/attachments/{art_id}/content", headers=c.viewer.headers)
    assert after.status_code == 200 and after.content == b"artifact-bytes", after.text
    # As the run now is, the artifact is its user's alone; the mail went with the persona.
    assert (await client.get(f"/api/v1/attachments/{art_id}",
                             headers=c.editor.headers)).status_code == 404
    assert await scalar(database, "SELECT count(*) FROM attachments WHERE id = :a",
                        a=mail_attachment) == 0


async def test_a_departed_editor_s_grant_of_a_global_tool_stays_the_persona_s(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    tools = (await client.get("/api/v1/tools", headers=c.owner.headers,
                              params={"limit": 200})).json()["items"]
    glob = next(t for t in tools if t.get("user_id") is None)
    put = await client.put(f"/api/v1/personas/{c.pid}/tools/{glob['id']}",
                           headers=c.editor.headers, json={"is_enabled": True})
    assert put.status_code == 200 and put.json()["granted_by"] == str(c.editor.id), put.text
    gone = await client.delete(f"/api/v1/users/{c.editor.id}", headers=admin_headers)
    assert gone.status_code == 204, gone.text
    grants = await client.get(f"/api/v1/personas/{c.pid}/tools", headers=c.owner.headers)
    assert [(g["tool_id"], g["granted_by"], g["is_enabled"]) for g in grants.json()] == [
        (glob["id"], None, True)], grants.text
