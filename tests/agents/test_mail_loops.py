"""Mail loops (docs/agents-mail.md "A run per message"): automatic mail is stored and
starts no run of the persona's mail agent, or two agents, or an agent and an
autoresponder, would mail each other for ever, a run and LLM calls per turn.  Automatic
is: ``Auto-Submitted`` other than ``no``, ``Precedence`` bulk/junk/list, an empty
envelope sender (a bounce), the persona's own sent mail come back; an agent's own mail
carries ``Auto-Submitted``."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest
from sqlalchemy import func, select, update

from roost.agents import mail
from roost.agents.mail_schemas import EmailSend
from roost.agents.mailserver import MailServer
from roost.agents.models import Agent, Email, Persona, Run
from roost.config import parse_relay_url
from roost.db.engine import Database
from roost.principal import Principal
from tests.agents import test_mail as tm
from tests.agents.api import audit_rows
from tests.agents.conftest import Headers, make_agent
from tests.agents.test_mail import SENDER, address, emails_of, make_persona, message, smtp_send

listener, mail_cfg, relay_factory = tm.listener, tm.mail_cfg, tm.relay_factory  # fixtures


async def runs_count(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Run)) or 0)


async def persona_with_mail_agent(database: Database, owner: uuid.UUID) -> tuple[Persona, Agent]:
    persona = await make_persona(database, owner, address())
    agent = await make_agent(database, owner, persona_id=persona.id)
    async with database.transaction() as session:
        await session.execute(update(Persona).where(Persona.id == persona.id)
                              .values(email_agent_id=agent.id))
    return persona, agent


async def agent_mails_itself(
    database: Database, cfg: mail.MailConfig, relay_factory: Callable[..., Any],
    owner: uuid.UUID,
) -> tuple[Persona, bytes]:
    """The persona's agent sends (send_email) to the persona's own address: the persona
    and the bytes the relay received, which it would hand back to Roost's listener."""
    persona, agent = await persona_with_mail_agent(database, owner)
    async with database.transaction() as session:
        run = Run(agent_id=agent.id, persona_id=persona.id, user_id=owner,
                  trace_id=f"t-{uuid.uuid4()}", input="reply", status="running")
        session.add(run)
        await session.flush()
        run_id = run.id
    relay = await relay_factory()
    cfg = dataclasses.replace(cfg, relay=parse_relay_url(f"smtp://127.0.0.1:{relay.port}"))
    actor = Principal(user_id=owner, is_admin=False, kind="job")
    await mail.send_email_tool(database, cfg, actor, {"to": [str(persona.email_address)],
                                                      "subject": "Re: hi", "body": "noted"},
                               run_id=run_id)
    return persona, relay.received[-1][2]


async def test_an_agent_s_mail_coming_back_to_its_persona_starts_no_run(
    database: Database, listener: MailServer, relay_factory: Callable[..., Any],
    mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Headers],
) -> None:
    owner, _ = user
    persona, sent = await agent_mails_itself(database, mail_cfg, relay_factory, owner)
    assert BytesParser(policy=policy.default).parsebytes(sent)["Auto-Submitted"] == \
        "auto-generated"
    before = await runs_count(database)
    to = str(persona.email_address)
    await smtp_send(listener.port, sent, [to], sender=to)
    emails = await emails_of(database, persona.id)
    assert sorted(e.direction for e in emails) == ["inbound", "outbound"]  # stored
    assert all(e.run_id is None for e in emails if e.direction == "inbound")
    assert await runs_count(database) == before  # the loop ends here
    [received] = await audit_rows(database, "agent.email.receive")
    assert "Auto-Submitted: auto-generated" in received["metadata"]["run_skipped"], received


async def test_the_persona_s_own_message_id_starts_no_run_without_auto_submitted(
    database: Database, listener: MailServer, relay_factory: Callable[..., Any],
    mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Headers],
) -> None:
    """A relay or list that drops Auto-Submitted: the Message-ID is still the persona's."""
    owner, _ = user
    persona, sent = await agent_mails_itself(database, mail_cfg, relay_factory, owner)
    msg = BytesParser(policy=policy.default).parsebytes(sent)
    del msg["Auto-Submitted"]
    before = await runs_count(database)
    to = str(persona.email_address)
    await smtp_send(listener.port, msg.as_bytes(policy=policy.SMTP), [to])
    [inbound] = [e for e in await emails_of(database, persona.id) if e.direction == "inbound"]
    assert inbound.run_id is None and await runs_count(database) == before
    [received] = await audit_rows(database, "agent.email.receive")
    assert received["metadata"]["run_skipped"] == "the persona's own sent mail", received


async def test_an_agent_s_reply_is_marked_auto_replied(
    database: Database, listener: MailServer, relay_factory: Callable[..., Any],
    mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Headers],
) -> None:
    """A reply (in_reply_to) is RFC 3834's auto-replied; mail sent through the API is a
    person's, with no Auto-Submitted."""
    owner, _ = user
    persona, _agent = await persona_with_mail_agent(database, owner)
    to = str(persona.email_address)
    await smtp_send(listener.port, message(to), [to])
    [question] = await emails_of(database, persona.id)
    assert question.run_id is not None  # a person's mail starts a run
    relay = await relay_factory()
    cfg = dataclasses.replace(mail_cfg, relay=parse_relay_url(
        f"smtp://127.0.0.1:{relay.port}"))
    actor = Principal(user_id=owner, is_admin=False, kind="job")
    await mail.send_email_tool(database, cfg, actor, {
        "to": [SENDER], "subject": "Re: Hello", "body": "fine",
        "in_reply_to": str(question.id)}, run_id=question.run_id)
    assert relay.parsed()["Auto-Submitted"] == "auto-replied"
    await mail.send_email(database, cfg, actor, persona.id, EmailSend(
        to=[SENDER], subject="By hand", body="from a person"))
    assert relay.parsed()["Auto-Submitted"] is None


@pytest.mark.parametrize(("headers", "sender", "reason"), [
    ({"Auto_Submitted": "auto-replied"}, SENDER, "Auto-Submitted: auto-replied"),
    ({"Auto_Submitted": "Auto-Generated; owner-email=x@example.org"}, SENDER,
     "Auto-Submitted: auto-generated"),
    ({"Precedence": "bulk"}, SENDER, "Precedence: bulk"),
    ({"Precedence": "list"}, SENDER, "Precedence: list"),
    ({}, "", "empty envelope sender"),
    ({"Auto_Submitted": "auto-replied"}, "", "Auto-Submitted: auto-replied"),
])
async def test_an_auto_reply_list_mail_or_bounce_starts_no_run(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
    headers: dict[str, str], sender: str, reason: str,
) -> None:
    owner, _ = user
    persona, _agent = await persona_with_mail_agent(database, owner)
    to = str(persona.email_address)
    await smtp_send(listener.port, message(to, subject="Out of office", **headers), [to],
                    sender=sender)
    [email] = await emails_of(database, persona.id)
    assert email.subject == "Out of office"  # stored
    assert email.run_id is None and await runs_count(database) == 0
    [received] = await audit_rows(database, "agent.email.receive")
    assert reason in received["metadata"]["run_skipped"], received


async def test_auto_submitted_no_is_a_person_s_mail_and_starts_a_run(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
) -> None:
    owner, _ = user
    persona, _agent = await persona_with_mail_agent(database, owner)
    to = str(persona.email_address)
    await smtp_send(listener.port, message(to, Auto_Submitted="no", Precedence="first-class"),
                    [to])
    [email] = await emails_of(database, persona.id)
    assert email.run_id is not None and await runs_count(database) == 1
    async with database.transaction() as session:
        assert await session.scalar(select(Email.run_id).where(Email.id == email.id)) \
            == email.run_id


async def test_mail_past_the_persona_s_hourly_run_cap_is_stored_and_starts_no_run(
    database: Database, mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Headers],
) -> None:
    """A correspondent that marks none of its mail automatic (another system's agent, a
    flood) cannot keep a mail agent busy: past ROOST_SMTP_MAX_MAIL_RUNS_PER_HOUR in the
    last hour a message is stored and starts no run; another persona is not held up."""
    owner, _ = user
    cfg = dataclasses.replace(mail_cfg, max_mail_runs_per_hour=2)
    persona, _agent = await persona_with_mail_agent(database, owner)
    other, _ = await persona_with_mail_agent(database, owner)
    to = str(persona.email_address)
    for n in range(4):
        raw = message(to, subject=f"n{n}").as_bytes(policy=policy.SMTP)
        await mail.receive(database, cfg, raw, [to], sender=SENDER)
    emails = await emails_of(database, persona.id)
    assert len(emails) == 4
    assert [e.run_id is not None for e in emails] == [True, True, False, False]
    skipped = [r["metadata"]["run_skipped"]
               for r in await audit_rows(database, "agent.email.receive")]
    assert skipped[:2] == [None, None]
    assert all("ROOST_SMTP_MAX_MAIL_RUNS_PER_HOUR" in s for s in skipped[2:]), skipped
    await mail.receive(database, cfg, message(str(other.email_address)).as_bytes(
        policy=policy.SMTP), [str(other.email_address)], sender=SENDER)
    [theirs] = await emails_of(database, other.id)
    assert theirs.run_id is not None


async def test_auto_submitted_no_with_a_comment_is_a_person_s_mail(
    database: Database, mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Headers],
) -> None:
    """``Auto-Submitted: no (a person)`` is RFC 3834's value ``no`` with a comment: a
    person's mail, which starts a run (it was skipped as automatic)."""
    owner, _ = user
    persona, _agent = await persona_with_mail_agent(database, owner)
    to = str(persona.email_address)
    raw = message(to, Auto_Submitted="no (a person)").as_bytes(policy=policy.SMTP)
    await mail.receive(database, mail_cfg, raw, [to], sender=SENDER)
    [email] = await emails_of(database, persona.id)
    [received] = await audit_rows(database, "agent.email.receive")
    assert email.run_id is not None, received["metadata"]["run_skipped"]


async def test_a_second_auto_submitted_header_saying_auto_replied_starts_no_run(
    database: Database, mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Headers],
) -> None:
    """A message with an ``Auto-Submitted: auto-replied`` header is automatic also when
    an ``Auto-Submitted: no`` comes first (only the first was read: it started a run,
    and answering an auto-reply can loop)."""
    owner, _ = user
    persona, _agent = await persona_with_mail_agent(database, owner)
    to = str(persona.email_address)
    msg = message(to, Auto_Submitted="no")
    msg["Auto-Submitted"] = "auto-replied"
    await mail.receive(database, mail_cfg, msg.as_bytes(policy=policy.SMTP), [to],
                       sender=SENDER)
    [email] = await emails_of(database, persona.id)
    assert email.run_id is None
