"""The MCP client, on the official ``mcp`` SDK: discovery, health checks and tool calls.

A **tool call** to a ``stdio`` server leases the session of a long-lived server process
from :class:`roost.tools.stdiopool.StdioPool` (restarts, backoff, idle and shutdown are
described there).  **Discovery and health checks**, and every operation on a
``streamable_http`` server, open a session of their own, initialize it, do their work and
close it (for stdio: a fresh process, so a health check measures start-up and a
discovery sees what a new process offers).  Everything runs under one deadline per
operation; a call's result is capped in size.

**Streamable HTTP** URLs are checked by the SSRF guard before connecting
(:func:`roost.knowledge.fetching.check_destination`), and the session's connections are
*pinned* to the addresses that check accepted (:class:`PinnedTransport`): the host name
is never resolved again, so a DNS answer that changes between check and connection
(rebinding) cannot move the session to a private address.  The name still goes out as
``Host`` and TLS SNI, and certificates are verified against it.  Environment proxies are
ignored (a proxy would resolve the name on its own terms).  The SDK follows redirects
only within the endpoint's origin, and the transport refuses any other host.  The
transport also decodes answers itself (it asks for gzip and deflate only), in bounded
pieces, so :data:`MAX_MESSAGE_BYTES` caps what a compressed answer decodes to.

**stdio** servers are spoken to through :func:`stdio_transport`, which does what the SDK's
``stdio_client`` does (start the process in a group of its own, stop it: stdin closed,
2 s, SIGTERM to the group, SIGKILL 2 s later) in code of Roost's own, on public SDK names
only (the SDK's helpers are private), with a reader of its own: the SDK's re-joined the
whole partial line with every chunk (quadratic, on the event loop) and had no size cap,
so one endless line was read until the deadline.  Here a line grows without re-copying
and passing :data:`MAX_MESSAGE_BYTES` ends the session (:class:`StdioAnswerTooLarge`).

Failures become :class:`McpError` subclasses whose ``detail`` is safe to show: the
server's own stderr is discarded, env values and headers are never part of a message.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from subprocess import DEVNULL, PIPE
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
import httpx2
import structlog
from anyio.abc import AsyncResource, ByteReceiveStream, Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from jsonschema import SchemaError
from mcp.client.session import ClientSession
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp.types import InitializeResult, PaginatedRequestParams, jsonrpc_message_adapter

from roost.context import RUN_TRACE_HEADER, RUN_TRACE_PATTERN, outgoing_run_trace
from roost.errors import BadGateway, GatewayTimeout
from roost.inputs import json_size
from roost.knowledge.fetching import FetchError, IPAddress, check_destination
from roost.security.decompression import ACCEPT_ENCODING, DecodingRefused, decoded
from roost.tasks.payloads import PayloadError, dump_json_object
from roost.tools import schemacheck, schemaregex
from roost.tools.models import MAX_SCHEMA_BYTES

if TYPE_CHECKING:
    from roost.tools.stdiopool import StdioPool

log = structlog.get_logger(__name__)

MAX_PAGES = 100  # tools/list pages followed in one discovery
# Tools one server may list: each is a row, an embedding and a line of every tool list.
MAX_TOOLS: Final = 1000


class McpError(BadGateway):
    status, title, type_slug = 502, "MCP server error", "mcp-error"


class McpTimeout(McpError, GatewayTimeout):
    status, title, type_slug = 504, "MCP server timed out", "mcp-timeout"


class McpOutputTooLarge(McpError):
    status, title, type_slug = 502, "Tool output too large", "tool-output-too-large"


class StdioAnswerTooLarge(McpError):
    """A stdio server wrote a line (one JSON-RPC message) longer than
    :data:`MAX_MESSAGE_BYTES`: reading stopped there and the session ended; ``what`` says
    so after "it" (the pool's crash reason)."""

    def __init__(self, name: str) -> None:
        self.what = (f"wrote an answer larger than {MAX_MESSAGE_BYTES} bytes, the most Roost "
                     "reads of one MCP answer")
        super().__init__(f"MCP server {name!r} {self.what}")


Hidden = tuple[tuple[str, str], ...]
"""(a form of a secret value, its stand-in) pairs, longest form first: see :func:`hide_text`."""


def hide_text(text: str, hidden: Hidden) -> str:
    """``text`` with every form in ``hidden`` replaced by its stand-in."""
    for form, stand_in in hidden:
        text = text.replace(form, stand_in)
    return text


@dataclass(frozen=True)
class ServerSpec:
    """How to reach one server, secrets decrypted (never logged, never returned)."""

    name: str
    transport: str
    url: str | None = None
    server_id: uuid.UUID | None = None  # the stdio pool's key
    revision: str = ""  # moves when a process must be replaced (a discovery ran)
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    allow_private: bool = False
    owner_id: uuid.UUID | None = None  # who registered it (None: global, an administrator)
    # The persona secrets substituted into env or headers (secretrefs.resolve_spec): each
    # form a server may quote back, with its "[secret <name>]" stand-in, longest first.
    hidden: Hidden = field(default=(), repr=False)


@dataclass(frozen=True)
class Discovery:
    capabilities: dict[str, Any]
    server_info: dict[str, Any]
    tools: list[dict[str, Any]]
    latency_ms: int


@dataclass(frozen=True)
class CallOutcome:
    output: dict[str, Any]
    is_error: bool
    text: str
    size: int


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


async def check_server_url(url: str, *, allow_private: bool) -> list[IPAddress]:
    """Refuse a streamable-HTTP URL that points where the server must not go; the
    addresses that were checked."""
    try:
        return await check_destination(url, allow_private=allow_private)
    except FetchError as exc:
        exc.detail = exc.detail.replace(
            "only public internet addresses can be ingested",
            "only public internet addresses can be MCP servers unless an administrator "
            "lists the host in ROOST_TOOLS_ALLOWED_HOSTS",
        )
        raise


class _BudgetedValidator:
    """A result's check against its tool's output schema with all its pattern matches in
    one :func:`schemaregex.budget` (as an arguments' check): the SDK checks on the event
    loop, and without a budget each match had its own 0.5 s (100 strings: 50 s)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def iter_errors(self, instance: Any) -> Iterator[Any]:
        with schemaregex.budget():  # the SDK's best_match consumes it at once
            yield from self._inner.iter_errors(instance)


class RoostClientSession(ClientSession):
    """The SDK's session, checking a result's structured content with the validator of
    :mod:`roost.tools.schemacheck` under one time budget (:exc:`schemaregex.PatternTooSlow`
    past it)."""

    def _output_schema_validator(self, name: str, output_schema: dict[str, Any]) -> Any:
        # Cached in the SDK's dict, which it clears when a listing changes the schema.
        if (validator := self._tool_output_validators.get(name)) is not None:
            return validator
        try:
            built = _BudgetedValidator(schemacheck.build(output_schema))
        except (SchemaError, RecursionError) as exc:
            raise RuntimeError(f"Invalid schema for tool {name}: {str(exc)[:300]}") from None
        self._tool_output_validators[name] = built  # type: ignore[assignment]
        return built


def _headers(spec: ServerSpec) -> dict[str, str]:
    """The server's headers, and the calling run's trace id when an agent run calls (a
    header of that name the server's owner set is replaced: it is Roost's to send)."""
    headers = dict(spec.headers)
    trace = outgoing_run_trace.get()
    # A workflow node's id may make a trace id no header can carry (non-ASCII): not sent.
    if trace is not None and RUN_TRACE_PATTERN.match(trace):
        for name in [n for n in headers if n.lower() == RUN_TRACE_HEADER.lower()]:
            del headers[name]
        headers[RUN_TRACE_HEADER] = trace
    return headers


@asynccontextmanager
async def _session(spec: ServerSpec) -> AsyncIterator[tuple[ClientSession, InitializeResult]]:
    if spec.transport == "stdio":
        async with stdio_transport(spec) as (stdout, stdin), \
                RoostClientSession(stdout, stdin) as session:
            yield session, await session.initialize()
    else:
        if not spec.url:
            raise McpError(f"MCP server {spec.name!r} has no URL")
        addresses = await check_server_url(spec.url, allow_private=spec.allow_private)
        async with pinned_http_client(spec.url, addresses, _headers(spec)) as client, \
                streamable_http_client(spec.url, http_client=client) as (read, write), \
                RoostClientSession(read, write) as session:
            yield session, await session.initialize()


# The stdio server's process is Roost's own code, not the SDK's (its helpers are private
# and may change in any release), with the SDK's behaviour.  POSIX: the server leads a
# process group of its own, which is what SIGTERM and SIGKILL are sent to.
_STDIN_GRACE_S: Final = 2.0  # to exit on its own once its stdin is closed
_TERM_GRACE_S: Final = 2.0  # from SIGTERM to the group until SIGKILL
_REAP_S: Final = 2.0  # for the event loop to see a killed server exit
_FLUSH_S: Final = 0.5  # for the writer to pass on what the session sent before the end
_POLL_S: Final = 0.01

# The session's ends of a stdio transport: what the server wrote (a message, or an error
# for a line that is not one), and what to send it.
StdioStreams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception],
                     MemoryObjectSendStream[SessionMessage]]


def _parse_line(line: bytes | bytearray) -> SessionMessage | Exception:
    """One line of the server's stdout read as the SDK reads it: a JSON-RPC message, or
    why it is not one (not UTF-8, not JSON, not JSON-RPC) as an item the session skips."""
    try:
        message = jsonrpc_message_adapter.validate_json(line.decode("utf-8"), by_name=False)
        return SessionMessage(message)
    except ValueError as exc:  # UnicodeDecodeError and pydantic's ValidationError are
        return exc


async def _read_messages(stdout: ByteReceiveStream,
                         send: MemoryObjectSendStream[SessionMessage | Exception],
                         name: str) -> StdioAnswerTooLarge | None:
    """Send each line of ``stdout`` parsed by :func:`_parse_line` until end of file, or
    until a line grows past :data:`MAX_MESSAGE_BYTES`: then reading stops, and the error
    is returned for the caller to send before it ends the stream."""
    line = bytearray()  # grows in place: a long line is not copied again per chunk
    async for chunk in stdout:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            line += memoryview(chunk)[start:len(chunk) if end < 0 else end]
            if len(line) > MAX_MESSAGE_BYTES:
                return StdioAnswerTooLarge(name)
            if end < 0:
                break
            item = _parse_line(line)
            line.clear()
            start = end + 1
            await send.send(item)
    return None


async def _drain(stdout: ByteReceiveStream) -> None:
    """Read and drop what the server still writes until its stdout ends or :func:`_stop`
    closes it (shielded): a server blocked on a full pipe could not exit."""
    with anyio.CancelScope(shield=True), suppress(
            anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        while True:
            await stdout.receive()


async def _close_quietly(stream: AsyncResource | None) -> None:
    """Close a pipe that may already be closed or broken."""
    if stream is not None:
        with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.aclose()


async def _exited_within(process: Process, seconds: float) -> bool:
    """Whether the server exited within ``seconds``, by its return code: waiting for the
    process would also wait for its pipes, which a child of it may hold open."""
    with anyio.move_on_after(seconds):
        while process.returncode is None:  # noqa: ASYNC110 - no event says it (as the SDK)
            await anyio.sleep(_POLL_S)
    return process.returncode is not None


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # members it may not signal, or zombies: no proof that the group is gone
    return True


def _signal_group(group: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False when the group is gone."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # some members it may not signal: the others got it
    return True


async def _end_group(process: Process) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left of it after
    :data:`_TERM_GRACE_S`."""
    group = process.pid  # start_new_session; not os.getpgid(), which fails once it is reaped
    if not _signal_group(group, signal.SIGTERM):
        return
    with anyio.move_on_after(_TERM_GRACE_S):
        while _group_alive(group):  # noqa: ASYNC110 - nothing signals a group's end
            await anyio.sleep(_POLL_S)
        return
    _signal_group(group, signal.SIGKILL)


async def _stop(process: Process) -> None:
    """Stop the server in the SDK's order (MCP's shutdown sequence): close its stdin;
    one that has not exited within :data:`_STDIN_GRACE_S` gets :func:`_end_group`.  What
    a server that exited on its own left running in its group is killed (as a language
    server's leftovers are).  Then its pipes are closed, even ones a process that left
    the group still holds."""
    await _close_quietly(process.stdin)
    if not await _exited_within(process, _STDIN_GRACE_S):
        await _end_group(process)
        await _exited_within(process, _REAP_S)
    else:
        _signal_group(process.pid, signal.SIGKILL)
    if process.returncode is None:  # SIGKILL did not end it (stuck in the kernel)
        log.warning("tools.stdio_unkillable", pid=process.pid)
        await _close_quietly(process.stdout)  # ends the drain
        return
    with anyio.move_on_after(_REAP_S):  # exited: this closes its pipes and returns
        await process.aclose()


@asynccontextmanager
async def stdio_transport(spec: ServerSpec) -> AsyncIterator[StdioStreams]:
    """A stdio server's process and the session's streams, like the SDK's
    ``stdio_client`` (process start, shutdown sequence and streams) in code of Roost's
    own, with :func:`_read_messages` as the reader: one transport for calls (the pool),
    discovery and health checks.  Shutdown always runs (shielded, every wait bounded),
    so the process and its group never outlive the transport.  A body that fails after
    the server's answer was too large fails with :class:`StdioAnswerTooLarge` (not the
    session's "Connection closed")."""
    if not spec.command:
        raise McpError(f"MCP server {spec.name!r} has no command")
    process = await anyio.open_process(
        [spec.command, *spec.args], stdin=PIPE, stdout=PIPE,
        stderr=DEVNULL,  # the server's stderr is discarded: it may print secrets
        env=get_default_environment() | dict(spec.env),
        start_new_session=True)  # its own process group: a kill reaches its children
    # No await until the task group is entered (a cancellation would leak the process).
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    writer_done = anyio.Event()
    too_large: list[StdioAnswerTooLarge] = []

    async def stdout_reader() -> None:
        assert process.stdout is not None
        try:
            try:
                async with read_writer:
                    if (failed := await _read_messages(process.stdout, read_writer,
                                                       spec.name)) is not None:
                        too_large.append(failed)  # before the session can see it
                        await read_writer.send(failed)
            finally:
                # After the end of file went to the session (a server still writing
                # would hold it back): what the server writes on is read and dropped,
                # so it is not stuck on a full pipe while shutdown waits for it.
                await _drain(process.stdout)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionError):
            pass  # the session is gone, or shutdown closed the pipe under the read

    async def stdin_writer() -> None:
        assert process.stdin is not None
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await process.stdin.send((data + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the session sees the end, not a hanging request
        finally:
            writer_done.set()

    async def shutdown() -> None:  # stop traffic, let the writer flush, stop the server
        read_stream.close()  # the reader drains: a server stuck writing reads its stdin
        write_stream.close()
        with anyio.move_on_after(_FLUSH_S):
            await writer_done.wait()
        await _stop(process)
        for stream in (read_stream, write_stream, read_writer, write_reader):
            stream.close()
        await anyio.lowlevel.checkpoint()  # the pipe tasks end on their own first

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stdout_reader)
            tg.start_soon(stdin_writer)
            try:
                yield read_stream, write_stream
            finally:
                with anyio.CancelScope(shield=True):  # the process must not outlive this
                    await shutdown()
                tg.cancel_scope.cancel()
    except Exception:
        if too_large:
            raise too_large[0] from None
        raise


# Trying every address of a big site would stretch the deadline for nothing (as fetching).
_MAX_CONNECT_ATTEMPTS = 3


# The most an MCP server's HTTP answer may hold (one JSON-RPC message, or an event
# stream's whole body): far above any tool list page or result Roost keeps
# (ROOST_TOOLS_MAX_OUTPUT_BYTES), far below what would strain the process.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class AnswerTooLarge(httpx2.StreamError):
    """The server's answer passed :data:`MAX_MESSAGE_BYTES` (reading stopped there; the
    SDK turns a stream error into the request's JSON-RPC error)."""


class AnswerUndecodable(httpx2.StreamError):
    """The server's answer uses a content coding Roost did not ask for, or is corrupt."""


class _CappedStream(httpx2.AsyncByteStream):
    """The answer decoded here, in bounded pieces, and capped at ``limit`` decoded bytes:
    httpx would decode each network chunk whole, whatever it grows to."""

    def __init__(self, inner: httpx2.AsyncByteStream, content_encoding: str | None,
                 limit: int) -> None:
        self._inner, self._content_encoding, self._limit = inner, content_encoding, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        try:
            async for chunk in decoded(self._inner, self._content_encoding):
                seen += len(chunk)
                if seen > self._limit:
                    raise AnswerTooLarge(f"the server's answer is larger than {self._limit} "
                                         "bytes, the most Roost reads of one MCP answer")
                yield chunk
        except DecodingRefused as exc:
            raise AnswerUndecodable(f"the server's answer {exc}") from None

    async def aclose(self) -> None:
        await self._inner.aclose()


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Sends every request for ``url``'s host to ``addresses`` (already checked) instead of
    resolving the name again; the request keeps the name in its URL, ``Host`` header and
    TLS SNI, so certificates are verified against the name."""

    def __init__(self, url: str, addresses: Sequence[IPAddress]) -> None:
        parsed = httpx2.URL(url)
        self._host = parsed.raw_host  # ASCII (IDNA) form, no IPv6 brackets: DNS and SNI
        self._addresses = list(addresses)[:_MAX_CONNECT_ATTEMPTS]
        self._inner = httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.raw_host != self._host:
            raise httpx2.ConnectError("refused: not the host the SSRF check accepted",
                                      request=request)
        extensions = dict(request.extensions)
        headers = request.headers.copy()
        headers["Accept-Encoding"] = ACCEPT_ENCODING  # what _CappedStream decodes
        if request.url.scheme == "https":
            extensions["sni_hostname"] = self._host.decode("ascii")
        last: httpx2.ConnectError | None = None
        for ip in self._addresses:
            # A copy: the client keeps the original (with the name) as response.request,
            # which the SDK's same-origin redirect check compares against.
            pinned = httpx2.Request(request.method, request.url.copy_with(host=str(ip)),
                                    headers=headers, stream=request.stream,
                                    extensions=extensions)
            try:
                response = await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError as exc:
                last = exc  # the next address of the same, already checked, name
                continue
            # The SDK reads a JSON answer whole (``response.aread()``): a server that never
            # ends its body, or a small compressed one that decodes to gigabytes, would fill
            # the memory.  Decoded here, so the client sees an unencoded answer.
            assert isinstance(response.stream, httpx2.AsyncByteStream)  # an async transport's
            coding = response.headers.get("content-encoding")
            if coding is not None:
                del response.headers["content-encoding"]
                response.headers.pop("content-length", None)  # the encoded size
            response.stream = _CappedStream(response.stream, coding, MAX_MESSAGE_BYTES)
            return response
        raise last or httpx2.ConnectError("no address to connect to", request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# The SDK's own HTTP client timeouts (seconds), kept here rather than imported from its
# private module: a call's deadline (Roost's, around the session) bounds every call anyway.
_HTTP_TIMEOUT_S: Final = 30.0
_SSE_READ_TIMEOUT_S: Final = 300.0  # between two events of a server's stream


def pinned_http_client(
    url: str, addresses: Sequence[IPAddress], headers: dict[str, str]
) -> httpx2.AsyncClient:
    """The SDK's client settings (its timeouts, no redirects) on a :class:`PinnedTransport`."""
    return httpx2.AsyncClient(
        headers=headers, transport=PinnedTransport(url, addresses), trust_env=False,
        timeout=httpx2.Timeout(_HTTP_TIMEOUT_S, read=_SSE_READ_TIMEOUT_S),
    )


def innermost(exc: BaseException) -> BaseException:
    """What an exception group of one (the SDK's task groups wrap errors) holds."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def failure_of(spec: ServerSpec, exc: BaseException) -> McpError:
    """A safe, actionable message for whatever went wrong talking to the server."""
    exc = innermost(exc)
    if isinstance(exc, FileNotFoundError):
        return McpError(f"MCP server {spec.name!r}: command {spec.command!r} was not found")
    if isinstance(exc, PermissionError):
        return McpError(f"MCP server {spec.name!r}: command {spec.command!r} is not executable")
    if isinstance(exc, UnicodeEncodeError) or any(
            kind.__name__ == "LocalProtocolError" for kind in type(exc).__mro__):
        # The request could not be sent (httpx2, httpcore, h11): their message quotes the
        # offending header value, which may be a secret.
        return McpError(f"MCP server {spec.name!r} failed: {type(exc).__name__}: the request "
                        "could not be sent (a header value is not sendable)")
    # The server's words, with the secrets it was sent hidden before anything is cut (a
    # value straddling the cut, or spanning lines, would no longer match); no NUL to record.
    said = hide_text(str(exc), spec.hidden).replace("\x00", "").strip()
    text = said.splitlines()[0][:300] if said else ""
    what = type(exc).__name__ + (f": {text}" if text else "")
    return McpError(f"MCP server {spec.name!r} failed: {what}")


@asynccontextmanager
async def _guarded(spec: ServerSpec, timeout_s: float, doing: str) -> AsyncIterator[None]:
    try:
        with anyio.fail_after(timeout_s):
            yield
    except McpError:
        raise
    except FetchError:
        raise
    except TimeoutError:
        raise McpTimeout(
            f"MCP server {spec.name!r} did not finish {doing} within {timeout_s:g} s"
        ) from None
    except Exception as exc:
        # An inner deadline's or check's own error, wrapped by the SDK's task group: as it is.
        inner = innermost(exc)
        if isinstance(inner, McpError | FetchError):
            raise inner from None
        raise failure_of(spec, exc) from None


# What is kept of ``serverInfo`` (stored, and returned with every list of servers): its
# strings cut as a tool's title is; icons and keys of the server's own are left out.
_SERVER_INFO_KEYS: Final = ("name", "title", "version", "description", "websiteUrl")
MAX_SERVER_INFO_CHARS: Final = 256


def _server_info(info: Any) -> dict[str, Any]:
    dumped = _dump(info)
    return {key: dumped[key][:MAX_SERVER_INFO_CHARS] for key in _SERVER_INFO_KEYS
            if isinstance(dumped.get(key), str)}


async def discover(spec: ServerSpec, timeout_s: float) -> Discovery:
    """Initialize and list every tool (all pages)."""
    started = time.perf_counter()
    async with _guarded(spec, timeout_s, "discovery"), _session(spec) as (session, init):
        latency = int((time.perf_counter() - started) * 1000)
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(_dump(t) for t in page.tools)
            if len(tools) > MAX_TOOLS:
                raise McpError(f"MCP server {spec.name!r} listed more than {MAX_TOOLS} tools, "
                               "the most Roost keeps of one server")
            cursor = page.next_cursor
            if not cursor:
                break
        else:
            raise McpError(f"MCP server {spec.name!r} listed more than {MAX_PAGES} pages of tools")
        found = Discovery(
            capabilities=_dump(init.capabilities), server_info=_server_info(init.server_info),
            tools=tools, latency_ms=latency,
        )
    # Stored and returned with every list of servers: bounded as a tool's schemas are.
    if (size := json_size(found.capabilities)) > MAX_SCHEMA_BYTES:
        raise McpError(f"MCP server {spec.name!r}: its initialize answer is too large: "
                       f"capabilities of {size} bytes, over {MAX_SCHEMA_BYTES}")
    try:  # a NUL (or a lone surrogate): the server's health could not be recorded
        dump_json_object({"capabilities": found.capabilities, "server_info": found.server_info},
                         what="the initialize answer")
    except PayloadError as exc:
        raise McpError(f"MCP server {spec.name!r}: its initialize answer cannot be stored: "
                       f"{exc}") from None
    return found


@asynccontextmanager
async def _call_session(spec: ServerSpec, pool: StdioPool | None) -> AsyncIterator[ClientSession]:
    if pool is not None and spec.transport == "stdio":
        async with pool.session(spec) as session:
            yield session
    else:
        async with _session(spec) as (session, _):
            yield session


async def call_tool(
    spec: ServerSpec, name: str, arguments: dict[str, Any], *, timeout_s: float, max_bytes: int,
    pool: StdioPool | None = None,
) -> CallOutcome:
    """Call one tool; the result's JSON must fit in ``max_bytes``.  A stdio server's
    session comes from ``pool`` when one is given (else a fresh process, whose start-up
    counts against ``timeout_s``)."""
    doing = f"the call of {name!r}"
    whole = timeout_s
    if pool is not None and spec.transport == "stdio":
        # The pool bounds a process's start (and the ping verdict a call may wait for)
        # itself: the call's own deadline starts once its session is ready, so a server
        # slow to start does not fail the first call.
        whole += pool.limits.start_timeout_s + pool.limits.ping_timeout_s
    async with _guarded(spec, whole, doing), _call_session(spec, pool) as session:
        async with _guarded(spec, timeout_s, doing):
            try:
                result = await session.call_tool(name, arguments)
            except schemaregex.PatternTooSlow as slow:
                raise McpError(
                    f"the result of {name!r} took longer than {schemaregex.BUDGET_S} s to check "
                    f"against the tool's output schema (pattern {slow.pattern[:200]!r}): the "
                    "pattern backtracks too much for this result") from None
            except schemaregex.PatternUnusable as exc:
                raise McpError(f"the output schema of {name!r} has a pattern that cannot be "
                               f"matched: {exc}") from None
        output = _dump(result)
        output.pop("resultType", None)
        output.pop("result_type", None)
        size = len(json.dumps(output, ensure_ascii=False).encode("utf-8"))
        if size > max_bytes:
            raise McpOutputTooLarge(
                f"the result of {name!r} is {size} bytes; the limit is {max_bytes} bytes "
                "(ROOST_TOOLS_MAX_OUTPUT_BYTES)"
            )
        try:  # a NUL (or a lone surrogate) that no text or jsonb column can hold: malformed
            dump_json_object(output, what="the result")
        except PayloadError as exc:
            raise McpError(f"MCP server {spec.name!r} returned a result for {name!r} that "
                           f"cannot be recorded: {exc}") from None
        texts = [c.get("text", "") for c in output.get("content", []) if c.get("type") == "text"]
        return CallOutcome(output=output, is_error=bool(result.is_error), text="\n".join(texts),
                           size=size)
