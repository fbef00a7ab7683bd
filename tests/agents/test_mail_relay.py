"""Sending persona mail through relays that misbehave (a scripted relay on loopback: one
that stops answering, one that refuses or drops the goodbye after queueing the message)
and to and from internationalized domains (sent in their IDNA form)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from roost.agents.models import Email
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import Headers
from tests.agents.test_mail import address, make_persona, relay_factory  # noqa: F401
from tests.support.loopback import loopback_servers

BODY: dict[str, Any] = {"to": ["bob@example.org"], "subject": "Hi", "body": "x"}


@dataclasses.dataclass
class ScriptedRelay:
    """A line-based SMTP relay on loopback that misbehaves as ``mode`` says: ``silent``
    (no greeting), ``slow_after_data`` (no reply to the message), ``quit_421`` (refuses
    the QUIT), ``close_after_250`` (hangs up once the message is queued)."""

    mode: str
    port: int = 0
    messages: list[bytes] = dataclasses.field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "silent":
                await asyncio.sleep(30)
                return
            writer.write(b"220 relay.example.org ESMTP\r\n")
            while True:
                await writer.drain()
                line = await reader.readline()
                if not line:
                    return
                verb = line.decode("ascii", "replace").split(" ", 1)[0].strip().upper()
                if verb == "EHLO":
                    writer.write(b"250-relay.example.org\r\n250 8BITMIME\r\n")
                elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                    writer.write(b"250 OK\r\n")
                elif verb == "DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    chunks: list[bytes] = []
                    while (chunk := await reader.readline()) != b".\r\n":
                        if not chunk:
                            return
                        chunks.append(chunk)
                    self.messages.append(b"".join(chunks))
                    if self.mode == "slow_after_data":
                        await asyncio.sleep(30)
                        return
                    writer.write(b"250 2.0.0 queued\r\n")
                    if self.mode == "close_after_250":
                        await writer.drain()
                        return
                elif verb == "QUIT":
                    writer.write(b"421 4.4.2 bye\r\n" if self.mode == "quit_421"
                                 else b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 unknown\r\n")
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


@pytest.fixture
async def scripted_relay() -> AsyncIterator[Callable[[str], Any]]:
    async with loopback_servers() as serve:
        async def start(mode: str) -> ScriptedRelay:
            relay = ScriptedRelay(mode=mode)
            relay.port = await serve(asyncio.start_server(relay.handle, "127.0.0.1", 0))
            return relay

        yield start


async def outbound_rows(database: Database, persona_id: uuid.UUID) -> list[Email]:
    async with database.transaction() as session:
        return list((await session.scalars(select(Email).where(
            Email.persona_id == persona_id, Email.direction == "outbound"))).all())


async def persona_sending_through(database: Database, owner: uuid.UUID,
                                  test_settings: Settings, relay: ScriptedRelay,
                                  timeout_s: float) -> uuid.UUID:
    persona = await make_persona(database, owner, address())
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    test_settings.smtp_timeout_s = timeout_s
    return persona.id


# --- relays that misbehave ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["silent", "slow_after_data"])
async def test_a_relay_that_stops_answering_is_a_gateway_timeout(
    mode: str, client: httpx.AsyncClient, database: Database,
    scripted_relay: Callable[[str], Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A relay that takes the connection but sends no greeting, or no reply to the
    message, within ROOST_SMTP_TIMEOUT_S: 504 (smtplib reports the read timeout as a
    disconnection), the row deleted."""
    relay = await scripted_relay(mode)
    pid = await persona_sending_through(database, user[0], test_settings, relay, timeout_s=1)
    resp = await client.post(f"/api/v1/personas/{pid}/emails", json=BODY, headers=user[1])
    assert resp.status_code == 504, resp.text
    assert "did not answer within 1 s" in resp.json()["detail"]
    assert await outbound_rows(database, pid) == []


@pytest.mark.parametrize("mode", ["quit_421", "close_after_250"])
async def test_a_message_the_relay_queued_is_sent_whatever_its_goodbye(
    mode: str, client: httpx.AsyncClient, database: Database,
    scripted_relay: Callable[[str], Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """The relay answered 250 to the message, then refused the QUIT or hung up: the mail
    is sent (201, the row kept with sent_at), so nobody retries and mails it twice."""
    relay = await scripted_relay(mode)
    pid = await persona_sending_through(database, user[0], test_settings, relay, timeout_s=3)
    resp = await client.post(f"/api/v1/personas/{pid}/emails", json=BODY, headers=user[1])
    assert resp.status_code == 201, resp.text
    assert len(relay.messages) == 1
    [row] = await outbound_rows(database, pid)
    assert row.sent_at is not None and str(row.id) == resp.json()["id"]


async def test_an_inactive_persona_sends_no_mail(
    client: httpx.AsyncClient, database: Database,
    scripted_relay: Callable[[str], Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """An inactive persona's mailbox is off both ways: inbound mail to it is refused, and
    sending from it is a 409 saying how to turn it on; nothing stored, nothing relayed."""
    relay = await scripted_relay("quit_421")
    pid = await persona_sending_through(database, user[0], test_settings, relay, timeout_s=3)
    off = await client.patch(f"/api/v1/personas/{pid}", json={"is_active": False},
                             headers=user[1])
    assert off.status_code == 200, off.text
    resp = await client.post(f"/api/v1/personas/{pid}/emails", json=BODY, headers=user[1])
    assert resp.status_code == 409, resp.text
    assert "inactive" in resp.json()["detail"]
    assert relay.messages == [] and await outbound_rows(database, pid) == []
    on = await client.patch(f"/api/v1/personas/{pid}", json={"is_active": True},
                            headers=user[1])
    assert on.status_code == 200, on.text
    resp = await client.post(f"/api/v1/personas/{pid}/emails", json=BODY, headers=user[1])
    assert resp.status_code == 201, resp.text
    assert len(relay.messages) == 1


# --- internationalized domains --------------------------------------------------------------


async def test_idn_domains_are_sent_in_their_idna_form(
    client: httpx.AsyncClient, database: Database,
    relay_factory: Callable[..., Any], test_settings: Settings,  # noqa: F811
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A persona address with a non-ASCII domain (the API accepts it) sends: the domain
    in its IDNA 2008 form in the Message-ID, EHLO, envelope and headers (any relay takes
    it, no SMTPUTF8 needed); the stored row keeps the addresses as written."""
    owner, headers = user
    persona = await make_persona(database, owner, None)
    addr = f"iris-{uuid.uuid4().hex[:6]}@exämple.org"
    patched = await client.patch(f"/api/v1/personas/{persona.id}",
                                 json={"email_address": addr}, headers=headers)
    assert patched.status_code == 200, patched.text
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={**BODY, "cc": ["carl@straße.de"]})
    assert resp.status_code == 201, resp.text
    local = addr.partition("@")[0]
    out = resp.json()
    assert out["from_email"] == addr and out["cc"] == "carl@straße.de"
    assert out["message_id"].endswith("@xn--exmple-cua.org>")
    mail_from, rcpt, _ = relay.received[-1]
    # IDNA 2008: ß stays a letter of its own (IDNA 2003 made it "strasse.de").
    assert (mail_from, rcpt) == (f"{local}@xn--exmple-cua.org",
                                 ["bob@example.org", "carl@xn--strae-oqa.de"])
    got = relay.parsed()
    assert got["From"].addresses[0].addr_spec == f"{local}@xn--exmple-cua.org"
    assert got["Cc"] == "carl@xn--strae-oqa.de"
    assert got["Message-ID"] == out["message_id"]

    # A domain that has no IDNA form: a clear 422, nothing stored or sent.
    bad = await client.patch(f"/api/v1/personas/{persona.id}",
                             json={"email_address": f"{local}@bü..cher.org"}, headers=headers)
    assert bad.status_code == 200, bad.text
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", json=BODY,
                             headers=headers)
    assert resp.status_code == 422 and "bü..cher.org" in resp.json()["detail"], resp.text
    assert len(await outbound_rows(database, persona.id)) == 1
    assert len(relay.received) == 1
