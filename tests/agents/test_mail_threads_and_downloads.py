"""Persona mail threading against forged Message-IDs, and attachment downloads: their
names, content types and ranges."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote

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


async def one_attachment(database: Database, cfg: mail.MailConfig, owner: uuid.UUID,
                         data: bytes, *, maintype: str = "application", subtype: str = "pdf",
                         filename: str = "a.pdf", charset: str | None = None) -> uuid.UUID:
    """The id of the one attachment of a mail delivered to a new persona of ``owner``."""
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    msg = message(to, message_id=f"<{uuid.uuid4().hex}@example.org>")
    params = {"charset": charset} if charset else {}
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename,
                       params=params)
    [got] = await mail.receive(database, cfg, msg.as_bytes(policy=policy.SMTP), [to])
    async with database.transaction() as session:
        aid = await session.scalar(select(Attachment.id).where(
            Attachment.email_id == got.email_id))
    assert aid is not None
    return aid


async def ten_byte_attachment(database: Database, cfg: mail.MailConfig,
                              owner: uuid.UUID) -> uuid.UUID:
    return await one_attachment(database, cfg, owner, b"0123456789")


@pytest.mark.parametrize(("rng", "status", "content", "content_range"), [
    # RFC 9110 14.2: a Range in a unit the server does not know is ignored (it was a 400
    # in plain text).
    ("chars=0-1", 200, b"0123456789", None),
    ("bytes=2-4", 206, b"234", "bytes 2-4/10"),
    # RFC 9110 14.1.1: a range set is satisfiable when one of its ranges is (it was a 416).
    ("bytes=0-1,100-200", 206, b"01", "bytes 0-1/10"),
])
async def test_a_range_that_can_be_served_is(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers], rng: str, status: int, content: bytes,
    content_range: str | None,
) -> None:
    """The whole file for a Range in an unknown unit, the part asked for otherwise."""
    owner, headers = user
    aid = await ten_byte_attachment(database, mail_cfg, owner)
    resp = await client.get(f"/api/v1/attachments/{aid}/content",
                            headers={**headers, "Range": rng})
    assert resp.status_code == status, (rng, resp.status_code, resp.text)
    assert resp.content == content
    assert resp.headers.get("content-range") == content_range


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


async def test_a_stale_if_range_gets_the_whole_file_whatever_the_range(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """RFC 9110 13.2.2: a resuming client whose ETag is stale gets the whole file (200),
    even for a range past the end; it got a 416 (the Range was judged before If-Range).
    A matching If-Range still gets its part, or its 416."""
    owner, headers = user
    aid = await ten_byte_attachment(database, mail_cfg, owner)
    url = f"/api/v1/attachments/{aid}/content"
    resp = await client.get(url, headers={**headers, "Range": "bytes=100-200",
                                          "If-Range": '"stale-etag"'})
    assert resp.status_code == 200, (resp.status_code, resp.text)
    assert resp.content == b"0123456789"
    etag = (await client.get(url, headers=headers)).headers["etag"]
    resp = await client.get(url, headers={**headers, "Range": "bytes=2-4", "If-Range": etag})
    assert resp.status_code == 206 and resp.content == b"234", resp.text
    resp = await client.get(url, headers={**headers, "Range": "bytes=100-200",
                                          "If-Range": etag})
    assert resp.status_code == 416, (resp.status_code, resp.text)


@pytest.mark.parametrize(("charset", "served"), [
    ("iso-8859-1", "text/plain; charset=iso-8859-1"),
    (None, "text/plain"),
    ('x"; y=z', "text/plain"),
])
async def test_a_text_attachment_is_served_in_its_declared_charset(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers], charset: str | None, served: str,
) -> None:
    """A text attachment is served with the charset its sender declared, and with none
    when none (or a malformed one) was declared; an ISO-8859-1 text was labelled
    `charset=utf-8` (the charset was dropped, Starlette added its own): mojibake."""
    owner, headers = user
    data = "Grüße, café\n".encode("iso-8859-1")
    aid = await one_attachment(database, mail_cfg, owner, data, maintype="text",
                               subtype="plain", filename="notes.txt", charset=charset)
    resp = await client.get(f"/api/v1/attachments/{aid}/content", headers=headers)
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["content-type"] == served
    meta = await client.get(f"/api/v1/attachments/{aid}", headers=headers)
    assert meta.json()["mime_type"] == served


@pytest.mark.parametrize(("name", "plain"), [
    ("報告.pdf", "download.pdf"),
    ("報告", "download"),
    ("Q3 報告.pdf", "Q3_.pdf"),
])
async def test_a_non_ascii_name_keeps_its_extension_in_the_plain_filename(
    client: httpx.AsyncClient, database: Database, mail_cfg: mail.MailConfig,
    user: tuple[uuid.UUID, Headers], name: str, plain: str,
) -> None:
    """An old client reading only `filename` still saves a `.pdf` for `報告.pdf`
    (`download.pdf`); it was offered `pdf`, the `_` and the dot stripped."""
    owner, headers = user
    aid = await one_attachment(database, mail_cfg, owner, b"%PDF", filename=name)
    resp = await client.get(f"/api/v1/attachments/{aid}/content", headers=headers)
    disposition = resp.headers["content-disposition"]
    assert disposition.split('filename="', 1)[1].split('"', 1)[0] == plain, disposition
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name


@pytest.mark.parametrize("name", ["हिन्दी.pdf", "العَرَبِيَّة.pdf", "Tiếng Việt.pdf"])
async def test_a_name_with_combining_marks_is_kept_whole(
    database: Database, mail_cfg: mail.MailConfig, user: tuple[uuid.UUID, Headers],
    name: str,
) -> None:
    """Vowel signs, viramas and harakat are parts of the letters they follow: the stored
    name is what the sender wrote; `हिन्दी.pdf` was stored as `ह_न_द_.pdf`."""
    owner, _ = user
    aid = await one_attachment(database, mail_cfg, owner, b"%PDF", filename=name)
    async with database.transaction() as session:
        row = await session.get(Attachment, aid)
        assert row is not None
        assert row.name == name
