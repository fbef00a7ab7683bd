"""The personas' mail over real sockets: Roost's SMTP listener receiving mail sent with
smtplib (plain, multipart, replies, refusals), the attachments on disk, runs started by
mail, sending through a local relay (aiosmtpd), and another tenant seeing nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import smtplib
import uuid
from collections.abc import AsyncIterator, Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from fastapi import FastAPI
from jsonschema import ValidationError, validate
from pydantic import SecretStr
from sqlalchemy import func, select, text, update

from roost.agents import attachments, mail, mail_startup
from roost.agents import jobs as agent_jobs
from roost.agents.mail_schemas import EmailSend
from roost.agents.mailserver import MailServer
from roost.agents.models import Attachment, Email, Persona, PersonaMember, Run
from roost.config import Settings, parse_listen, parse_relay_url
from roost.db.engine import Database
from roost.errors import Unprocessable
from roost.keyfiles import KeyMaterial
from roost.principal import Principal
from roost.tasks.worker import Worker
from roost.tools.models import Tool
from tests.agents.conftest import Headers, make_agent, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.loopback import loopback_servers
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.support.pg import PgTestServer
from tests.support.server import free_port, roost_server, serve_env

SENDER = "alice@example.org"


# --- helpers ------------------------------------------------------------------------------


async def make_persona(database: Database, owner: uuid.UUID, address: str | None, *,
                       active: bool = True, name: str = "Iris") -> Persona:
    async with database.transaction() as session:
        persona = Persona(owner_id=owner, name=name, email_address=address, is_active=active)
        session.add(persona)
        await session.flush()
        await session.refresh(persona)
    return persona


async def mailing_agent(database: Database, owner: uuid.UUID,
                        relay_factory: Callable[..., Any], mail_cfg: mail.MailConfig,
                        monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any]:
    """A new persona of ``owner`` with an address and an agent allowed send_email, the
    in-process worker's send_email going out through a new loopback relay:
    (persona, agent, relay)."""
    persona = await make_persona(database, owner, address())
    agent = await make_agent(database, owner, persona_id=persona.id,
                             tool_permissions=["send_email"])
    relay = await relay_factory()
    cfg = dataclasses.replace(mail_cfg, relay=parse_relay_url(f"smtp://127.0.0.1:{relay.port}"))
    assert agent_jobs.env_override is not None
    monkeypatch.setattr(agent_jobs, "env_override", dataclasses.replace(
        agent_jobs.env_override, hosted=mail.builtin_tools(cfg)))
    return persona, agent, relay


def address() -> str:
    return f"iris-{uuid.uuid4().hex[:8]}@roost.example.org"


def message(to: str, *, subject: str = "Hello", body: str = "Hi Iris,\nhow are you?",
            message_id: str | None = None, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Alice <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


async def smtp_send(port: int, raw: bytes | EmailMessage, to: list[str],
                    sender: str = SENDER) -> dict[str, Any]:
    """smtplib (blocking) in a thread: the listener runs on this test's loop."""
    data = raw.as_bytes(policy=policy.SMTP) if isinstance(raw, EmailMessage) else raw

    def go() -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            return dict(client.sendmail(sender, to, data))

    return await asyncio.to_thread(go)


async def smtp_raw(port: int, to: str, data: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA without the SIZE declaration: the listener sees every byte."""
    def go() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            client.mail(SENDER)
            client.rcpt(to)
            return client.data(data)

    return await asyncio.to_thread(go)


async def emails_of(database: Database, persona_id: uuid.UUID) -> list[Email]:
    async with database.transaction() as session:
        return list((await session.scalars(select(Email).where(
            Email.persona_id == persona_id).order_by(Email.created_at))).all())


@pytest.fixture
def mail_cfg(test_settings: Settings) -> mail.MailConfig:
    return dataclasses.replace(mail.MailConfig.from_settings(test_settings),
                               max_message_bytes=256 * 1024, max_attachment_bytes=64 * 1024)


@pytest.fixture
async def listener(database: Database, mail_cfg: mail.MailConfig) -> AsyncIterator[MailServer]:
    server = MailServer(database, mail_cfg, "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Relay:
    """A mail relay on loopback (aiosmtpd): records what it is given, refuses the
    recipients in ``refuse``, optionally requires a login."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.refuse: set[str] = set()
        self.logins: list[bytes] = []
        self.port = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos),
                              bytes(envelope.original_content or b"")))
        return "250 OK queued"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        self.logins.append(bytes(auth_data.login))
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    def parsed(self, index: int = -1) -> EmailMessage:
        msg = BytesParser(policy=policy.default).parsebytes(self.received[index][2])
        assert isinstance(msg, EmailMessage)
        return msg


@pytest.fixture
async def relay_factory() -> AsyncIterator[Callable[..., Any]]:
    async with loopback_servers() as serve:
        async def start(*, auth: bool = False) -> Relay:
            relay = Relay()

            def protocol() -> SMTP:
                if auth:
                    return SMTP(relay, hostname="relay.example.org", auth_required=True,
                                auth_require_tls=False, authenticator=relay.authenticate)
                return SMTP(relay, hostname="relay.example.org")

            relay.port = await serve(
                asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0))
            return relay

        yield start


# --- inbound ------------------------------------------------------------------------------


async def test_plain_mail_is_stored_and_readable_by_the_owner(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    owner, headers = user
    persona = await make_persona(database, owner, address())
    refused = await smtp_send(listener.port, message(str(persona.email_address),
                                                     message_id="<first@example.org>"),
                              [str(persona.email_address).upper()])  # case-insensitive
    assert refused == {}
    [email] = await emails_of(database, persona.id)
    assert (email.direction, email.from_email, email.subject) == ("inbound", SENDER, "Hello")
    assert email.to_email == persona.email_address and email.bcc is None
    assert email.body_text == "Hi Iris,\nhow are you?\n" and email.body_html is None
    assert (email.message_id, email.thread_id) == ("<first@example.org>", "<first@example.org>")
    assert email.user_id == owner and email.received_at is not None and email.run_id is None
    assert email.size_bytes and email.size_bytes > 100

    page = (await client.get(f"/api/v1/personas/{persona.id}/emails", headers=headers)).json()
    assert [e["id"] for e in page["items"]] == [str(email.id)]
    detail = (await client.get(f"/api/v1/emails/{email.id}", headers=headers)).json()
    assert detail["body_text"].startswith("Hi Iris") and detail["attachments"] == []
    async with database.transaction() as session:
        audited = await session.scalar(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'agent.email.receive' "
            "AND resource_id = :id"), {"id": str(email.id)})
    assert audited == 1

    # The same message again (a sender's retry): still one copy.
    await smtp_send(listener.port, message(str(persona.email_address),
                                           message_id="<first@example.org>"),
                    [str(persona.email_address)])
    assert len(await emails_of(database, persona.id)) == 1


async def test_multipart_mail_keeps_bodies_and_attachments_on_disk(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    user: tuple[uuid.UUID, Headers], test_settings: Settings,
) -> None:
    owner, headers = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    msg = message(to, subject="Report", body="See attached.")
    html = '<p>See <b>attached</b>.</p><script>alert("x")</script>'
    msg.add_alternative(html, subtype="html")
    report = b"%PDF-1.4 not really a pdf\x00\x01\x02"
    msg.add_attachment(report, maintype="application", subtype="pdf", filename="report.pdf")
    msg.add_attachment(b"root:x:0:0", maintype="application", subtype="octet-stream",
                       filename="../../etc/passwd")
    msg.add_attachment(report, maintype="application", subtype="pdf", filename="HOSTILE.pdf")
    msg.add_attachment(b"hidden", maintype="text", subtype="plain", filename="....")
    # RFC 2231 lets a name carry what no header may: separators, quotes, CR LF.
    raw = msg.as_bytes(policy=policy.SMTP).replace(
        b'filename="HOSTILE.pdf"', b"filename*=utf-8''..%2F..%5Cevil%22%0D%0Aname%3B.pdf")
    await smtp_send(listener.port, raw, [to])

    [email] = await emails_of(database, persona.id)
    assert email.body_text == "See attached.\n"
    assert email.body_html == html + "\n"  # kept as sent, never rendered
    detail = (await client.get(f"/api/v1/emails/{email.id}", headers=headers)).json()
    files = detail["attachments"]
    assert [f["name"] for f in files] == ["report.pdf", "passwd", "evil_name_.pdf",
                                          "attachment.txt"]
    assert [f["mime_type"] for f in files] == ["application/pdf", "application/octet-stream",
                                               "application/pdf", "text/plain"]
    digest = hashlib.sha256(report).hexdigest()
    assert files[0]["sha256"] == files[2]["sha256"] == digest
    assert files[0]["file_size"] == len(report)
    blob = test_settings.data_dir / "attachments" / digest[:2] / digest
    assert blob.read_bytes() == report
    stored = sorted(p.relative_to(test_settings.data_dir).as_posix()
                    for p in test_settings.data_dir.rglob("*") if p.is_file())
    assert len(stored) == 3 and all(p.startswith("attachments/") for p in stored)  # one blob
    assert not (test_settings.data_dir.parent / "etc").exists()

    got = await client.get(f"/api/v1/attachments/{files[0]['id']}/content", headers=headers)
    assert got.status_code == 200 and got.content == report
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"] == (
        'attachment; filename="report.pdf"; filename*=UTF-8\'\'report.pdf')
    assert got.headers["x-content-type-options"] == "nosniff"
    hostile = await client.get(f"/api/v1/attachments/{files[2]['id']}/content",
                               headers=headers)
    assert hostile.headers["content-disposition"].startswith(
        'attachment; filename="evil_name_.pdf"; filename*=UTF-8\'\'')


async def test_replies_join_their_thread(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    owner, headers = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    await smtp_send(listener.port, message(to, message_id="<a@example.org>"), [to])
    await smtp_send(listener.port, message(to, subject="Re: Hello", message_id="<b@example.org>",
                                           In_Reply_To="<a@example.org>",
                                           References="<a@example.org>"), [to])
    # Answers b without References: the persona's copy of b names the thread.
    await smtp_send(listener.port, message(to, subject="Re: Re: Hello",
                                           message_id="<c@example.org>",
                                           In_Reply_To="<b@example.org>"), [to])
    # A thread the persona joins late: its root is the first of References.
    await smtp_send(listener.port, message(to, subject="Fwd", message_id="<z@example.org>",
                                           In_Reply_To="<y@example.org>",
                                           References="<x@example.org> <y@example.org>"), [to])
    # No Message-ID at all: one is given, and the message is its own thread.
    await smtp_send(listener.port, message(to, subject="anonymous"), [to])
    rows = {e.subject: e for e in await emails_of(database, persona.id)}
    assert rows["Re: Hello"].in_reply_to == "<a@example.org>"
    assert {s: rows[s].thread_id for s in ("Hello", "Re: Hello", "Re: Re: Hello", "Fwd")} == {
        "Hello": "<a@example.org>", "Re: Hello": "<a@example.org>",
        "Re: Re: Hello": "<a@example.org>", "Fwd": "<x@example.org>"}
    anonymous = rows["anonymous"]
    assert anonymous.message_id and anonymous.message_id.endswith("@roost.invalid>")
    assert anonymous.thread_id == anonymous.message_id

    thread = (await client.get(f"/api/v1/personas/{persona.id}/emails",
                               params={"thread_id": "<a@example.org>"}, headers=headers)).json()
    assert [e["subject"] for e in thread["items"]] == ["Re: Re: Hello", "Re: Hello", "Hello"]
    first = (await client.get(f"/api/v1/personas/{persona.id}/emails",
                              params={"limit": 2, "direction": "inbound"}, headers=headers)).json()
    rest = (await client.get(f"/api/v1/personas/{persona.id}/emails",
                             params={"limit": 2, "cursor": first["next_cursor"]},
                             headers=headers)).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 2


async def test_unknown_and_inactive_mailboxes_are_refused(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
) -> None:
    owner, _ = user
    persona = await make_persona(database, owner, address())
    asleep = await make_persona(database, owner, address(), active=False)
    for nobody in ("nobody@roost.example.org", str(asleep.email_address)):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await smtp_send(listener.port, message(nobody), [nobody])
        assert refused.value.recipients[nobody][0] == 550
    # One known and one unknown recipient: the known one gets it, the other is refused.
    known = str(persona.email_address)
    result = await smtp_send(listener.port, message(known), [known, "nobody@roost.example.org"])
    assert result["nobody@roost.example.org"][0] == 550
    assert len(await emails_of(database, persona.id)) == 1
    assert await emails_of(database, asleep.id) == []


async def test_one_message_to_two_owners_personas_is_each_owner_s(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers],
) -> None:
    (owner, headers), (other, other_headers) = user, other_user
    mine = await make_persona(database, owner, address())
    theirs = await make_persona(database, other, address())
    to = [str(mine.email_address), str(theirs.email_address)]
    msg = message(", ".join(to), message_id="<both@example.org>")
    msg.add_attachment(b"shared", maintype="text", subtype="plain", filename="s.txt")
    await smtp_send(listener.port, msg, to)
    [a], [b] = await emails_of(database, mine.id), await emails_of(database, theirs.id)
    assert (a.user_id, b.user_id) == (owner, other) and a.id != b.id
    assert (a.bcc, b.bcc) == (None, None)
    mine_seen = (await client.get(f"/api/v1/emails/{a.id}", headers=headers)).json()
    theirs_seen = (await client.get(f"/api/v1/emails/{b.id}", headers=other_headers)).json()
    assert mine_seen["attachments"][0]["sha256"] == theirs_seen["attachments"][0]["sha256"]
    assert (await client.get(f"/api/v1/emails/{b.id}", headers=headers)).status_code == 404


async def test_oversized_and_malformed_mail_is_refused_and_stored_nowhere(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
    mail_cfg: mail.MailConfig, test_settings: Settings,
) -> None:
    owner, _ = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    huge = message(to, body="x" * (mail_cfg.max_message_bytes + 10))
    with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # SIZE= at MAIL FROM
        await smtp_send(listener.port, huge, [to])
    assert declared.value.smtp_code == 552
    code, _ = await smtp_raw(listener.port, to, huge.as_bytes(policy=policy.SMTP))
    assert code == 552  # counted during DATA

    big = message(to)
    big.add_attachment(b"\x01" * (mail_cfg.max_attachment_bytes + 1), maintype="application",
                       subtype="octet-stream", filename="big.bin")
    code, reply = await smtp_raw(listener.port, to, big.as_bytes(policy=policy.SMTP))
    assert code == 552 and b"big.bin" in reply and b"limit" in reply

    garbled = (f"From: {SENDER}\r\nTo: {to}\r\nthis line is not a header\r\n"
               "Subject: x\r\n\r\nbody\r\n").encode()
    code, reply = await smtp_raw(listener.port, to, garbled)
    assert code == 554 and b"not a header" in reply
    no_from = f"To: {to}\r\nSubject: who?\r\n\r\nbody\r\n".encode()
    code, reply = await smtp_raw(listener.port, to, no_from)
    assert code == 554 and b"From" in reply
    two_from = f"From: {SENDER}\r\nFrom: b@example.org\r\nTo: {to}\r\n\r\nx\r\n".encode()
    code, _ = await smtp_raw(listener.port, to, two_from)
    assert code == 554

    assert await emails_of(database, persona.id) == []
    assert not (test_settings.data_dir / "attachments").exists()


@pytest.mark.parametrize("header", [
    b"From: m\xffallory@example.org\r\n",
    b"From: <m\x00allory@example.org>\r\n",
], ids=["invalid-utf8", "nul"])
async def test_a_from_address_with_nul_or_invalid_utf8_is_malformed(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers], header: bytes,
) -> None:
    """No valid From address: 554 at once, not 451 (the sender would retry for days)."""
    owner, _ = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    code, reply = await smtp_raw(listener.port, to,
                                 header + f"To: {to}\r\nSubject: hi\r\n\r\nbody\r\n".encode())
    assert code == 554 and b"From" in reply
    assert await emails_of(database, persona.id) == []


async def test_a_utf8_from_address_is_stored_as_text(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
) -> None:
    """An internationalized sender (RFC 6532: raw UTF-8 in the header) is a valid From."""
    owner, _ = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    raw = f"From: M\u00e4llory <m\u00e4llory@example.org>\r\nTo: {to}\r\n\r\nx\r\n".encode()
    code, _ = await smtp_raw(listener.port, to, raw)
    assert code == 250
    [email] = await emails_of(database, persona.id)
    assert email.from_email == "m\u00e4llory@example.org"


@pytest.mark.parametrize("header", [b"Message-ID", b"In-Reply-To", b"References"])
async def test_a_message_id_with_nul_is_no_message_id(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
    mail_cfg: mail.MailConfig, header: bytes,
) -> None:
    """A NUL in a Message-ID, In-Reply-To or References token: the token is ignored and
    the mail stored (with a Message-ID of Roost's when it had none other), never 451."""
    owner, _ = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    raw = (f"From: Mallory <{SENDER}>\r\nTo: {to}\r\n".encode()
           + header + b": <a\x00b@x.org>\r\nSubject: hi\r\n\r\nbody\r\n")
    code, _ = await smtp_raw(listener.port, to, raw)
    assert code == 250
    [email] = await emails_of(database, persona.id)
    assert email.message_id and email.message_id.endswith(
        f"@{mail_cfg.from_domain or 'roost.invalid'}>")
    assert email.in_reply_to is None and email.thread_id == email.message_id


@pytest.mark.parametrize("header", ["Message-ID", "References", "In-Reply-To"])
async def test_a_message_id_too_long_for_its_index_is_no_message_id(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
    mail_cfg: mail.MailConfig, header: str,
) -> None:
    """An id of 985 four-byte characters (~4 KB, under the 996-character syntax limit),
    sent as folded encoded words: past PostgreSQL's btree entry limit, so storing the mail
    failed at every try and the sender was told 451 "try again" for ever.  The id is
    ignored and the mail stored, as with a NUL in it."""
    owner, _ = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    wide = ("<" + "".join(chr(0x20000 + 7 * n) for n in range(985)) + "@x>").encode()
    words = "\r\n ".join("=?utf-8?b?" + base64.b64encode(wide[i:i + 36]).decode() + "?="
                          for i in range(0, len(wide), 36))
    raw = f"From: {SENDER}\r\nTo: {to}\r\nSubject: hi\r\n{header}: {words}\r\n\r\nbody\r\n"
    code, line = await smtp_raw(listener.port, to, raw.encode())
    assert code == 250, line
    [email] = await emails_of(database, persona.id)
    assert email.message_id and email.message_id.endswith(
        f"@{mail_cfg.from_domain or 'roost.invalid'}>")
    assert email.in_reply_to is None and email.thread_id == email.message_id


async def smtp_lines(port: int, lines: list[bytes]) -> list[bytes]:
    """Raw SMTP commands; the last line of each answer (the greeting first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = [await reader.readline()]
    for line in lines:
        writer.write(line + b"\r\n")
        await writer.drain()
        answer = await reader.readline()
        while answer[3:4] == b"-":
            answer = await reader.readline()
        answers.append(answer)
    writer.close()
    await writer.wait_closed()
    return answers


@pytest.mark.parametrize("rcpt", [b"a\x00b@roost.example.org", b"a\xff\xfeb@roost.example.org",
                                  "n\u00f6body@roost.example.org".encode()],
                         ids=["nul", "invalid-utf8", "utf8"])
async def test_a_recipient_with_nul_or_invalid_utf8_is_no_mailbox(
    listener: MailServer, rcpt: bytes,
) -> None:
    """Such an address is nobody's: 550 5.1.1 without a database query, not 451."""
    answers = await smtp_lines(listener.port, [
        b"EHLO x", b"MAIL FROM:<a@example.org> SMTPUTF8", b"RCPT TO:<" + rcpt + b">"])
    assert answers[-2].startswith(b"250") and answers[-1].startswith(b"550 5.1.1"), answers


async def test_mail_to_a_persona_with_a_mail_agent_starts_a_run(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    listener: MailServer, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    persona = await make_persona(database, owner, address())
    agent = await make_agent(database, owner, persona_id=persona.id)
    async with database.transaction() as session:
        await session.execute(update(Persona).where(Persona.id == persona.id)
                              .values(email_agent_id=agent.id))
    stub.script(Reply("Thanks Alice, noted."))
    msg = message(str(persona.email_address), subject="Meeting", body="Can we meet at 3?")
    msg.add_attachment(b"agenda", maintype="text", subtype="plain", filename="agenda.txt")
    await smtp_send(listener.port, msg, [str(persona.email_address)])

    [email] = await emails_of(database, persona.id)
    assert email.run_id is not None
    run = (await client.get(f"/api/v1/runs/{email.run_id}", headers=headers)).json()
    assert (run["source"], run["agent_id"], run["user_id"]) == ("email", str(agent.id), str(owner))
    assert "Subject: Meeting" in run["input"] and "Can we meet at 3?" in run["input"]
    assert f"From: Alice <{SENDER}>" in run["input"] and "agenda.txt (text/plain" in run["input"]
    run = await wait_for_run(client, headers, str(email.run_id))
    assert (run["status"], run["output"]) == ("completed", "Thanks Alice, noted."), run
    seen = stub.requests(path="/v1/chat/completions")
    assert "Can we meet at 3?" in seen[0].body["messages"][-1]["content"]


async def test_a_suspended_owner_s_mail_is_stored_without_a_run(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],
) -> None:
    owner, _ = user
    persona = await make_persona(database, owner, address())
    agent = await make_agent(database, owner, persona_id=persona.id)
    async with database.transaction() as session:
        await session.execute(update(Persona).where(Persona.id == persona.id)
                              .values(email_agent_id=agent.id))
        await session.execute(text("UPDATE users SET status = 'suspended' WHERE id = :id"),
                              {"id": owner})
    await smtp_send(listener.port, message(str(persona.email_address)),
                    [str(persona.email_address)])
    [email] = await emails_of(database, persona.id)
    assert email.run_id is None
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Run)) == 0


async def test_the_listener_runs_in_the_server_start_up(
    app: FastAPI, database: Database, test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    owner, _ = user
    persona = await make_persona(database, owner, address())
    test_settings.smtp_listen = "127.0.0.1:0"
    async with mail_startup.lifespan(app):
        server: MailServer = app.state.mail_server
        await smtp_send(server.port, message(str(persona.email_address)),
                        [str(persona.email_address)])
    assert len(await emails_of(database, persona.id)) == 1
    with pytest.raises(OSError):  # closed at shutdown
        await smtp_send(server.port, message(str(persona.email_address)),
                        [str(persona.email_address)])


@pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["one-process", "workers"])
async def test_roost_serve_receives_mail_on_the_address_it_bound_first(
    args: tuple[str, ...], database: Database, pg_server: PgTestServer, db_name: str,
    open_tmp: Path, test_keys: KeyMaterial, user: tuple[uuid.UUID, Headers],
) -> None:
    """`roost serve` binds ROOST_SMTP_LISTEN before it opens the database (an address in
    use is one line then, tests/test_cli_newcomer.py) and the listener serves on it; under
    --workers the supervisor holds the address and every API process shares it."""
    owner, _ = user
    persona = await make_persona(database, owner, address())
    port = free_port()
    env = serve_env(pg_server, db_name, open_tmp / "data", test_keys,
                    ROOST_SMTP_LISTEN=f"127.0.0.1:{port}")
    with roost_server(env, args=args):
        for n in range(3):  # (under --workers, likely more than one process answers)
            await smtp_send(port, message(str(persona.email_address),
                                          message_id=f"<served-{n}@example.org>"),
                            [str(persona.email_address)])
    assert len(await emails_of(database, persona.id)) == 3


# --- outbound -----------------------------------------------------------------------------


async def test_sending_goes_through_the_relay_and_is_kept(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    relay_factory: Callable[..., Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    owner, headers = user
    persona = await make_persona(database, owner, address())
    body = {"to": ["bob@example.org"], "subject": "Status", "body": "All good."}
    disabled = await client.post(f"/api/v1/personas/{persona.id}/emails", json=body,
                                 headers=headers)
    assert disabled.status_code == 503 and "ROOST_SMTP_RELAY_URL" in disabled.json()["detail"]

    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    sent = await client.post(f"/api/v1/personas/{persona.id}/emails",
                             json={**body, "cc": ["carol@example.org"],
                                   "bcc": ["dave@example.org"]}, headers=headers)
    assert sent.status_code == 201, sent.text
    out = sent.json()
    assert (out["direction"], out["from_email"], out["to_email"]) == (
        "outbound", persona.email_address, "bob@example.org")
    assert out["sent_at"] and out["thread_id"] == out["message_id"]
    mail_from, rcpt, _ = relay.received[-1]
    assert mail_from == persona.email_address
    assert rcpt == ["bob@example.org", "carol@example.org", "dave@example.org"]
    got = relay.parsed()
    assert got["From"] == f"Iris <{persona.email_address}>" and got["Subject"] == "Status"
    assert got["Message-ID"] == out["message_id"] and got["Bcc"] is None
    assert got.get_content().strip() == "All good."

    # A reply to an inbound mail: threaded on both sides.
    await smtp_send(listener.port, message(str(persona.email_address),
                                           message_id="<q@example.org>"),
                    [str(persona.email_address)])
    inbound = next(e for e in await emails_of(database, persona.id) if e.direction == "inbound")
    reply = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers, json={
        "to": [SENDER], "subject": "Re: Hello", "body": "Fine, thanks.",
        "in_reply_to": str(inbound.id)})
    assert reply.status_code == 201, reply.text
    assert reply.json()["thread_id"] == "<q@example.org>"
    assert relay.parsed()["In-Reply-To"] == "<q@example.org>"
    assert relay.parsed()["References"] == "<q@example.org>"
    outbound = (await client.get(f"/api/v1/personas/{persona.id}/emails",
                                 params={"direction": "outbound"}, headers=headers)).json()
    assert len(outbound["items"]) == 2

    # The relay refuses the recipient: an error answer, nothing kept, the failure audited.
    relay.refuse.add("nobody@example.org")
    refused = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                                json={**body, "to": ["nobody@example.org"]})
    assert refused.status_code == 502 and "refused" in refused.json()["detail"]
    async with database.transaction() as session:
        outbound_count = await session.scalar(select(func.count()).select_from(Email).where(
            Email.persona_id == persona.id, Email.direction == "outbound"))
        failures = await session.scalar(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'agent.email.send' AND NOT success"))
    assert (outbound_count, failures) == (2, 1)

    # Header injection and display names are refused before anything is sent.
    for bad in ({**body, "subject": "x\r\nBcc: evil@example.org"},
                {**body, "to": ["Bob <bob@example.org>"]}, {**body, "to": []}):
        resp = await client.post(f"/api/v1/personas/{persona.id}/emails", json=bad,
                                 headers=headers)
        assert resp.status_code == 422, resp.text


async def test_a_persona_name_is_one_line_of_the_sender_header(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """A persona name with a line break or a control character is refused (422); one
    stored before that rule still sends, its white space folded to one line."""
    owner, headers = user
    for name in ("Iris\nBcc: evil@example.org", "Iris\u2028x", "Iris\x07"):
        resp = await client.post("/api/v1/personas", json={"name": name}, headers=headers)
        assert resp.status_code == 422, (name, resp.text)
    persona = await make_persona(database, owner, address(), name="Iris\r\nBcc: evil@example.org")
    refused = await client.patch(f"/api/v1/personas/{persona.id}", json={"name": "I\nris"},
                                 headers=headers)
    assert refused.status_code == 422, refused.text
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    sent = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={"to": ["bob@example.org"], "subject": "Hi", "body": "x"})
    assert sent.status_code == 201, sent.text
    [(_, rcpt, _)] = relay.received
    assert rcpt == ["bob@example.org"]
    got = relay.parsed()
    assert got["From"].addresses[0].display_name == "Iris Bcc: evil@example.org"
    assert got["Bcc"] is None


async def test_a_subject_with_any_line_break_is_refused_before_sending(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """Not only CR/LF: every character Python's email package breaks a line at (U+2028,
    vertical tab, NEL, ...) makes the subject a 422, and nothing is sent."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    for subject in ("Hi\u2028Bcc: evil@example.org", "Hi\x0bthere", "Hi\x85there",
                    "Hi\x0cthere", "Hi\x1ethere", "Hi\u2029there"):
        sent = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                                 json={"to": ["bob@example.org"], "subject": subject,
                                       "body": "x"})
        assert sent.status_code == 422, (subject, sent.status_code, sent.text)
        # The send_email tool's schema, which the model reads, refuses it as well.
        with pytest.raises(ValidationError):
            validate({"to": ["bob@example.org"], "subject": subject, "body": "x"},
                     mail.SEND_EMAIL_TOOL_SCHEMA)
    assert relay.received == []
    tabbed = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                               json={"to": ["bob@example.org"], "subject": "Hi\tthere",
                                     "body": "x"})
    assert tabbed.status_code == 201, tabbed.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_a_relay_login_is_used_and_its_failure_reported(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    owner, headers = user
    persona = await make_persona(database, owner, address())
    relay = await relay_factory(auth=True)
    body = {"to": ["bob@example.org"], "subject": "Hi", "body": "x"}
    test_settings.smtp_relay_url = SecretStr(f"smtp://roost:s3cret@127.0.0.1:{relay.port}")
    ok = await client.post(f"/api/v1/personas/{persona.id}/emails", json=body, headers=headers)
    assert ok.status_code == 201, ok.text
    assert relay.logins == [b"roost"] and len(relay.received) == 1
    test_settings.smtp_relay_url = SecretStr(f"smtp://roost:wrong@127.0.0.1:{relay.port}")
    bad = await client.post(f"/api/v1/personas/{persona.id}/emails", json=body, headers=headers)
    assert bad.status_code == 502 and "535" in bad.json()["detail"]
    assert "wrong" not in bad.text
    # Credentials never travel in clear to a relay off loopback without STARTTLS.
    assert parse_relay_url("smtp://u:p@relay.example.org").loopback is False
    assert parse_relay_url("smtps://relay.example.org").port == 465


async def test_only_owners_and_editors_send_and_only_members_read(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    relay_factory: Callable[..., Any], test_settings: Settings,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers],
) -> None:
    owner, _ = user
    stranger, stranger_headers = other_user
    persona = await make_persona(database, owner, address())
    msg = message(str(persona.email_address), message_id="<secret@example.org>")
    msg.add_attachment(b"payroll", maintype="text", subtype="csv", filename="payroll.csv")
    await smtp_send(listener.port, msg, [str(persona.email_address)])
    [email] = await emails_of(database, persona.id)
    async with database.transaction() as session:
        attachment_id = await session.scalar(select(Attachment.id).where(
            Attachment.email_id == email.id))
    send = {"to": ["bob@example.org"], "subject": "Hi", "body": "x"}
    # With mail sending off, someone else's persona is still not found (not a 503).
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", json=send,
                             headers=stranger_headers)
    assert resp.status_code == 404, resp.text
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")

    for path in (f"/api/v1/personas/{persona.id}/emails", f"/api/v1/emails/{email.id}",
                 f"/api/v1/attachments/{attachment_id}",
                 f"/api/v1/attachments/{attachment_id}/content",
                 f"/api/v1/personas/{persona.id}/health"):
        resp = await client.get(path, headers=stranger_headers)
        assert resp.status_code == 404, (path, resp.text)
        assert "payroll" not in resp.text and "secret" not in resp.text
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", json=send,
                             headers=stranger_headers)
    assert resp.status_code == 404 and relay.received == []

    # A viewer reads the mailbox but does not send from it.
    async with database.transaction() as session:
        session.add(PersonaMember(persona_id=persona.id, user_id=stranger, role="viewer"))
    listed = await client.get(f"/api/v1/personas/{persona.id}/emails", headers=stranger_headers)
    assert [e["id"] for e in listed.json()["items"]] == [str(email.id)]
    content = await client.get(f"/api/v1/attachments/{attachment_id}/content",
                               headers=stranger_headers)
    assert content.content == b"payroll"
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", json=send,
                             headers=stranger_headers)
    assert resp.status_code == 403 and relay.received == []
    # Raw SQL in the stranger's scope sees nothing once they leave.
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM persona_members WHERE user_id = :u"),
                              {"u": stranger})
    resp = await client.get(f"/api/v1/emails/{email.id}", headers=stranger_headers)
    assert resp.status_code == 404


async def test_the_send_email_tool_sends_from_the_run_s_persona(
    database: Database, relay_factory: Callable[..., Any], mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers],
) -> None:
    owner, _ = user
    persona = await make_persona(database, owner, address())
    agent = await make_agent(database, owner, persona_id=persona.id)
    async with database.transaction() as session:
        run = Run(agent_id=agent.id, persona_id=persona.id, user_id=owner,
                  trace_id=f"t-{uuid.uuid4()}", input="mail Bob", status="running")
        session.add(run)
        await session.flush()
        run_id = run.id
    relay = await relay_factory()
    cfg = dataclasses.replace(mail_cfg, relay=parse_relay_url(
        f"smtp://127.0.0.1:{relay.port}"))
    actor = Principal(user_id=owner, is_admin=False, kind="job")
    tool = mail.builtin_tools(cfg)[mail.SEND_EMAIL_TOOL_ID]  # what the tool caller runs
    arguments = {"to": ["bob@example.org"], "subject": "From the agent", "body": "Done."}
    validate(arguments, mail.SEND_EMAIL_TOOL_SCHEMA)  # the schema the model is offered
    result = await tool(database, actor, arguments, run_id)
    [email] = await emails_of(database, persona.id)
    assert result["email_id"] == str(email.id) and email.run_id == run_id
    assert relay.parsed()["Subject"] == "From the agent"
    with pytest.raises(Unprocessable):
        await mail.send_email_tool(database, cfg, actor, {"to": "not a list"}, run_id=run_id)
    # No hidden recipients for an agent: its schema has no bcc, and the tool refuses one.
    with pytest.raises(ValidationError):
        validate({**arguments, "bcc": ["eve@example.org"]}, mail.SEND_EMAIL_TOOL_SCHEMA)
    with pytest.raises(Unprocessable, match="bcc"):
        await mail.send_email_tool(database, cfg, actor,
                                   {**arguments, "bcc": ["eve@example.org"]}, run_id=run_id)
    assert len(relay.received) == 1 and len(await emails_of(database, persona.id)) == 1
    assert EmailSend.model_validate({"to": ["x@example.org"], "subject": "", "body": ""})


async def test_run_artifacts_are_attachments_of_their_run(
    client: httpx.AsyncClient, database: Database, test_settings: Settings,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers],
) -> None:
    owner, headers = user
    _, stranger_headers = other_user
    agent = await make_agent(database, owner)
    async with database.transaction() as session:
        run = Run(agent_id=agent.id, user_id=owner, trace_id=f"t-{uuid.uuid4()}", input="x")
        session.add(run)
        await session.flush()
        artifact = await attachments.add_run_artifact(
            session, Principal(user_id=owner, is_admin=False, kind="job"),
            test_settings.data_dir, run.id, name="../out/chart.svg", data=b"<svg/>",
            mime_type="image/svg+xml")
    assert (artifact.name, artifact.run_id, artifact.email_id) == ("chart.svg", run.id, None)
    got = await client.get(f"/api/v1/attachments/{artifact.id}/content", headers=headers)
    assert got.content == b"<svg/>" and got.headers["content-type"] == "image/svg+xml"
    assert got.headers["content-security-policy"] == "default-src 'none'; sandbox"
    meta = (await client.get(f"/api/v1/attachments/{artifact.id}", headers=headers)).json()
    assert meta["run_id"] == str(run.id) and meta["file_size"] == 6
    stranger = await client.get(f"/api/v1/attachments/{artifact.id}/content",
                                headers=stranger_headers)
    assert stranger.status_code == 404


def test_relay_urls_and_listen_addresses_parse() -> None:
    relay = parse_relay_url("smtp://user%40x:p%3Ass@mail.example.org:2525")
    assert (relay.scheme, relay.host, relay.port) == ("smtp", "mail.example.org", 2525)
    assert (relay.username, relay.password) == ("user@x", "p:ss")
    assert parse_relay_url("smtp://127.0.0.1").port == 587
    with pytest.raises(ValueError):
        parse_relay_url("http://mail.example.org")
    assert parse_listen("[::1]:2525") == ("::1", 2525)
    assert parse_listen("0.0.0.0:25") == ("0.0.0.0", 25)  # noqa: S104


def test_sanitized_names_never_leave_their_directory(tmp_path: Path) -> None:
    from roost.agents.attachments import sanitize_filename

    for hostile in ("../../etc/passwd", "..\\..\\boot.ini", "/abs/path", "..", ".", "",
                    "a\x00b", "x" * 400 + ".pdf", "con:stream", "\u202etxt.exe",
                    # Dots behind spaces were left in front by one strip of each.
                    ". .htaccess", " . .bashrc", "..  .profile", ". . . .env"):
        name = sanitize_filename(hostile, "application/pdf")
        assert name and "/" not in name and "\\" not in name and len(name) <= 255
        assert not name.startswith(".") and "\x00" not in name
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert sanitize_filename("x" * 400 + ".pdf").endswith(".pdf")
    assert sanitize_filename("", "application/pdf") == "attachment.pdf"


async def test_an_agent_run_sends_mail_with_the_send_email_tool(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, relay_factory: Callable[..., Any],
    mail_cfg: mail.MailConfig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The built-in row the migration registers is the tool the agents domain runs: a
    model's send_email call in a run goes out through the relay, from the persona."""
    async with database.transaction() as session:
        row = await session.get(Tool, mail.SEND_EMAIL_TOOL_ID)
    assert row is not None and row.name == mail.SEND_EMAIL_TOOL_NAME
    assert row.input_schema == mail.SEND_EMAIL_TOOL_SCHEMA
    assert row.description == mail.SEND_EMAIL_TOOL_DESCRIPTION
    assert row.annotations and row.annotations["idempotentHint"] is False  # never resent

    owner, headers = user
    await add_provider(client, admin_headers, stub)
    persona, agent, relay = await mailing_agent(database, owner, relay_factory, mail_cfg,
                                                monkeypatch)
    stub.script(ToolCalls(Call("send_email", {"to": ["bob@example.org"],
                                               "subject": "Report", "body": "All done."})),
                Reply("Sent."))
    run = (await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "mail Bob"},
                             headers=headers)).json()
    done = await wait_for_run(client, headers, run["id"])
    assert (done["status"], done["output"]) == ("completed", "Sent."), done
    [email] = await emails_of(database, persona.id)
    assert (email.direction, email.run_id, email.subject) == ("outbound", uuid.UUID(run["id"]),
                                                              "Report")
    assert relay.parsed()["To"] == "bob@example.org"
    assert f"<{persona.email_address}>" in str(relay.parsed()["From"])


async def _greeting(port: int) -> tuple[asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return writer, await asyncio.wait_for(reader.readline(), 10)


@contextlib.asynccontextmanager
async def _capped_listener(
    database: Database, cfg: mail.MailConfig, *, total: int, per_address: int,
) -> AsyncIterator[tuple[MailServer, list[asyncio.StreamWriter]]]:
    """A listener with these connection caps, and two connections it admitted (their
    writers: a test may open more and add them, they are all closed at the end)."""
    server = MailServer(database, dataclasses.replace(
        cfg, max_connections=total, max_connections_per_address=per_address), "127.0.0.1", 0)
    await server.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(2):
            writer, greeting = await _greeting(server.port)
            writers.append(writer)
            assert greeting.startswith(b"220 "), greeting
        yield server, writers
    finally:
        for writer in writers:
            writer.close()
        await server.stop()


async def test_connections_past_the_listener_s_caps_are_answered_421_and_closed(
    database: Database, mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Any],
) -> None:
    """Each SMTP connection may buffer a whole message: one client (or many) opening
    connections without end would exhaust the server's memory. Past
    ROOST_SMTP_MAX_CONNECTIONS_PER_ADDRESS a connection gets 421 and is closed; once one
    closes, a new one is served, and mail still gets through."""
    owner, _ = user
    async with _capped_listener(database, mail_cfg, total=5, per_address=2) as (server,
                                                                               writers):
        refused, greeting = await _greeting(server.port)
        writers.append(refused)
        assert greeting.startswith(b"421 4.7.0"), greeting
        refused.close()
        writers[0].close()
        await asyncio.sleep(0.2)  # the listener sees the close
        persona = await make_persona(database, owner, address())
        to = str(persona.email_address)
        assert await smtp_send(server.port, message(to), [to]) == {}
        assert len(await emails_of(database, persona.id)) == 1


async def test_the_listener_s_total_cap_holds_across_addresses(
    database: Database, mail_cfg: mail.MailConfig,
) -> None:
    """ROOST_SMTP_MAX_CONNECTIONS bounds the connections of every client together."""
    async with _capped_listener(database, mail_cfg, total=2, per_address=10) as (server,
                                                                                writers):
        writer, greeting = await _greeting(server.port)
        writers.append(writer)
        assert greeting.startswith(b"421 "), greeting
        assert server.gate.open == 2


@pytest.mark.parametrize(("body", "content_type", "field"), [
    (b"x\\ud800y\r\n", b"text/plain; charset=unicode_escape", "body_text"),
    (b"<p>x\\udfffy</p>\r\n", b"text/html; charset=raw_unicode_escape", "body_html"),
])
async def test_a_body_in_an_escape_codec_charset_is_read_as_utf8(
    client: httpx.AsyncClient, database: Database, listener: MailServer,
    user: tuple[uuid.UUID, Headers], body: bytes, content_type: bytes, field: str,
) -> None:
    """``charset=unicode_escape`` (or ``raw_unicode_escape``): a codec Python has, but no
    mail is written in. Decoded with it, the body became a lone surrogate no UTF-8 column
    holds (a 451 the sender retried forever), and the decoder reaches freed memory on
    Pythons before 3.11.13 (CVE-2025-4516): the body is read as UTF-8, its backslashes kept."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    raw = (b"From: Alice <" + SENDER.encode() + b">\r\nTo: " + to.encode()
           + b"\r\nSubject: charset lie\r\nMessage-ID: <" + uuid.uuid4().hex.encode()
           + b"@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: " + content_type
           + b"\r\n\r\n" + body)

    def deliver() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=60) as smtp:
            smtp.ehlo()
            smtp.mail(SENDER)
            smtp.rcpt(to)
            return smtp.data(raw)

    code, reply = await asyncio.to_thread(deliver)
    assert code == 250, (code, reply)
    [email] = await emails_of(database, persona.id)
    stored = (await client.get(f"/api/v1/emails/{email.id}", headers=headers)).json()
    assert ("x\\ud800y" if field == "body_text" else "x\\udfffy") in stored[field], stored
