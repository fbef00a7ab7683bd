"""Outbound persona mail and RFC 2047 encoded words: Python's email package (3.11 before
3.11.10) decodes an encoded word in a header value and writes a decoded CR LF out raw, a
header line of the sender's choosing (the API and a relay on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from roost.agents.mailserver import MailServer
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import Headers
from tests.agents.test_mail import (  # noqa: F401
    SENDER,
    address,
    emails_of,
    listener,
    mail_cfg,
    make_persona,
    relay_factory,
    smtp_raw,
)

BODY: dict[str, Any] = {"to": ["bob@example.org"], "subject": "Hi", "body": "x"}


async def setup(database: Database, owner: uuid.UUID, test_settings: Settings,
                relay_factory: Callable[..., Any]) -> tuple[Any, Any]:  # noqa: F811
    persona = await make_persona(database, owner, address())
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    return persona, relay


async def test_an_encoded_word_subject_injects_no_header(
    client: httpx.AsyncClient, database: Database,
    relay_factory: Callable[..., Any], test_settings: Settings,  # noqa: F811
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A subject with no line break but an encoded word that decodes to CR LF
    (`=?utf-8?q?a=0D=0ABcc=3A_evil=40x=2Eexample?=`) was accepted (201) and the relay got a
    real `Bcc: evil@x.example` header line: it is a 422 naming the subject, nothing sent."""
    owner, headers = user
    persona, relay = await setup(database, owner, test_settings, relay_factory)
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={**BODY, "subject": "=?utf-8?q?a=0D=0ABcc=3A_evil=40x=2Eexample?="})
    assert resp.status_code == 422, resp.text
    assert "subject decodes to a line break" in resp.json()["detail"], resp.text
    assert relay.received == []
    assert await emails_of(database, persona.id) == []


async def test_a_reply_to_a_hostile_message_id_injects_no_header(
    client: httpx.AsyncClient, database: Database, listener: MailServer,  # noqa: F811
    relay_factory: Callable[..., Any], test_settings: Settings,  # noqa: F811
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A stranger mails the persona with `Message-ID: <=?utf-8?q?a=0D=0ABcc=3A_...?=@x.org>`
    (a valid token: no white space or control character, so it is stored). Answering it
    (`in_reply_to`, as a user or the mail agent) put the id in In-Reply-To and References,
    whose decoding gave the relay `Bcc:` and `X-Evil:` lines of the stranger's: such ids
    are left out of the reply's headers (it is still sent and kept in the thread)."""
    owner, headers = user
    persona, relay = await setup(database, owner, test_settings, relay_factory)
    to = str(persona.email_address)
    raw = (f"From: {SENDER}\r\nTo: {to}\r\nSubject: hi\r\n"
           "Message-ID: <=?utf-8?q?a=0D=0ABcc=3A_evil=40x=2Eexample?=@x.org>\r\n"
           "References: <=?utf-8?q?a=0D=0AX-Evil=3A_1?=@x.org>\r\n\r\nbody\r\n").encode()
    code, _ = await smtp_raw(listener.port, to, raw)
    assert code == 250
    [inbound] = await emails_of(database, persona.id)
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={**BODY, "in_reply_to": str(inbound.id)})
    assert resp.status_code == 201, resp.text
    data = relay.received[-1][2]
    assert b"\r\nBcc:" not in data and b"\r\nX-Evil:" not in data, data[:400]
    assert relay.parsed()["In-Reply-To"] is None and relay.parsed()["References"] is None
    assert resp.json()["in_reply_to"] == inbound.message_id
