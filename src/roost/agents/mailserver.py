"""Roost's SMTP listener (aiosmtpd on the caller's event loop): the personas' inbound
mail.  It is the last hop, never a relay: a recipient that is not an active persona's
address is refused at RCPT (550), so it cannot forward mail anywhere.

Replies: unknown mailbox 550 5.1.1 (also an address that is not UTF-8 or holds a control
character: no query is made); too many recipients 452 4.5.3; a message over
``ROOST_SMTP_MAX_MESSAGE_BYTES`` 552 (aiosmtpd, at MAIL ... SIZE= or during DATA); an
attachment over ``ROOST_SMTP_MAX_ATTACHMENT_BYTES`` 552 5.3.4; a malformed message
554 5.6.0; a database failure 451 4.3.0 (the sender retries: storing is idempotent on
the Message-ID).  No reply carries an exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Final

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from roost.agents import mail, mailparse
from roost.db.engine import Database

log = structlog.get_logger(__name__)

MAX_RECIPIENTS: Final = 50
IDLE_TIMEOUT_S: Final = 60.0
TEMPORARY_FAILURE: Final = "451 4.3.0 Temporary failure, please try again later"
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


class MailServer:
    """The listener: :meth:`start` binds ``host:port`` (port 0: any free one, then
    :attr:`port` says which), :meth:`stop` closes it."""

    def __init__(self, database: Database, cfg: mail.MailConfig, host: str, port: int, *,
                 reuse_port: bool = False) -> None:
        self.handler = MailHandler(database, cfg)
        self.cfg, self.host, self.port = cfg, host, port
        # `roost serve --workers N`: every API process listens on the one SMTP port
        # (SO_REUSEPORT, the kernel spreads connections; a mail is one connection).
        self.reuse_port = reuse_port
        self._server: asyncio.Server | None = None

    def _protocol(self) -> Any:
        return SMTP(self.handler, data_size_limit=self.cfg.max_message_bytes,
                    enable_SMTPUTF8=True, decode_data=False,
                    hostname=self.cfg.from_domain or "localhost", ident="Roost ESMTP",
                    timeout=IDLE_TIMEOUT_S)

    async def start(self) -> None:
        # aiosmtpd logs every command a client sends at INFO ("mail.log"): strangers'
        # addresses and raw bytes (lone surrogates, which no UTF-8 stream can write) in
        # the log.  Roost logs what it decides itself; aiosmtpd only its warnings.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
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
