"""A small Language Server Protocol client: JSON-RPC 2.0 over a server's stdin/stdout.

Like the MCP client, every operation starts a fresh server process, does its work and
stops it, all under one deadline: a health check is ``initialize`` / ``initialized`` /
``shutdown`` / ``exit``; diagnostics add ``textDocument/didOpen`` and wait for the
server's ``textDocument/publishDiagnostics`` for that document.

What the server asks of the client (``workspace/configuration``,
``window/workDoneProgress/create``, ``client/registerCapability``...) is answered with
an empty result at once: servers often block until they get one.  The server's stderr
is discarded (it may print tracebacks or paths), its environment is a minimal one (no
``ROOST_*`` secrets), and it runs in its own process group so that whatever it spawns
is stopped with it (SIGTERM, then SIGKILL) however the operation ends.

Failures are :class:`LspError` (502) or :class:`LspTimeout` (504), whose ``detail`` is
safe to show.  What the server says (an error's message, capabilities, diagnostics) is
made storable before it leaves this module: a NUL or a lone surrogate is escaped
(:func:`storable`), as no text or jsonb column can hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from roost import __version__
from roost.errors import BadGateway, GatewayTimeout
from roost.tasks.payloads import storable_text

MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024  # one JSON-RPC message from the server
MAX_HEADER_LINES: Final = 16
SHUTDOWN_GRACE_S: Final = 2.0  # between exit (or SIGTERM) and SIGKILL
# Variables a language server may need to find its runtime and caches; nothing else of
# Roost's environment (database URL, keys) reaches it.
_ENV_KEEP: Final = ("HOME", "LOGNAME", "USER", "PATH", "SHELL", "TERM", "LANG", "LC_ALL",
                    "LC_CTYPE", "TMPDIR", "TZ", "SYSTEMROOT")
SEVERITIES: Final = {1: "error", 2: "warning", 3: "information", 4: "hint"}


class LspError(BadGateway):
    status, title, type_slug = 502, "Language server error", "lsp-error"


class LspTimeout(LspError, GatewayTimeout):
    status, title, type_slug = 504, "Language server timed out", "lsp-timeout"


@dataclass(frozen=True)
class LspSpec:
    """How to start one server; ``root`` is its workspace (rootUri and working directory)."""

    name: str
    command: str
    args: tuple[str, ...]
    root: Path


@dataclass(frozen=True)
class Handshake:
    capabilities: dict[str, Any]
    server_info: dict[str, Any] | None
    latency_ms: int  # process start to the initialize answer


def storable(value: Any) -> Any:
    """A server's JSON value as PostgreSQL can store it: NULs and lone surrogates in
    strings and keys escaped (storable_text), NaN and infinities (Python's json reads
    them) made null.  The server's answer is recorded, not refused: a check of it must
    still be recorded."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def uri_key(uri: str) -> str:
    """A ``file:`` URI reduced to its decoded path: servers re-encode URIs differently
    (``%3A`` or ``:``, case of escapes), so URIs are compared by this."""
    parts = urlsplit(uri)
    return unquote(parts.path) if parts.scheme == "file" else uri


class _Connection:
    """One server process: requests by id, server requests answered, diagnostics kept."""

    def __init__(self, spec: LspSpec, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._spec = spec
        self._proc = proc
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._write_lock = asyncio.Lock()
        self._diagnostics: dict[str, list[Any]] = {}
        self._changed = asyncio.Event()
        self._failure: LspError | None = None
        self._exiting = False
        self._reader = asyncio.create_task(self._read_loop())

    # ------------------------------------------------------------------ sending

    async def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
        try:
            async with self._write_lock:
                self._stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await self._stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise self._gone() from None

    async def request(self, method: str, params: Any = None) -> Any:
        if self._failure is not None:
            raise self._failure
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            await self._send(message)
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: Any = None) -> None:
        if self._failure is not None:
            raise self._failure
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)

    # ------------------------------------------------------------------ receiving

    def _gone(self) -> LspError:
        if self._failure is not None:
            return self._failure
        code = self._proc.returncode
        return LspError(f"language server {self._spec.name!r} exited"
                        + (f" with code {code}" if code is not None else "")
                        + " before finishing")

    def _fail(self, error: LspError) -> None:
        if self._failure is None:
            self._failure = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._failure)
        self._changed.set()

    async def _read_message(self) -> dict[str, Any] | None:
        length: int | None = None
        for _ in range(MAX_HEADER_LINES):
            line = await self._stdout.readline()
            if not line:
                return None  # end of output: the process is gone
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("ascii", "replace").partition(":")
            if sep and name.strip().lower() == "content-length":
                length = int(value.strip())
        else:
            raise ValueError("too many header lines")
        if length is None or length < 0:
            raise ValueError("a message without Content-Length")
        if length > MAX_MESSAGE_BYTES:
            raise LspError(f"language server {self._spec.name!r} sent a message of {length} "
                           f"bytes; the limit is {MAX_MESSAGE_BYTES}")
        message = json.loads(await self._stdout.readexactly(length))
        if not isinstance(message, dict):
            raise ValueError("a message that is not a JSON object")
        return message

    async def _read_loop(self) -> None:
        try:
            while (message := await self._read_message()) is not None:
                await self._dispatch(message)
            if not self._exiting:
                # Give the exit code a moment to be known: it makes the message useful.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._proc.wait(), 0.5)
            self._fail(self._gone())
        except LspError as exc:
            self._fail(exc)
        except (ValueError, UnicodeError, RecursionError, asyncio.IncompleteReadError,
                OSError) as exc:
            # ValueError covers bad JSON, a bad length and readline's line limit;
            # RecursionError, JSON nested deeper than the parser takes.
            self._fail(LspError(f"language server {self._spec.name!r} broke the protocol: "
                                f"{type(exc).__name__}"))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if isinstance(method, str):
            if "id" in message:  # a request of the server: answer it, never leave it hanging
                await self._send({"id": message["id"],
                                  "result": self._answer(method, message.get("params"))})
            elif method == "textDocument/publishDiagnostics":
                params = message.get("params")
                if isinstance(params, dict) and isinstance(params.get("uri"), str):
                    found = params.get("diagnostics")
                    self._diagnostics[uri_key(params["uri"])] = found if isinstance(found, list) else []
                    self._changed.set()
            return  # other notifications (logs, progress) are of no use here
        request_id = message.get("id")
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            return
        error = message.get("error")
        if error is not None:
            what = error.get("message", "") if isinstance(error, dict) else ""
            code = error.get("code") if isinstance(error, dict) else None
            # LSP's code is an integer; anything else is the server's text, shown as its
            # message is (escaped, cut): a NUL or a lone surrogate could not be recorded.
            shown = code if type(code) is int else storable_text(str(code)[:40])
            future.set_exception(LspError(
                f"language server {self._spec.name!r} answered with error {shown}: "
                f"{storable_text(str(what)[:300]) or 'no detail'}"))
        else:
            future.set_result(message.get("result"))

    def _answer(self, method: str, params: Any) -> Any:
        if method == "workspace/configuration":
            items = params.get("items") if isinstance(params, dict) else None
            return [None] * (len(items) if isinstance(items, list) else 0)
        if method == "workspace/workspaceFolders":
            return [{"uri": self._spec.root.as_uri(), "name": self._spec.root.name or "workspace"}]
        return None  # registerCapability, workDoneProgress/create, showMessageRequest...

    async def diagnostics_for(self, uri: str) -> list[Any]:
        """The first diagnostics the server publishes for ``uri`` (waits for them)."""
        key = uri_key(uri)
        while True:
            if key in self._diagnostics:
                return self._diagnostics[key]
            if self._failure is not None:
                raise self._failure
            self._changed.clear()
            await self._changed.wait()

    # ------------------------------------------------------------------ stopping

    async def shutdown(self) -> None:
        """The polite end: ``shutdown``, ``exit``, then a moment for the process to go."""
        await self.request("shutdown")
        self._exiting = True
        await self.notify("exit")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proc.wait(), SHUTDOWN_GRACE_S)

    async def close(self) -> None:
        """Stop the process and its children whatever state they are in."""
        self._exiting = True
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            self._stdin.close()
        if self._proc.returncode is None:
            _signal_group(self._proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), SHUTDOWN_GRACE_S)
            except BaseException as exc:  # a deaf server, or we are cancelled: kill it now
                _signal_group(self._proc, signal.SIGKILL)
                if not isinstance(exc, TimeoutError):
                    raise
                await self._proc.wait()
        # Whatever the server started and left behind (its group outlives it).
        _signal_group(self._proc, signal.SIGKILL)
        await asyncio.wait([self._reader])  # cancelled above; never raises
        # Read what is left so the pipe reaches its end and the transport closes.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                while await self._stdout.read(65536):
                    pass


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group is the server's own
    except ProcessLookupError:
        pass
    except PermissionError:  # not our group after all: only the process itself
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in _ENV_KEEP}


async def _start(spec: LspSpec) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            spec.command, *spec.args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            cwd=spec.root, env=_environment(), start_new_session=True,
        )
    except FileNotFoundError:
        raise LspError(f"language server {spec.name!r}: command {spec.command!r} was not "
                       "found") from None
    except PermissionError:
        raise LspError(f"language server {spec.name!r}: command {spec.command!r} is not "
                       "executable") from None
    except OSError as exc:
        raise LspError(f"language server {spec.name!r}: command {spec.command!r} could not "
                       f"be started ({exc.strerror or type(exc).__name__})") from None


def _initialize_params(root: Path) -> dict[str, Any]:
    return {
        # The server exits by itself if Roost dies before stopping it.
        "processId": os.getpid(),
        "clientInfo": {"name": "roost", "version": __version__},
        "rootUri": root.as_uri(),
        "rootPath": str(root),
        "workspaceFolders": [{"uri": root.as_uri(), "name": root.name or "workspace"}],
        "capabilities": {
            "textDocument": {
                "synchronization": {"dynamicRegistration": False, "didSave": False},
                "publishDiagnostics": {"relatedInformation": False, "versionSupport": True},
            },
            "workspace": {"configuration": True, "workspaceFolders": True},
            "window": {"workDoneProgress": False},
        },
        "trace": "off",
    }


@asynccontextmanager
async def _session(spec: LspSpec) -> AsyncIterator[tuple[_Connection, dict[str, Any], int]]:
    """A started and initialized server; stopped on the way out, whatever happened."""
    started = time.perf_counter()
    proc = await _start(spec)
    conn = _Connection(spec, proc)
    try:
        result = await conn.request("initialize", _initialize_params(spec.root))
        if not isinstance(result, dict):
            raise LspError(f"language server {spec.name!r} answered initialize without a result")
        latency = int((time.perf_counter() - started) * 1000)
        await conn.notify("initialized", {})
        yield conn, result, latency
    finally:
        await conn.close()


@asynccontextmanager
async def _guarded(spec: LspSpec, timeout_s: float, doing: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except LspError:
        raise
    except TimeoutError:
        raise LspTimeout(f"language server {spec.name!r} did not finish {doing} within "
                         f"{timeout_s:g} s") from None
    except Exception as exc:  # whatever else broke: a clear 502, never a 500
        raise LspError(f"language server {spec.name!r} failed: {type(exc).__name__}") from None


async def handshake(spec: LspSpec, timeout_s: float) -> Handshake:
    """Start the server, initialize, shut it down: its capabilities and start-up latency."""
    async with _guarded(spec, timeout_s, "the initialize/shutdown handshake"):
        async with _session(spec) as (conn, result, latency):
            await conn.shutdown()
        # Guarded too: cleaning a deeply nested answer may fail (RecursionError), a 502.
        capabilities = storable(result.get("capabilities"))
        info = storable(result.get("serverInfo"))
    return Handshake(capabilities=capabilities if isinstance(capabilities, dict) else {},
                     server_info=info if isinstance(info, dict) else None, latency_ms=latency)


async def diagnostics(
    spec: LspSpec, path: Path, text: str, language_id: str, timeout_s: float
) -> list[dict[str, Any]]:
    """Open ``path`` (absolute, inside ``spec.root``) with ``text`` and return the
    diagnostics the server publishes for it, shaped by :func:`shape_diagnostic`."""
    uri = path.as_uri()
    async with _guarded(spec, timeout_s, "diagnostics"):
        async with _session(spec) as (conn, _, _):
            await conn.notify("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": language_id, "version": 1, "text": text}})
            found = await conn.diagnostics_for(uri)
            # We have what we came for: a server slow or unable to shut down is stopped anyway.
            with contextlib.suppress(LspError, TimeoutError):
                async with asyncio.timeout(SHUTDOWN_GRACE_S):
                    await conn.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
                    await conn.shutdown()
        # Guarded too: a diagnostic shaped in a way not foreseen is a 502 naming the
        # server, never a 500.
        shaped = [shape_diagnostic(d) for d in found if isinstance(d, dict)]
        return sorted((d for d in shaped if d is not None),
                      key=lambda d: (d["line"], d["range"]["start"]["character"]))


def _position(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    line, character = value.get("line"), value.get("character")
    if type(line) is not int or type(character) is not int:  # bool is an int subclass
        return None
    return {"line": line, "character": character}


def shape_diagnostic(raw: dict[str, Any]) -> dict[str, Any] | None:
    """A server's diagnostic as Roost answers it: the LSP range (0-based), ``line``
    (1-based, as editors show it), severity by name, message, source and code."""
    where = raw.get("range")
    start = _position(where.get("start")) if isinstance(where, dict) else None
    end = _position(where.get("end")) if isinstance(where, dict) else None
    if start is None or not isinstance(raw.get("message"), str):
        return None
    code, severity = raw.get("code"), raw.get("severity")
    return {
        "range": {"start": start, "end": end or start},
        "line": start["line"] + 1,
        # Anything but a known number (an object or a list cannot even be looked up).
        "severity": SEVERITIES.get(severity, "error") if isinstance(severity, int) else "error",
        "message": storable_text(raw["message"][:2000]),
        "source": storable_text(raw["source"][:200]) if isinstance(raw.get("source"), str) else None,
        "code": storable(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
    }
