"""Persona roles, the persona's mailbox and health series (docs/agents-mail.md "API"):
members and administrators read them, owners, editors and administrators send (viewers
403), everyone else gets the 404 of an unknown id; a reply names only the persona's own
mail; mail to the persona starts no run of a mail agent that has moved to another
persona (the mail is stored only)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from email import policy
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from roost.agents import mail
from roost.agents.models import Attachment, Email, PersonaHealthMetric
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.api import Headers, audit_rows, create_agent, create_persona
from tests.agents.roles import Checker, make_cast
from tests.agents.test_mail import address, message, relay_factory
from tests.support.sql import scalar

__all__ = ["relay_factory"]  # a fixture

SUBJECT = "confidential-quarterly-numbers"


async def receive(database: Database, settings: Settings, to: str,
                  subject: str = SUBJECT) -> tuple[uuid.UUID, uuid.UUID]:
    """Mail to ``to`` with a payroll attachment, received as the listener would: the ids of
    the stored email and of its attachment."""
    msg = message(to, subject=subject, body="payroll body text",
                  message_id=f"<{uuid.uuid4().hex}@example.org>")
    msg.add_attachment(b"payroll,1", maintype="text", subtype="csv", filename="payroll.csv")
    [got] = await mail.receive(database, mail.MailConfig.from_settings(settings),
                               msg.as_bytes(policy=policy.SMTP), [to])
    async with database.transaction() as session:
        attachment = await session.scalar(select(Attachment.id).where(
            Attachment.email_id == got.email_id))
    assert attachment is not None
    return got.email_id, attachment


async def test_members_and_administrators_read_the_mailbox_and_health_nobody_else(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    test_settings: Settings,
) -> None:
    c = await make_cast(client, database, admin_headers, email_address=address())
    chk = Checker()
    email_id, attachment_id = await receive(database, test_settings, c.persona["email_address"])
    async with database.transaction() as session:
        session.add(PersonaHealthMetric(persona_id=uuid.UUID(c.pid), llm_calls_count=7))
    paths = {"GET /personas/{id}/emails": f"/api/v1/personas/{c.pid}/emails",
             "GET /personas/{id}/emails?direction": f"/api/v1/personas/{c.pid}/emails"
                                                    "?direction=inbound",
             "GET /emails/{id}": f"/api/v1/emails/{email_id}",
             "GET /attachments/{id}": f"/api/v1/attachments/{attachment_id}",
             "GET /attachments/{id}/content": f"/api/v1/attachments/{attachment_id}/content",
             "GET /personas/{id}/health": f"/api/v1/personas/{c.pid}/health"}
    for actor in c.all():
        for route, path in paths.items():
            resp = await client.get(path, headers=actor.headers)
            chk.check(route, actor, resp, 200 if actor in c.readers() else 404,
                      leak=(SUBJECT, "payroll", "Falcon"))
    ghost = await client.get(f"/api/v1/emails/{uuid.uuid4()}", headers=c.outsider.headers)
    chk.check("GET /emails/{unknown id}", c.outsider, ghost, 404)
    chk.done()


async def test_owners_editors_and_administrators_send_and_reply_only_to_the_persona_s_mail(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    test_settings: Settings, relay_factory: Callable[..., Any],
) -> None:
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    c = await make_cast(client, database, admin_headers, email_address=address())
    chk = Checker()
    send = {"to": ["bob@example.org"], "subject": "Hi", "body": "x"}
    expected = {c.owner: 201, c.co_owner: 201, c.editor: 201, c.viewer: 403, c.outsider: 404,
                c.group_peer: 404, c.admin: 201, c.operator: 201}
    for actor, code in expected.items():
        before = len(relay.received)
        resp = await client.post(f"/api/v1/personas/{c.pid}/emails", json=send,
                                 headers=actor.headers)
        chk.check("POST /personas/{id}/emails", actor, resp, code, leak=("Falcon",))
        chk.that(len(relay.received) - before == (code == 201),
                 f"POST /personas/{{id}}/emails as {actor.name}: relay saw "
                 f"{len(relay.received) - before} message(s)")
    # in_reply_to naming another persona's mail (one the editor can read) is refused.
    theirs = await create_persona(client, c.editor.headers, email_address=address())
    their_email, _ = await receive(database, test_settings, theirs["email_address"],
                                   subject="editor-private-thread")
    resp = await client.post(f"/api/v1/personas/{c.pid}/emails", headers=c.editor.headers,
                             json={**send, "in_reply_to": str(their_email)})
    chk.check("POST /personas/{id}/emails in_reply_to=another persona's email", c.editor, resp,
              404)
    async with database.transaction() as session:
        linked = await session.scalar(select(Email.id).where(
            Email.persona_id == uuid.UUID(c.pid), Email.thread_id.is_not(None),
            Email.subject == "editor-private-thread"))
    chk.that(linked is None, "another persona's thread got linked")
    chk.done()


async def test_mail_starts_no_run_of_a_mail_agent_that_moved_to_another_persona(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    test_settings: Settings,
) -> None:
    """An editor makes their agent the persona's mail agent, moves it to a persona of their
    own (public, so the owner still sees it) and is removed: ``email_agent_id`` may still
    name it, but mail to the persona is stored only, starting no run the former editor
    would read."""
    c = await make_cast(client, database, admin_headers, email_address=address())
    agent = await create_agent(client, c.editor.headers, persona_id=c.pid)
    chosen = await client.patch(f"/api/v1/personas/{c.pid}", headers=c.editor.headers,
                                json={"email_agent_id": agent["id"]})
    assert chosen.status_code == 200, chosen.text
    mine = await create_persona(client, c.editor.headers)
    moved = await client.patch(f"/api/v1/agents/{agent['id']}", headers=c.editor.headers,
                               json={"persona_id": mine["id"], "is_public": True})
    assert moved.status_code == 200, moved.text
    removed = await client.delete(f"/api/v1/personas/{c.pid}/members/{c.editor.id}",
                                  headers=c.owner.headers)
    assert removed.status_code == 204, removed.text

    email_id, _ = await receive(database, test_settings, c.persona["email_address"])
    stored = await client.get(f"/api/v1/emails/{email_id}", headers=c.owner.headers)
    assert stored.status_code == 200 and stored.json()["subject"] == SUBJECT, stored.text
    assert await scalar(database, "SELECT run_id FROM emails WHERE id = :e", e=email_id) is None
    assert await scalar(database, "SELECT count(*) FROM runs") == 0
    [received] = await audit_rows(database, "agent.email.receive")
    assert "no longer belongs to the persona" in received["metadata"]["run_skipped"], received
