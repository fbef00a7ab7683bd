"""Outbound mail's headers as written (docs/agents-mail.md, "Sending mail"): long ones are
not folded at 78 characters, where Python's email package mangled them: a long Message-ID
in In-Reply-To or References became encoded words (the correspondent's client could not
thread the reply), a long persona name lost its quotes (a comma split the sender in two;
a "<x@y>" in it became the sender a reader sees).  The written From, To and Cc read back
as set; a recipient's encoded word is refused."""
# ruff: noqa: F811  (fixtures imported from tests/agents are parameters of the tests)

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from roost.agents.mailserver import MailServer
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import Headers, test_settings, user  # noqa: F401
from tests.agents.test_mail import (  # noqa: F401
    SENDER,
    address,
    emails_of,
    listener,
    mail_cfg,
    make_persona,
    message,
    relay_factory,
    smtp_send,
)

# A Message-ID as Gmail and Outlook write them: longer than one 78-character header line.
LONG_ID = "<CAJx" + "q7Zk=Lr-9" * 9 + "@mail.gmail.com>"


def _raw_header(raw: bytes, name: str) -> str:
    """The header ``name`` of ``raw`` unfolded, exactly as written (no RFC 2047 decoding)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace").replace("\r\n", "\n")
    unfolded = head.replace("\n ", " ").replace("\n\t", " ")
    for line in unfolded.split("\n"):
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} header in {head!r}")


async def _reply_to_inbound(client: httpx.AsyncClient, database: Database,
                            listener: MailServer, relay_factory: Callable[..., Any],
                            test_settings: Settings, owner: uuid.UUID, headers: Headers,
                            inbound_headers: dict[str, str]) -> tuple[Any, bytes]:
    persona = await make_persona(database, owner, address())
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    await asyncio.wait_for(smtp_send(listener.port, message(
        str(persona.email_address), **inbound_headers), [str(persona.email_address)]), 30)
    [inbound] = await emails_of(database, persona.id)
    sent = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers, json={
        "to": [SENDER], "subject": "Re: Hello", "body": "Fine.", "in_reply_to": str(inbound.id)})
    assert sent.status_code == 201, sent.text
    return inbound, relay.received[-1][2]


async def test_a_reply_to_a_long_message_id_carries_it_verbatim_in_in_reply_to(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    relay_factory: Callable[..., Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A reply to a Gmail message (its Message-ID ~100 characters) carries
    ``In-Reply-To: <that id>`` as it is, not encoded words (which are no msg-id)."""
    owner, headers = user
    inbound, raw = await _reply_to_inbound(client, database, listener, relay_factory,
                                           test_settings, owner, headers,
                                           {"message_id": LONG_ID})
    assert inbound.message_id == LONG_ID
    assert _raw_header(raw, "In-Reply-To") == LONG_ID, raw.split(b"\r\n\r\n")[0]


async def test_a_reply_in_a_thread_with_a_long_root_id_keeps_references_verbatim(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    relay_factory: Callable[..., Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """In a thread whose root id is long, the reply's References lists the root and the
    answered ids as they are, not encoded words."""
    owner, headers = user
    _, raw = await _reply_to_inbound(client, database, listener, relay_factory,
                                     test_settings, owner, headers,
                                     {"message_id": "<short@example.org>",
                                      "In_Reply_To": LONG_ID, "References": LONG_ID})
    assert _raw_header(raw, "References").split() == [LONG_ID, "<short@example.org>"], \
        raw.split(b"\r\n\r\n")[0]


async def _from_header_for_name(client: httpx.AsyncClient, database: Database,
                                relay_factory: Callable[..., Any], test_settings: Settings,
                                owner: uuid.UUID, headers: Headers, name: str) -> tuple[str, Any]:
    persona = await make_persona(database, owner, address())
    renamed = await client.patch(f"/api/v1/personas/{persona.id}", json={"name": name},
                                 headers=headers)
    assert renamed.status_code == 200, renamed.text
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    sent = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={"to": ["bob@example.org"], "subject": "Hi", "body": "x"})
    assert sent.status_code == 201, sent.text
    return str(persona.email_address), relay.parsed()["From"]


async def test_a_long_persona_name_with_a_comma_stays_one_sender(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """A persona named like a company ("..., Acme Industries Worldwide Ltd", 86 characters)
    sends mail whose From reads as that name and the persona's address, one sender."""
    owner, headers = user
    name = "Customer Support Desk of Northern Hemisphere Operations, Acme Industries Worldwide Ltd"
    own, got = await _from_header_for_name(client, database, relay_factory, test_settings,
                                           owner, headers, name)
    assert [(a.display_name, a.addr_spec) for a in got.addresses] == [(name, own)], \
        [(a.display_name, a.addr_spec) for a in got.addresses]


async def test_a_persona_name_cannot_make_mail_look_sent_by_another_address(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """An editor names the persona "<long text> <ceo@bank.example>": the name stays a
    label; the recipient's client reads the persona's address as the sender."""
    owner, headers = user
    name = "Accounts payable team of the treasury department (urgent) <ceo@bank.example>"
    own, got = await _from_header_for_name(client, database, relay_factory, test_settings,
                                           owner, headers, name)
    assert [a.addr_spec for a in got.addresses] == [own], \
        [(a.display_name, a.addr_spec) for a in got.addresses]


async def test_a_recipient_s_encoded_word_cannot_write_another_address_in_to(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """A recipient whose local part is an RFC 2047 encoded word (valid atext, no line
    break) is refused (422 naming `to`), nothing sent: it was delivered to one address
    while the To header read "ceo@bank.example"."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    sent = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers, json={
        "to": ["=?utf-8?q?ceo=40bank.example=2C?=@example.org"], "subject": "Hi",
        "body": "x"})
    assert sent.status_code == 422 and "to" in sent.text, sent.text
    assert relay.received == []


async def test_a_reply_to_a_message_id_too_long_to_write_leaves_it_out(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    relay_factory: Callable[..., Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A Message-ID of 998 bytes (accepted inbound) cannot be written on a header line of
    its own (999 characters with the fold's space): the reply leaves it out, as an id
    with ``=?``, instead of writing it as encoded words, which are no msg-id."""
    owner, headers = user
    bare = "a" * 990 + "@x.org"  # written without its angle brackets: read as <bare>
    long_id = f"<{bare}>"
    assert len(long_id.encode()) == 998
    inbound, raw = await _reply_to_inbound(client, database, listener, relay_factory,
                                           test_settings, owner, headers,
                                           {"message_id": bare})
    assert inbound.message_id == long_id
    head = raw.split(b"\r\n\r\n")[0]
    assert b"=?" not in head and b"In-Reply-To" not in head, head[:400]
