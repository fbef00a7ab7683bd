"""Long-lived stdio MCP server processes: one pool per event loop, so one per Roost
process (the API server, each worker).

**What lives here.** A server process and its initialized ``ClientSession`` are kept per
registered server, under a *fingerprint* of its spec (command, args, env and the
registration's revision, which moves on every discovery): a changed registration gets a
new process and the old one is closed as soon as its calls have finished.  Each process
is owned by one background task that enters the stdio transport
(:func:`~roost.tools.mcpclient.stdio_transport`) and ``ClientSession`` and exits them
again (anyio scopes must be left by the task that entered them); callers only *lease*
the session.

**Sharing.** Concurrent calls share the one session: the SDK multiplexes requests by
JSON-RPC id, so ten calls of a tool that sleeps 1 s take about 1 s in total (tested),
not 10.  Nothing is serialized; a server that cannot handle concurrent requests answers
them in its own order, which is its business.

**Crashes.** A forwarder sits between the transport's read stream and the session and
notices end of file (the process exited or closed its stdout, even between calls, or the
transport gave up on an answer larger than ``MAX_MESSAGE_BYTES``).  The
call that was running fails with a clear :class:`~roost.tools.mcpclient.McpError`; the
next call starts a new process, after an exponential backoff (0.5 s doubling to 30 s)
during which calls fail at once saying when the next start will be tried.  A start that
fails (command missing, ``initialize`` refused or too slow) counts the same way.  A
successful call resets the backoff.

**Timeouts.** A call that runs out of time is cancelled: the SDK sends
``notifications/cancelled`` for it and the session stays usable (a well-behaved server
stops the work).  Lines on the server's stdout that are not JSON-RPC are skipped (a stray
``print`` must not break a working server), but a call that runs out of time after such a
line came is a 502 naming it, not a 504: its answer may have been that line.
Because a server that *hangs* (its event loop blocked) would take
every later call down with it, the timeout also starts a ping; a server that does not
answer it within ``ping_timeout_s`` is stopped and the next call starts a new one (no
backoff: a hang is not a crash loop).  Calls that arrive meanwhile wait for the ping.

**Limits and shutdown.** A process idle for ``idle_s`` is closed; at most
``max_processes`` run per pool, the least recently used idle one making room for a new
one (all busy: the call fails at once, saying so).  :meth:`StdioPool.close` stops them
all; the transport closes each server's stdin, waits 2 s, sends SIGTERM to its process
group and SIGKILL 2 s later.  The API's lifespan (``roost.tools.startup``) and the worker's
shutdown hook (``roost.tools.jobs``) close the pool of their process.  A Roost process
killed with SIGKILL leaves its servers with a closed stdin, on which MCP servers exit.

**Discovery and health checks** do *not* use the pool: they start a fresh process
(``mcpclient.discover``), because a health check measures start-up and ``initialize``
(``latency_ms``) and a discovery must see what a new process offers; the discovery's
new revision then retires the pooled process, so calls see the same tools.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.session import ClientSession
from mcp.shared.message import SessionMessage

from roost.tools.mcpclient import (
    McpError,
    McpTimeout,
    RoostClientSession,
    ServerSpec,
    StdioAnswerTooLarge,
    failure_of,
    innermost,
    stdio_transport,
)

log = structlog.get_logger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Beyond the SDK's own escalation (2 s + 2 s + 2 s): what close() waits for each owner.
CLOSE_GRACE_S = 10.0


@dataclass(frozen=True)
class PoolLimits:
    idle_s: float = 300.0
    max_processes: int = 32
    start_timeout_s: float = 60.0  # spawn + initialize
    ping_timeout_s: float = 5.0  # after a timed-out call: answer this fast or be restarted


def fingerprint(spec: ServerSpec) -> str:
    """What makes a process reusable for ``spec`` (a hash: the env holds secrets)."""
    material = json.dumps([spec.command, list(spec.args), sorted(spec.env.items()),
                           spec.revision], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


def _key(spec: ServerSpec) -> str:
    return str(spec.server_id) if spec.server_id is not None else f"name:{spec.name}"


@dataclass
class _Backoff:
    fingerprint: str
    failures: int
    retry_at: float
    reason: str


class _Process:
    """One server process, its session, and the task that owns both."""

    def __init__(self, pool: StdioPool, key: str, fp: str, spec: ServerSpec) -> None:
        self.pool, self.key, self.fingerprint, self.spec = pool, key, fp, spec
        self.session: ClientSession | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight = 0
        self.last_used = time.monotonic()
        self.ended = False  # no new lease: stopping, stopped or failed
        self.stop_reason: str | None = None  # why Roost stopped it
        self.crash: str | None = None  # why it ended on its own ("it ...")
        self.retiring = False  # close once the running calls are done
        self.probe: asyncio.Task[None] | None = None
        # Lines on its stdout that are not JSON-RPC (the SDK skips them) and the first
        # one's error: a call that then runs out of time says so (502, not 504).
        self.garbled = 0
        self.first_garbled: str | None = None
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._own(), name=f"roost-mcp-stdio:{spec.name}")

    # --- the owner task ------------------------------------------------------------

    async def _own(self) -> None:
        spec = self.spec
        error: BaseException | None = None
        try:
            async with stdio_transport(spec) as (read, write):
                send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._forward, read, send)
                    async with RoostClientSession(receive, write) as session:
                        with anyio.fail_after(self.pool.limits.start_timeout_s):
                            await session.initialize()
                        self.session = session
                        self.ready.set_result(None)
                        log.info("tools.stdio_started", server=spec.name)
                        await self._serve()
                    tg.cancel_scope.cancel()
        except Exception as exc:
            error = exc
        except asyncio.CancelledError:  # close() ran out of patience, or the loop ends
            error = None
        finally:
            self.ended = True
            if not self.ready.done():
                if self.stop_reason is None:
                    self.pool._failed(self, self.crash or _could_not_start(spec, error))
                self.ready.set_exception(error or McpError(
                    f"MCP server {spec.name!r} was stopped before it started"))
                self.ready.exception()  # the waiters have it: no "never retrieved" warning
            self.pool._ended(self)

    async def _forward(self, read: MemoryObjectReceiveStream[SessionMessage | Exception],
                       send: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
        """Pass messages to the session; end of file means the process is gone."""
        gave_up: str | None = None  # the transport's reason to end the session, if it had one
        async with send:
            async for item in read:
                if isinstance(item, StdioAnswerTooLarge):
                    gave_up = item.what
                elif isinstance(item, Exception):
                    self.garbled += 1
                    if self.first_garbled is None:
                        self.first_garbled = " ".join(str(item).split())[:200]
                await send.send(item)
            if self.stop_reason is None and self.ready.done():
                # Recorded before the session sees EOF, so the failing call finds it.
                self.pool._failed(self, gave_up or "exited (or closed its standard output)")
            elif self.stop_reason is None:
                self.crash = gave_up or "exited during start-up (its stderr is discarded: " \
                    "run the command by hand to see why)"
            self._wake.set()

    async def _serve(self) -> None:
        """Hold the session until Roost stops it, the process dies or it idles out."""
        while True:
            limits = self.pool.limits  # may change (settings are read on every call)
            if self.crash is not None or self.stop_reason is not None:
                return
            if self.retiring and self.inflight == 0:
                self.stop("its registration changed or was deleted")
                return
            idle_for = time.monotonic() - self.last_used
            if self.inflight == 0 and idle_for >= limits.idle_s:
                self.pool._discard(self, f"idle for {limits.idle_s:g} s")
                return
            self._wake.clear()
            wait = limits.idle_s - idle_for if self.inflight == 0 else limits.idle_s
            with anyio.move_on_after(max(wait, 0.01)):
                await self._wake.wait()

    # --- called by the pool ------------------------------------------------------------

    def stop(self, reason: str) -> None:
        if self.stop_reason is None and self.crash is None:
            self.stop_reason = reason
        self.ended = True
        self._wake.set()

    def released(self) -> None:
        self.inflight -= 1
        self.last_used = time.monotonic()
        self._wake.set()  # a retiring process may close now; the idle clock restarts

    def suspect(self) -> None:
        """A call timed out or was cancelled: make sure the server still answers."""
        if self.probe is None and not self.ended and self.session is not None:
            self.probe = asyncio.create_task(self._ping(self.session))

    async def _ping(self, session: ClientSession) -> None:
        try:
            with anyio.fail_after(self.pool.limits.ping_timeout_s):
                await session.send_ping()
        except Exception:
            log.warning("tools.stdio_hung", server=self.spec.name)
            self.pool._discard(self, "it stopped answering after a call timed out "
                                     "(a new process serves the next call)")
        finally:
            self.probe = None


def _could_not_start(spec: ServerSpec, error: BaseException | None) -> str:
    if error is None:
        return "could not start"
    if isinstance(innermost(error), TimeoutError):
        return "could not start: no answer to initialize in time"
    detail = failure_of(spec, error).detail
    return "could not start: " + detail.split(": ", 1)[-1]


class StdioPool:
    """Long-lived stdio MCP sessions of one event loop (see the module's docstring)."""

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self._procs: OrderedDict[str, _Process] = OrderedDict()  # least recently used first
        self._owners: dict[asyncio.Task[None], _Process] = {}  # every process not reaped
        self._backoff: dict[str, _Backoff] = {}
        self._closed = False

    @property
    def processes(self) -> int:
        """Server processes running or starting (not those being closed)."""
        return sum(1 for p in self._procs.values() if not p.ended)

    @asynccontextmanager
    async def session(self, spec: ServerSpec) -> AsyncIterator[ClientSession]:
        """Lease the server's session for one operation (start the process if needed)."""
        proc = await self._acquire(spec)
        assert proc.session is not None
        proc.inflight += 1
        succeeded = False
        garbled = proc.garbled
        try:
            yield proc.session
            succeeded = True
        except anyio.get_cancelled_exc_class():
            proc.suspect()  # timed out (or the caller went away): is the server alive?
            raise
        except Exception as exc:
            if isinstance(exc, McpTimeout):
                proc.suspect()  # the call's deadline passed: is the server alive?
                if proc.garbled > garbled:  # what may have been its answer was junk
                    raise McpError(
                        f"MCP server {spec.name!r} wrote {proc.garbled - garbled} line(s) "
                        f"that are not JSON-RPC during the call, and no valid answer before "
                        f"the deadline ({proc.first_garbled})") from None
            if proc.crash is not None:
                raise McpError(f"MCP server {spec.name!r} failed during the call: it "
                               f"{proc.crash}{self._retry_note(proc.key)}") from None
            if proc.stop_reason is not None:
                raise McpError(f"MCP server {spec.name!r} was stopped during the call: "
                               f"{proc.stop_reason}") from None
            raise
        finally:
            proc.released()
            if succeeded:
                self._backoff.pop(proc.key, None)

    async def _acquire(self, spec: ServerSpec) -> _Process:
        if spec.transport != "stdio" or not spec.command:
            raise McpError(f"MCP server {spec.name!r} has no command")
        if self._closed:
            raise McpError("this Roost process is shutting down; try again")
        key, fp = _key(spec), fingerprint(spec)
        while True:
            proc = self._procs.get(key)
            if proc is not None and proc.fingerprint != fp:
                self.retire(key)
                self._backoff.pop(key, None)  # a new registration starts with a clean slate
                proc = None
            if proc is None or proc.ended:
                proc = self._start(key, fp, spec)
            try:
                await asyncio.shield(proc.ready)
            except Exception as exc:
                if isinstance(exc, McpError):
                    raise
                if proc.crash is not None:
                    raise McpError(f"MCP server {spec.name!r} {proc.crash}"
                                   f"{self._retry_note(key)}") from None
                raise failure_of(spec, exc) from None
            if proc.probe is not None:  # a call timed out: wait for the ping's verdict
                await asyncio.shield(proc.probe)
            if proc.ended:
                continue  # crashed (the next round meets its backoff) or was replaced
            self._procs.move_to_end(key)
            return proc

    def _start(self, key: str, fp: str, spec: ServerSpec) -> _Process:
        backoff = self._backoff.get(key)
        now = time.monotonic()
        if backoff is not None and backoff.fingerprint == fp and now < backoff.retry_at:
            wait = backoff.retry_at - now
            raise McpError(
                f"MCP server {spec.name!r} is restarting after it {backoff.reason}; the next "
                f"start is tried in {wait:.1f} s", extra={"retry_after_s": round(wait, 1)})
        self._make_room(spec)
        proc = _Process(self, key, fp, spec)
        self._procs[key] = proc
        self._owners[proc.task] = proc
        return proc

    def _make_room(self, spec: ServerSpec) -> None:
        while self.processes >= self.limits.max_processes:
            idle = [p for p in self._procs.values()
                    if not p.ended and p.inflight == 0 and p.ready.done()]
            if not idle:
                raise McpError(
                    f"MCP server {spec.name!r} cannot start: all {self.limits.max_processes} "
                    "stdio server processes of this Roost process are busy "
                    "(ROOST_TOOLS_STDIO_MAX_PROCESSES)")
            self._discard(idle[0], "evicted to make room (least recently used)")

    def _retry_note(self, key: str) -> str:
        backoff = self._backoff.get(key)
        if backoff is None:
            return ""
        wait = max(0.0, backoff.retry_at - time.monotonic())
        return f"; a new process is started by a call after {wait:.1f} s"

    # --- bookkeeping -------------------------------------------------------------------

    def _failed(self, proc: _Process, crash: str) -> None:
        """``proc`` died or could not start: forget it and back off before the next."""
        proc.crash = crash
        proc.ended = True
        if self._procs.get(proc.key) is proc:
            del self._procs[proc.key]
        if self._closed:
            return
        previous = self._backoff.get(proc.key)
        failures = 1 + (previous.failures if previous and previous.fingerprint == proc.fingerprint
                        else 0)
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
        self._backoff[proc.key] = _Backoff(proc.fingerprint, failures,
                                           time.monotonic() + delay, crash)
        log.warning("tools.stdio_failed", server=proc.spec.name, reason=crash,
                    failures=failures, retry_in_s=delay)

    def _ended(self, proc: _Process) -> None:
        """The owner task of ``proc`` is finishing (its process is reaped)."""
        if self._procs.get(proc.key) is proc:
            del self._procs[proc.key]
        self._owners.pop(proc.task, None)
        if proc.stop_reason is not None:
            log.info("tools.stdio_stopped", server=proc.spec.name, reason=proc.stop_reason)

    def _discard(self, proc: _Process, reason: str) -> None:
        if self._procs.get(proc.key) is proc:
            del self._procs[proc.key]
        proc.stop(reason)

    def retire(self, key: str) -> None:
        """Close the process of ``key`` (a server id) once its running calls are done."""
        proc = self._procs.pop(key, None)
        if proc is not None:
            proc.retiring = True
            proc.ended = True  # no new lease
            proc._wake.set()

    async def close(self) -> None:
        """Stop every server process; returns when they are gone (or abandoned)."""
        self._closed = True
        self._procs.clear()
        owners = set(self._owners)
        for proc in list(self._owners.values()):  # retiring ones too: no waiting for calls
            proc.stop("Roost is shutting down")
        if not owners:
            return
        _, late = await asyncio.wait(owners, timeout=CLOSE_GRACE_S)
        for task in late:  # the SDK's shutdown is shielded and bounded; this is a net
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=CLOSE_GRACE_S)


# --- one pool per event loop -----------------------------------------------------------

_pools: dict[asyncio.AbstractEventLoop, StdioPool] = {}


def default_pool(limits: PoolLimits | None = None) -> StdioPool:
    """The pool of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    for stale in [other for other in _pools if other.is_closed()]:
        del _pools[stale]  # its tasks were cancelled as it closed, its children reaped
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = StdioPool(limits)
    elif limits is not None and pool.limits != limits:
        pool.limits = limits
    return pool


def current_pool() -> StdioPool | None:
    """The running loop's pool if one was made (nothing is created)."""
    try:
        return _pools.get(asyncio.get_running_loop())
    except RuntimeError:
        return None


def retire_server(server_id: object) -> None:
    """A server was deleted: close its process in this Roost process once its calls end
    (other processes close theirs when it idles out; no call reaches it without its row)."""
    pool = current_pool()
    if pool is not None:
        pool.retire(str(server_id))


async def close_default() -> None:
    """Stop every stdio server process this event loop started (the shutdown hooks)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


__all__ = ["PoolLimits", "StdioPool", "close_default", "current_pool", "default_pool",
           "fingerprint", "retire_server"]
