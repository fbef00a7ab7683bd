"""Inbound mail to a persona whose owner's plan refuses the mail agent's run (no credits
left, the day's runs taken): the mail is stored without a run, the reason audited, and
other personas' copies of the message are not held back (the listener answered 451)."""

from __future__ import annotations

import uuid
from email import policy

import httpx
import pytest
from sqlalchemy import text

from roost.agents import mail
from roost.agents.mailserver import MailServer
from roost.db.engine import Database
from tests.agents.conftest import Headers
from tests.agents.test_mail import (  # noqa: F401  (listener and mail_cfg are fixtures)
    address,
    emails_of,
    listener,
    mail_cfg,
    make_persona,
    message,
    smtp_send,
)
from tests.agents.test_mail_identities import with_agent
from tests.billing.metered import subscribe
from tests.support.identity import make_user


async def _use_up_credits(database: Database, user_id: uuid.UUID) -> None:
    async with database.transaction() as session:
        await session.execute(text("UPDATE subscriptions SET credits_used = credits_limit "
                                   "WHERE user_id = :u"), {"u": user_id})


def _raw(to: str, message_id: str) -> bytes:
    return message(to, message_id=message_id).as_bytes(policy=policy.SMTP)


@pytest.mark.parametrize("plan", ["balance", "runs_per_day"])
async def test_mail_to_an_owner_at_the_plan_s_limit_is_stored_without_a_run(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
    mail_cfg: mail.MailConfig, plan: str,  # noqa: F811
) -> None:
    """A metered owner whose credits are used up, or whose one run of the day the first
    mail took, still receives the second mail: stored, no run, the plan's refusal in the
    audit record's run_skipped."""
    owner, _ = await make_user(database)
    await subscribe(client, admin_headers, owner, 10_000,
                    **({"runs_per_day": 1} if plan == "runs_per_day" else {}))
    persona = await with_agent(database, owner)
    to = str(persona.email_address)
    first = await mail.receive(database, mail_cfg, _raw(to, "<plan-1@example.org>"), [to],
                               sender="alice@example.org")
    assert first[0].run_id is not None  # the day's one run
    if plan == "balance":
        await _use_up_credits(database, owner)
    second = await mail.receive(database, mail_cfg, _raw(to, "<plan-2@example.org>"), [to],
                                sender="alice@example.org")
    assert len(second) == 1 and second[0].run_id is None
    assert len(await emails_of(database, persona.id)) == 2
    async with database.transaction() as session:
        skipped = await session.scalar(text(
            "SELECT metadata->>'run_skipped' FROM audit_logs WHERE action = 'agent.email.receive' "
            "ORDER BY seq DESC LIMIT 1"))
    assert skipped and skipped.startswith("the run was refused"), skipped


async def test_one_owner_s_exhausted_plan_does_not_block_another_persona_s_copy(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
    listener: MailServer,  # noqa: F811
) -> None:
    """One message to two personas of two owners, the first owner's plan out of credits:
    both copies are stored (the whole message was refused, 451, the other owner's too)."""
    broke, _ = await make_user(database)
    fine, _ = await make_user(database)
    await subscribe(client, admin_headers, broke, 10_000)
    await _use_up_credits(database, broke)
    first = await with_agent(database, broke)
    second = await make_persona(database, fine, address())
    tos = [str(first.email_address), str(second.email_address)]
    assert await smtp_send(listener.port, _raw(tos[0], "<two@example.org>"), tos) == {}
    assert len(await emails_of(database, second.id)) == 1
    assert len(await emails_of(database, first.id)) == 1
