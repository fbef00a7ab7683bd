"""``roost serve --workers N``: N API processes on one port (docs/scale.md, "Many processes").

The parent process (the supervisor) applies the migrations once, makes sure the key files
exist (so N processes never race to create them), binds the socket and then starts N
children with uvicorn's multi-process supervisor.  Each child builds its own app with
:func:`served_app` (an app factory: nothing is shared in memory between them; what must
be shared lives in PostgreSQL, see the docs), opens its own connection pool and, with
``--worker``, runs its own queue worker inside the app's lifespan.  The kernel spreads
connections over the children, which all ``accept()`` on the one listening socket.

The supervisor replaces a child that dies (a crash, the OOM killer, ``kill -9``) within
a second and, on SIGTERM or SIGINT, asks every child to stop gracefully (in-flight
requests finish, the queue worker hands its jobs back) and waits for them.  On the
embedded PostgreSQL every child attaches to the one server of the data dir, and the
supervisor stays attached from the migrations to its own exit: it is the last process to
leave, so the server stops when the supervisor does, never while a child still runs.

``/metrics`` adds up every child's counters: the supervisor gives the children a fresh
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multi-process mode) and removes it at
exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final

import structlog
import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from roost.app import create_app
from roost.clitools import fail, prepare_schema
from roost.config import Settings, get_settings, parse_listen
from roost.process import freeze_startup_heap

log = structlog.get_logger(__name__)

APP_FACTORY: Final = "roost.serving:served_app"
METRICS_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
STARTUP_GRACE_S: Final = 120.0  # a child still starting is not pinged (it cannot answer)
HEALTHCHECK_TIMEOUT_S: Final = 10  # a started child that does not answer is hung
MAX_REQUEST_HEAD_BYTES: Final = 64 * 1024
"""The most a request line and headers may take (docs/operations.md): more is a 431."""


class HeadLimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on a request's head (request line and
    headers).  httptools buffers a header for as long as the client sends it and has no
    limit of its own (nor has uvicorn for it): an anonymous client held 200 MB of one
    server's memory with one header.  The bytes read while a head is being parsed are
    counted here, before the parser sees them; past ``MAX_REQUEST_HEAD_BYTES`` the answer
    is a 431 and the connection is closed.  (uvicorn's h11 protocol has a limit,
    ``h11_max_incomplete_event_size``, but parses slower.)  A head has a time limit too,
    ``serve_head_timeout_s`` for all of it, and a body ``serve_body_timeout_s`` without a
    byte of it: then the answer is a 408 (docs/operations.md)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_left: int | None = MAX_REQUEST_HEAD_BYTES  # None while reading a body
        self._body_timeout_s = get_settings().serve_body_timeout_s
        self._body_timer: asyncio.TimerHandle | None = None  # set while a body is awaited
        self._body_seen = 0.0  # loop time the head ended or the body's last bytes came
        self._head_timeout_s = get_settings().serve_head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None  # set while a head is awaited
        # The bytes a body may take on the wire, its chunks' framing and the trailer
        # fields after its last chunk included: the body limit counts the body's own bytes
        # only, and httptools buffers a trailer field for as long as it comes (a signed-in
        # client grew the server by 190 MB with one).  Twice the body limit, and a head.
        self._body_wire_limit = 2 * get_settings().max_request_bytes + MAX_REQUEST_HEAD_BYTES
        self._body_wire_left = self._body_wire_limit

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn times neither a new connection's first head nor a head begun on a kept-
        # alive one (its first byte cancels the keep-alive timer): a client that sent
        # nothing, or half a head, held its connection for as long as it liked.
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._head_left = None
        self._body_wire_left = self._body_wire_limit
        self._cancel_head_timer()
        super().on_headers_complete()
        # Neither uvicorn nor httptools time a body out: a client that sent a head and
        # then stalled held its connection and request task for as long as it liked.
        # As nginx's client_body_timeout, the limit is on the time between two reads;
        # on_message_complete (at once for a request without a body) cancels it.
        self._cancel_body_timer()
        self._body_seen = self.loop.time()
        self._body_timer = self.loop.call_later(self._body_timeout_s, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        self._body_seen = self.loop.time()  # the timer checks it (cheaper than re-arming)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_left = MAX_REQUEST_HEAD_BYTES  # what follows is the next request's head
        self._cancel_body_timer()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_head_timer()  # the connection is another protocol's from now on
        self._cancel_body_timer()
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        """On SIGTERM uvicorn lets a request finish within the grace period, then cancels
        its task (a traceback in the log): a request whose body is still awaited is
        answered 503 and closed at once instead (nothing of it has been acted on)."""
        if (self._body_timer is not None and not self.pipeline  # not amid another answer
                and (self.cycle is None or not self.cycle.response_started)):
            self._abandon_body(503, "the server is shutting down; send the request again")
            return
        super().shutdown()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _start_head_timer(self) -> None:
        """The whole head has ``serve_head_timeout_s`` (unlike a body, not between two
        reads: a head trickled a byte at a time is still bounded), as nginx's
        ``client_header_timeout``."""
        self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            # A head begun while an earlier request is answered: no answer can be written
            # amid that one, and the connection is held by it anyway.  Once it is done,
            # uvicorn's keep-alive timer closes the connection if no more bytes come.
            self._start_head_timer()
            return
        if self._head_left == MAX_REQUEST_HEAD_BYTES:  # not a byte of a head: just close
            self.transport.close()
            return
        self.logger.warning("Request head not complete after %d s.", self._head_timeout_s)
        self._send_plain(408, f"the request line and headers did not arrive within "
                              f"{self._head_timeout_s} seconds")
        self.transport.close()

    def _body_timed_out(self) -> None:
        now = self.loop.time()
        if self.pipeline or self.flow.read_paused or (self.cycle is not None
                                                      and self.cycle.waiting_for_100_continue):
            # The body waits on Roost, not on the client: an earlier request still being
            # answered, a full buffer the app has not read yet, no "100 Continue" sent yet.
            self._body_seen = now
        if now - self._body_seen < self._body_timeout_s:
            self._body_timer = self.loop.call_later(
                self._body_timeout_s - (now - self._body_seen), self._body_timed_out)
            return
        self._body_timer = None
        self.logger.warning("No bytes of a request body for %d s.", self._body_timeout_s)
        self._abandon_body(408, f"no bytes of the request body arrived for "
                                f"{self._body_timeout_s} seconds")

    def _abandon_body(self, status: int, message: str) -> None:
        """Answer a request whose body has not arrived (unless the app already answered)
        and close the connection: the request's task then reads a disconnect."""
        self._cancel_body_timer()
        if not self.transport.is_closing() and (self.cycle is None
                                                or not self.cycle.response_started):
            self._send_plain(status, message)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        left = self._head_left
        if left is not None and self._head_timer is None:
            self._start_head_timer()  # the first bytes of the next request's head
        if left is None:
            self._body_wire_left -= len(data)
            if self._body_wire_left < 0:
                self.logger.warning("Request body larger than %d bytes on the wire.",
                                    self._body_wire_limit)
                self._abandon_body(413, f"request body (with its chunked framing and "
                                        f"trailers) is larger than {self._body_wire_limit} "
                                        f"bytes")
                return
        if left is None or len(data) <= left:
            if left is not None:
                self._head_left = left - len(data)
            super().data_received(data)
            return
        # The head may end within what is allowed, the body following in the same read.
        self._head_left = 0
        super().data_received(data[:left])
        if self.transport.is_closing():
            return
        if self._head_left == 0:
            self._send_head_too_large()
            return
        self.data_received(data[left:])

    def _send_head_too_large(self) -> None:
        self.logger.warning("Request head larger than %d bytes.", MAX_REQUEST_HEAD_BYTES)
        if self.cycle is None or self.cycle.response_complete:  # not amid another answer
            self._send_plain(431, f"request line and headers are larger than the limit of "
                                  f"{MAX_REQUEST_HEAD_BYTES} bytes")
        self.transport.close()

    def _send_plain(self, status: int, message: str) -> None:
        """A short plain-text answer written before the connection is closed."""
        body = message.encode("ascii")
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: ", str(len(body)).encode("ascii"), b"\r\n",
            b"connection: close\r\n\r\n", body]))


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """SIGTERM while ``roost serve`` starts (the embedded database starting, migrations
    running) exits as Ctrl-C does, 143, through ``finally`` blocks and ``atexit``, which
    detach from the embedded PostgreSQL and stop it: Python's default action killed the
    process outright and left PostgreSQL running on the data dir.  Once the server runs,
    its own handlers take over (:meth:`GracefulServer.capture_signals`, the supervisor's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class GracefulServer(uvicorn.Server):
    """Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which kills the
    process before ``atexit`` runs and leaves the embedded PostgreSQL running (or, in a
    child of ``--workers``, its pid listed as attached).  Here the signal only asks for
    shutdown, so the process exits 0 and detaches from PostgreSQL (stopping it if last)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        freeze_startup_heap()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self.handle_exit)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Child(Process):
    """One API process of the supervisor, running :class:`GracefulServer`."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.born = time.monotonic()

    def responsive(self, timeout: float) -> bool:
        """Alive, and (once past its start-up) answering the supervisor's ping.  A child
        answers pings only once it has imported Roost, which takes seconds on a busy
        machine: until then only a dead process counts as gone."""
        if time.monotonic() - self.born < STARTUP_GRACE_S:
            return self.process.is_alive()
        return self.is_alive(timeout=timeout)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GracefulServer(config=self.config)
        return self._server


class Supervisor(Multiprocess):
    """uvicorn's supervisor (restart of dead children, SIGTERM to all, SIGHUP rolling
    restart), starting :class:`_Child` processes."""

    startup_failed = False  # a child exited STARTUP_FAILURE: the supervisor exits 3 too

    def run(self) -> None:
        super().run()
        if self.startup_failed:
            # Never exit 0 then: a service manager would take it for a clean stop.
            raise fail("the API processes could not start",
                       "their log lines above say why", code=STARTUP_FAILURE)

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            child = _Child(self.config, self.sockets)
            child.start()
            self.processes.append(child)

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, child in enumerate(self.processes):
            timeout = self.config.timeout_worker_healthcheck
            if child.responsive(timeout) if isinstance(child, _Child) else child.is_alive(timeout):
                continue
            child.kill()  # hung: kill it
            child.join()
            if child.exitcode == STARTUP_FAILURE:
                # The app cannot start (database unreachable, bad settings): a restart
                # would fail the same way, so stop like a single `roost serve` would.
                log.error("serve.child_start_failed", pid=child.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("serve.child_replaced", pid=child.pid, exitcode=child.exitcode)
            _forget_metrics(child.pid)
            replacement = _Child(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement


# Descriptors a process keeps for what is not a client's connection: the database pool,
# LISTEN connections, log and key files, a local model's files.
_RESERVED_DESCRIPTORS: Final = 256


def connection_limit(settings: Settings) -> int:
    """``ROOST_SERVE_MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``: above it a new
    request is a 503), the process's open-files limit raised to fit it when the hard limit
    allows (the soft one is often 1024); lowered to fit, with a warning, when it does not:
    a process out of descriptors cannot even answer 503, nor open a database connection."""
    import resource

    wanted = settings.serve_max_connections
    needed = wanted + _RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    limit = max(soft // 2, soft - _RESERVED_DESCRIPTORS)
    log.warning("serve.connections_lowered", wanted=wanted, limit=limit, open_files=soft)
    return limit


def listening_socket(host: str, port: int, *, what: str = "",
                     reuse_port: bool = False) -> socket.socket:
    """The socket ``roost serve`` listens on, bound before the app starts (``what``:
    "SMTP " for the mail listener's).  An address in use, or a host that does not
    resolve, is one line, exit 1 (uvicorn would log it and exit 3 from inside its serving
    task: asyncio's "Task exception was never retrieved" traceback after it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    try:
        address = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                     flags=socket.AI_PASSIVE)[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:  # socket.gaierror too
        raise fail(f"cannot listen on {what}{host}:{port}",
                   (exc.strerror or str(exc)).lower()) from None
    sock.set_inheritable(True)  # the children of --workers accept on it
    return sock


def smtp_socket(settings: Settings, *, reuse_port: bool = False) -> socket.socket | None:
    """The SMTP listener's socket (ROOST_SMTP_LISTEN), bound as the HTTP one is, before
    the database is opened; None when there is no listener.  Under ``--workers N`` the
    supervisor holds it (``reuse_port``) while each child binds its own with the same
    option (``agents.mail_startup``): the address is checked once, up front."""
    if not settings.smtp_listen:
        return None
    host, port = parse_listen(settings.smtp_listen)
    if reuse_port:
        # SO_REUSEPORT lets any other process of this user that sets it bind the address
        # too (another install's supervisor and children: the kernel would then spread
        # mail over both installs). A plain bind first fails when anyone holds it.
        listening_socket(host, port, what="SMTP ").close()
    return listening_socket(host, port, what="SMTP ", reuse_port=reuse_port)


def _forget_metrics(pid: int | None) -> None:
    """A dead child's live gauges no longer count (its counters still do)."""
    if pid is not None and os.environ.get(METRICS_DIR_ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def served_app() -> FastAPI:
    """The app factory each child process runs: the app on its own connection pool
    (opened by the lifespan), with a queue worker when ROOST_SERVE_WORKER is on."""
    settings = get_settings()
    app = create_app(settings)
    app.state.shared_ports = True  # listeners of its own (SMTP) share their port too
    if settings.serve_worker:
        run_queue_worker(app, settings)
    return app


def run_queue_worker(app: FastAPI, settings: Settings) -> None:
    """Run a queue worker for the app's lifetime: started once the lifespan has opened the
    database, stopped (in-flight jobs get the worker's shutdown time, then are released)
    before the database closes."""
    from roost.tasks.cli import worker_config
    from roost.tasks.worker import Worker

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[Any]:
        async with inner(served) as state:
            worker = Worker(served.state.db, worker_config(settings),
                            statement_timeout_ms=settings.db_statement_timeout_ms)
            task = asyncio.create_task(worker.run(), name="roost-queue-worker")
            try:
                yield state
            finally:
                worker.stop()
                await task

    app.router.lifespan_context = lifespan


def serve_processes(settings: Settings, *, host: str, port: int, processes: int,
                    migrate: bool, with_worker: bool,
                    announce: Callable[[], None] = lambda: None) -> None:
    """Run ``processes`` API processes on ``host:port`` until SIGTERM/SIGINT.  ``announce``
    (the start banner) runs once the database is checked and the port is bound: a refused
    database or a port in use is the only thing said, as with one process."""
    from roost.db.engine import create_database
    from roost.keyfiles import load_keys

    load_keys(settings)  # generated once here, never by N children at the same moment
    # The addresses first: one in use is said before the database is started or migrated.
    sock = listening_socket(host, port)
    try:
        smtp = smtp_socket(settings, reuse_port=True)
    except BaseException:
        sock.close()
        raise

    async def prepare() -> None:
        # Attaches the supervisor to the embedded server (when there is one) for its
        # whole life; the pool itself is closed at once.
        db = create_database(settings)
        try:
            await prepare_schema(db, migrate=migrate)
        finally:
            await db.dispose()

    # The supervisor holds the SMTP address until its children have left.
    with sock, smtp or contextlib.nullcontext():
        asyncio.run(prepare())
        freeze_startup_heap()  # the supervisor too: it exits after its children, quickly
        # The children read their settings from the environment (spawned, not forked).
        os.environ["ROOST_SERVE_WORKER"] = "true" if with_worker else "false"
        metrics_dir = tempfile.mkdtemp(prefix="roost-metrics-")
        os.environ[METRICS_DIR_ENV] = metrics_dir
        try:
            config = uvicorn.Config(
                APP_FACTORY, factory=True, host=host, port=port, workers=processes,
                log_config=None, proxy_headers=settings.forwarded_allow_ips is not None,
                forwarded_allow_ips=settings.forwarded_allow_ips, lifespan="on",
                timeout_worker_healthcheck=HEALTHCHECK_TIMEOUT_S,
                timeout_graceful_shutdown=settings.serve_shutdown_grace_s,
                http=HeadLimitedHttpTools, limit_concurrency=connection_limit(settings),
            )
            announce()
            log.info("serve.processes_starting", processes=processes, host=host, port=port,
                     queue_workers=processes if with_worker else 0)
            Supervisor(config, sockets=[sock]).run()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(METRICS_DIR_ENV, None)
