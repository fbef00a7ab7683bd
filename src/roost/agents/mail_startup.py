"""Start-up of the personas' mail: the SMTP listener runs inside `roost serve` when
``ROOST_SMTP_LISTEN`` is set (``app.state.mail_server``; on ``app.state.smtp_socket``
when `roost serve` bound it already), and closes at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.agents.mail import MailConfig
from roost.agents.mailserver import MailServer
from roost.config import parse_listen


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    cfg = MailConfig.from_settings(settings)  # (the settings refused a malformed relay URL)
    if not settings.smtp_listen:
        yield
        return
    host, port = parse_listen(settings.smtp_listen)
    # `roost serve` binds the socket before it opens the database (an address in use is
    # one line there); under `--workers N` (roost.serving) every process shares the port.
    server = MailServer(app.state.db, cfg, host, port,
                        reuse_port=bool(getattr(app.state, "shared_ports", False)),
                        sock=getattr(app.state, "smtp_socket", None))
    await server.start()
    app.state.mail_server = server
    try:
        yield
    finally:
        await server.stop()
