"""Persona mail threading against forged Message-IDs, and attachment downloads' names."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from roost.agents import mail
from roost.agents.models import Attachment, Email
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import Headers
from tests.agents.test_mail import (  # noqa: F401
    address,
    make_persona,
    message,
    relay_factory,
)


@pytest.fixture
def mail_cfg(test_settings: Settings) -> mail.MailConfig:
    return mail.MailConfig.from_settings(test_settings)


async def deliver(database: Database, cfg: mail.MailConfig, msg: EmailMessage | bytes,
                  to: list[str]) -> list[mail.Received]:
    raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=policy.SMTP)
    return await mail.receive(database, cfg, raw, to)


async def test_forged_message_id_of_an_outbound_mail_does_not_steal_its_replies(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers], relay_factory: Callable[..., Any],  # noqa: F811
    test_settings: Settings,
) -> None:
    """A reply to the persona's own sent mail joins that sent mail's thread, whatever a
    third party mailed in later under the same Message-ID."""
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    owner, headers = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    [first] = await deliver(database, mail_cfg, message(to, message_id="<root@bob.example>"),
                            [to])
    sent = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={"to": ["bob@example.org", "eve@example.org"],
                                   "subject": "Re: Hello", "body": "answer",
                                   "in_reply_to": str(first.email_id)})
    assert sent.status_code == 201, sent.text
    out = sent.json()
    assert out["thread_id"] == "<root@bob.example>"
    # Eve, a recipient, mails the persona a message carrying the sent mail's Message-ID
    # and a References of her own choosing (stored: another direction, so no duplicate).
    await deliver(database, mail_cfg, message(to, subject="hijack", message_id=out["message_id"],
                                              References="<evil@eve.example>"), [to])
    # Bob answers the persona's mail.
    [reply] = await deliver(database, mail_cfg, message(
        to, subject="Re: Re: Hello", message_id="<bob2@bob.example>",
        In_Reply_To=out["message_id"]), [to])
    async with database.transaction() as session:
        row = await session.get(Email, reply.email_id)
        assert row is not None
        thread = row.thread_id
    assert thread == "<root@bob.example>"  # not the thread Eve's copy names


async def test_a_plain_ascii_attachment_name_is_offered_as_filename(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """docs/agents-mail.md: filename* only when the name is not plain ASCII; an ASCII
    name with a space still gets a filename= that every client understands."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    msg = message(to, message_id=f"<{uuid.uuid4().hex}@example.org>")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf",
                       filename="Q3 report (final).pdf")
    [got] = await deliver(database, mail_cfg, msg, [to])
    async with database.transaction() as session:
        aid = await session.scalar(select(Attachment.id).where(
            Attachment.email_id == got.email_id))
    resp = await client.get(f"/api/v1/attachments/{aid}/content", headers=headers)
    assert resp.status_code == 200
    disposition = resp.headers["content-disposition"]
    assert 'filename="' in disposition, disposition


async def ten_byte_attachment(database: Database, cfg: mail.MailConfig,
                              owner: uuid.UUID) -> uuid.UUID:
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    msg = message(to, message_id=f"<{uuid.uuid4().hex}@example.org>")
    msg.add_attachment(b"0123456789", maintype="application", subtype="pdf",
                       filename="a.pdf")
    [got] = await mail.receive(database, cfg, msg.as_bytes(policy=policy.SMTP), [to])
    async with database.transaction() as session:
        aid = await session.scalar(select(Attachment.id).where(
            Attachment.email_id == got.email_id))
    assert aid is not None
    return aid


async def test_a_range_in_an_unknown_unit_is_ignored(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """RFC 9110 section 14.2: a server MUST ignore a Range in a unit it does not know:
    `Range: chars=0-1` gets the whole file (200; it was a 400 in plain text)."""
    owner, headers = user
    aid = await ten_byte_attachment(database, mail_cfg, owner)
    resp = await client.get(f"/api/v1/attachments/{aid}/content",
                            headers={**headers, "Range": "chars=0-1"})
    assert resp.status_code == 200, (resp.status_code, resp.text)
    assert resp.content == b"0123456789"


@pytest.mark.parametrize("rng", ["bytes=5-2", "bytes=abc", "bytes=", "bytes=100-200",
                                 "bytes=-0"])
async def test_a_refused_range_is_a_problem_document(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers], rng: str,
) -> None:
    """A malformed Range (`bytes=5-2`, `bytes=abc`, `bytes=`) is ignored (the whole file)
    and an unsatisfiable one (`bytes=100-200` of a 10-byte file, `bytes=-0`) is a 416
    problem naming the size; both were text/plain answers from Starlette."""
    owner, headers = user
    aid = await ten_byte_attachment(database, mail_cfg, owner)
    resp = await client.get(f"/api/v1/attachments/{aid}/content",
                            headers={**headers, "Range": rng})
    if rng in ("bytes=100-200", "bytes=-0"):
        assert resp.status_code == 416, (rng, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.headers.get("content-range") == "bytes */10"
    else:
        assert resp.status_code == 200 and resp.content == b"0123456789", (rng, resp.text)


async def test_a_satisfiable_range_is_still_served_in_part(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers],
) -> None:
    owner, headers = user
    aid = await ten_byte_attachment(database, mail_cfg, owner)
    resp = await client.get(f"/api/v1/attachments/{aid}/content",
                            headers={**headers, "Range": "bytes=2-4"})
    assert resp.status_code == 206 and resp.content == b"234", resp.text
    assert resp.headers["content-range"] == "bytes 2-4/10"
