"""Roost's SMTP listener (aiosmtpd on the caller's event loop): the personas' inbound
mail.  It is the last hop, never a relay: a recipient that is not an active persona's
address is refused at RCPT (550), so it cannot forward mail anywhere.

Replies: unknown mailbox 550 5.1.1 (also an address that is not UTF-8 or holds a control
character: no query is made); too many recipients 452 4.5.3; a message over
``ROOST_SMTP_MAX_MESSAGE_BYTES`` 552 (aiosmtpd, at MAIL ... SIZE= or during DATA); an
attachment over ``ROOST_SMTP_MAX_ATTACHMENT_BYTES`` 552 5.3.4; a malformed message
554 5.6.0; a database failure 451 4.3.0 (the sender retries: storing is idempotent on
the Message-ID); a connection past ``ROOST_SMTP_MAX_CONNECTIONS`` in all or
``ROOST_SMTP_MAX_CONNECTIONS_PER_ADDRESS`` from one address 421 4.7.0, then closed (each
connection may buffer a whole message: the caps bound the listener's memory).  No reply
carries an exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections import Counter
from typing import Any, Final

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from roost.agents import mail, mailparse
from roost.db.engine import Database

log = structlog.get_logger(__name__)

MAX_RECIPIENTS: Final = 50
IDLE_TIMEOUT_S: Final = 60.0
TEMPORARY_FAILURE: Final = "451 4.3.0 Temporary failure, please try again later"
TOO_MANY_CONNECTIONS: Final = b"421 4.7.0 Too many connections, try again later\r\n"
_REPLY_TEXT = re.compile(r"[^\x20-\x7e]")


def _reply(code: str, text: str) -> str:
    """One printable ASCII line: the detail names what failed, nothing more."""
    return f"{code} {_REPLY_TEXT.sub('?', ' '.join(text.split()))[:400]}"


class MailHandler:
    """aiosmtpd's hooks: RCPT checks the mailbox, DATA stores the message."""

    def __init__(self, database: Database, cfg: mail.MailConfig) -> None:
        self.database, self.cfg = database, cfg

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        try:
            persona_id = await mail.find_persona_id(self.database, address)
        except Exception:
            log.exception("agents.mail_rcpt_failed")
            return TEMPORARY_FAILURE
        if persona_id is None:
            return _reply("550 5.1.1", f"<{address}>: no such mailbox here")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        # The null reverse-path of bounces and delivery reports, ``MAIL FROM:<>``, reaches
        # us as "<>" (aiosmtpd's parse of an empty angle address).
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        try:
            received = await mail.receive(self.database, self.cfg, raw, envelope.rcpt_tos,
                                          sender=sender)
        except mailparse.MailRejected as exc:
            log.info("agents.mail_rejected", reason=exc.detail, size=len(raw))
            return _reply(exc.smtp_code, exc.detail)
        except Exception:
            log.exception("agents.mail_store_failed", size=len(raw))
            return TEMPORARY_FAILURE
        if not received:  # every recipient's persona went inactive since RCPT
            return "550 5.1.1 No such mailbox here"
        return "250 2.0.0 OK: message accepted"

    async def handle_exception(self, error: Exception) -> str:
        log.error("agents.mail_session_failed", error=type(error).__name__)
        return TEMPORARY_FAILURE


class ConnectionGate:
    """The listener's open connections, in all and per client address (per process:
    under ``roost serve --workers N`` each API process has its own)."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self.open = 0
        self.by_address: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        if self.open >= self.total or self.by_address[address] >= self.per_address:
            return False
        self.open += 1
        self.by_address[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


class _GatedSMTP(SMTP):
    """aiosmtpd's protocol behind the :class:`ConnectionGate`: a connection the gate
    refuses gets the 421 line and is closed before aiosmtpd sees it."""

    def __init__(self, handler: MailHandler, gate: ConnectionGate, **options: Any) -> None:
        super().__init__(handler, **options)
        self._gate, self._address, self._admitted = gate, "", False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else ""
        if not self._gate.admit(self._address):
            log.warning("agents.smtp_connection_refused", address=self._address,
                        open=self._gate.open)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.release(self._address)
            super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return super().eof_received() if self._admitted else False

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd counts the DATA lines as sent, a leading dot doubled (RFC 5321
        dot-stuffing): a message of many lines starting with "." was refused at 3/4 of
        the advertised SIZE.  While DATA is read its cap is the worst case of stuffing
        (one byte per three-byte "." line); ``mail.receive`` then checks the message
        itself, unstuffed, against the real limit (552 over it).  EHLO and ``MAIL FROM
        SIZE=`` keep the real one."""
        limit = self.data_size_limit
        if limit:
            self.data_size_limit = limit + limit // 3 + 3
        try:
            await super().smtp_DATA(arg)
        finally:
            self.data_size_limit = limit


class MailServer:
    """The listener: :meth:`start` binds ``host:port`` (port 0: any free one, then
    :attr:`port` says which) or listens on ``sock``, :meth:`stop` closes it."""

    def __init__(self, database: Database, cfg: mail.MailConfig, host: str, port: int, *,
                 reuse_port: bool = False, sock: socket.socket | None = None) -> None:
        self.handler = MailHandler(database, cfg)
        self.cfg, self.host, self.port = cfg, host, port
        # `roost serve --workers N`: every API process listens on the one SMTP port
        # (SO_REUSEPORT, the kernel spreads connections; a mail is one connection).
        self.reuse_port = reuse_port
        self.sock = sock  # bound already (by `roost serve`): listened on instead of host:port
        self.gate = ConnectionGate(cfg.max_connections, cfg.max_connections_per_address)
        self._server: asyncio.Server | None = None

    def _protocol(self) -> Any:
        return _GatedSMTP(self.handler, self.gate,
                          data_size_limit=self.cfg.max_message_bytes,
                          enable_SMTPUTF8=True, decode_data=False,
                          hostname=self.cfg.from_domain or "localhost", ident="Roost ESMTP",
                          timeout=IDLE_TIMEOUT_S)

    async def start(self) -> None:
        # aiosmtpd logs every command a client sends at INFO ("mail.log"): strangers'
        # addresses and raw bytes (lone surrogates, which no UTF-8 stream can write) in
        # the log.  Roost logs what it decides itself; aiosmtpd only its warnings.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(self._protocol, sock=self.sock)
        else:
            self._server = await loop.create_server(self._protocol, self.host, self.port,
                                                    reuse_port=self.reuse_port or None)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("agents.smtp_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
