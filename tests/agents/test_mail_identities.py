"""Inbound mail identified as senders write it: a Message-ID without angle brackets is
still the message's id (a retried delivery is stored once); a persona's address in
composed or decomposed form is one address."""

from __future__ import annotations

import uuid
from email import policy
from email.message import EmailMessage

import httpx
import pytest
from sqlalchemy import func, select, update

from roost.agents import mail
from roost.agents.models import Persona, Run
from roost.db.engine import Database
from tests.agents.api import create_persona
from tests.agents.conftest import Headers, make_agent
from tests.agents.test_mail import address, emails_of, mail_cfg, make_persona, message  # noqa: F401
from tests.support.identity import make_user


def raw_of(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=policy.SMTP)


async def with_agent(database: Database, owner: uuid.UUID) -> Persona:
    persona = await make_persona(database, owner, address())
    agent = await make_agent(database, owner, persona_id=persona.id)
    async with database.transaction() as session:
        await session.execute(update(Persona).where(Persona.id == persona.id)
                              .values(email_agent_id=agent.id))
    return persona


async def runs_of(database: Database, persona_id: uuid.UUID) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Run).where(
            Run.persona_id == persona_id)) or 0)


async def test_unbracketed_message_id_retransmission(
    database: Database, mail_cfg: mail.MailConfig,  # noqa: F811
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A Message-ID written ``abc@host`` (no angle brackets, as some mailers write it) is
    the message's id: a retransmission (a lost 250) is stored once and starts one run (each
    copy got a fresh id of Roost's: a second row, a second run of the mail agent)."""
    owner, _ = user
    persona = await with_agent(database, owner)
    to = str(persona.email_address)
    msg = message(to)
    raw = raw_of(msg).replace(b"Subject: Hello\r\n",
                              b"Subject: Hello\r\nMessage-ID: " + uuid.uuid4().hex.encode()
                              + b"@mailer.example.org\r\n")
    await mail.receive(database, mail_cfg, raw, [to])
    await mail.receive(database, mail_cfg, raw, [to])
    assert len(await emails_of(database, persona.id)) == 1
    assert await runs_of(database, persona.id) == 1


async def test_nfd_persona_address_gets_nfc_mail(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,  # noqa: F811
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A persona's address typed decomposed (``e`` + U+0301) receives mail sent to the
    composed form (NFC, what RFC 6532 recommends senders write): it reached nobody."""
    _, headers = user
    local = f"jose{uuid.uuid4().hex[:6]}"
    nfd = f"{local}e\u0301@roost.example.org"
    nfc = f"{local}\u00e9@roost.example.org"
    r = await client.post("/api/v1/personas", headers=headers,
                          json={"name": "Jose", "email_address": nfd})
    assert r.status_code == 201, r.text
    got = await mail.receive(database, mail_cfg, raw_of(message(nfc)), [nfc])
    assert len(got) == 1


async def test_nfc_and_nfd_addresses_are_one(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    """Another owner's persona with the same address in decomposed form is a 409 (it was
    created: which owner got the mail depended on the form the sender wrote)."""
    local = f"jose{uuid.uuid4().hex[:6]}"
    nfd = f"{local}e\u0301@roost.example.org"
    nfc = f"{local}\u00e9@roost.example.org"
    r = await client.post("/api/v1/personas", headers=user[1],
                          json={"name": "Jose", "email_address": nfc})
    assert r.status_code == 201, r.text
    r2 = await client.post("/api/v1/personas", headers=other_user[1],
                           json={"name": "Jose", "email_address": nfd})
    assert r2.status_code == 409, r2.text


@pytest.mark.parametrize(("taken", "twin"), [
    ("ex\u00e4mple.com", "xn--exmple-cua.com"),  # the domain's Unicode and IDNA forms
    ("example.com", "example.com."),  # the domain written fully qualified
], ids=["idna", "trailing-dot"])
async def test_a_twin_spelling_of_a_taken_address_domain_is_taken(
        client: httpx.AsyncClient, database: Database, taken: str, twin: str) -> None:
    """bot@exämple.com and bot@xn--exmple-cua.com, or bot@example.com and bot@example.com.,
    are one mailbox: another tenant taking the twin is a 409 (it was a second persona
    answering as that address)."""
    _, alice = await make_user(database)
    _, mallory = await make_user(database)
    local = f"bot{uuid.uuid4().hex[:6]}"
    mine = await create_persona(client, alice)
    r = await client.patch(f"/api/v1/personas/{mine['id']}", headers=alice,
                           json={"email_address": f"{local}@{taken}"})
    assert r.status_code == 200, r.text
    theirs = await create_persona(client, mallory)
    r = await client.patch(f"/api/v1/personas/{theirs['id']}", headers=mallory,
                           json={"email_address": f"{local}@{twin}"})
    assert r.status_code == 409, (r.status_code, r.text)
