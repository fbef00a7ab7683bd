"""Roost's SMTP listener at the protocol level (raw sockets): the size limit a sending MTA
was told (EHLO SIZE, MAIL FROM ... SIZE=) holds for the message, dot-stuffing aside."""

from __future__ import annotations

import asyncio
import uuid

from roost.agents import mail
from roost.agents.mailserver import MailServer
from roost.db.engine import Database
from tests.agents.conftest import Headers
from tests.agents.test_mail import SENDER, address, emails_of, listener, mail_cfg, make_persona  # noqa: F401


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), 30)
        while line[3:4] == b"-":
            line = await asyncio.wait_for(self.reader.readline(), 30)
        return line

    async def cmd(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def data(self, body: bytes) -> bytes:
        assert (await self.cmd(b"DATA")).startswith(b"354")
        self.writer.write(body + b".\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 30)
        except (ConnectionError, OSError):
            pass


async def connect(port: int) -> Conn:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
    conn = Conn(reader, writer)
    greeting = await conn.reply()
    assert greeting.startswith(b"220"), greeting
    return conn


def msg(to: str, body: bytes = b"hello\r\n", subject: str = "Hi") -> bytes:
    return (f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.org>\r\n\r\n").encode() + body


async def test_dot_stuffing_does_not_count_against_the_size_limit(
    database: Database, listener: MailServer, user: tuple[uuid.UUID, Headers],  # noqa: F811
    mail_cfg: mail.MailConfig,  # noqa: F811
) -> None:
    """A message under the advertised SIZE (declared so at MAIL FROM, accepted) made of
    lines that begin with "." is stored: the dots a client adds to them (RFC 5321
    4.5.2, removed by the listener) were counted as message bytes, and it got "552 Too
    much mail data" at 80% of the limit."""
    owner, _ = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    size = mail_cfg.max_message_bytes * 8 // 10
    plain = msg(to, body=b"")
    plain += b"x\r\n" * ((size - len(plain)) // 3)
    dotted = msg(to, body=b"")
    dotted += b".\r\n" * ((size - len(dotted)) // 3)
    assert len(dotted) <= size < mail_cfg.max_message_bytes
    answers = []
    for raw in (plain, dotted):
        conn = await connect(listener.port)
        await conn.cmd(b"EHLO x")
        assert (await conn.cmd(f"MAIL FROM:<a@example.org> SIZE={len(raw)}".encode())
                ).startswith(b"250")
        assert (await conn.cmd(f"RCPT TO:<{to}>".encode())).startswith(b"250")
        answers.append(await conn.data(raw.replace(b"\r\n.", b"\r\n..")))
        await conn.close()
    assert answers[0].startswith(b"250"), answers
    assert answers[1].startswith(b"250"), answers
    assert len(await emails_of(database, persona.id)) == 2
