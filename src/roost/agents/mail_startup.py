"""Start-up of the personas' mail: the SMTP listener runs inside `roost serve` when
``ROOST_SMTP_LISTEN`` is set (``app.state.mail_server``), and closes at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.agents.mail import MailConfig, parse_listen
from roost.agents.mailserver import MailServer


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    cfg = MailConfig.from_settings(settings)  # a malformed relay URL stops the start-up
    if not settings.smtp_listen:
        yield
        return
    host, port = parse_listen(settings.smtp_listen)
    # Under `roost serve --workers N` (roost.serving) every process shares the port.
    server = MailServer(app.state.db, cfg, host, port,
                        reuse_port=bool(getattr(app.state, "shared_ports", False)))
    await server.start()  # a port already taken fails the start-up, loudly
    app.state.mail_server = server
    try:
        yield
    finally:
        await server.stop()
