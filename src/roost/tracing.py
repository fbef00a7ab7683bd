"""OpenTelemetry traces: a span per HTTP request, SQL transaction (or statement), LLM call,
tool call, queue job and agent run step (docs/operations.md, "Traces").

Off unless ``ROOST_OTEL_ENABLED=true``; then it needs the ``otel`` extra (the SDK and the
OTLP http/protobuf exporter) and sends spans where the standard ``OTEL_*`` variables say
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``,
``OTEL_SERVICE_NAME``...).  Off, nothing of OpenTelemetry is imported and every function
here returns at once: :func:`span` hands back the one shared no-op :data:`NOOP`.

Instrumented code never touches OpenTelemetry itself, only this module:

* ``with tracing.span("name", attributes={...}) as s:`` a span that is the current one
  inside the block (what starts there is its child); ``s.set(key, value)``,
  ``s.fail(error)``; an exception leaving the block marks it failed;
* :func:`start`: a span that is *not* made current, ended by ``.end()`` elsewhere (a
  streamed LLM call, opened in one function and closed in another);
* :func:`request_span` / :func:`end_request`: the HTTP server span (the middleware);
* :func:`instrument_engine`: SQL spans from SQLAlchemy's engine events;
* :func:`run_parent`: the parent of an agent run's spans, from the run's stored
  ``trace_id``, so the OpenTelemetry trace id and the stored one agree.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from roost.config import Settings

Kind = Literal["internal", "server", "client", "consumer", "producer"]
AttributeValue = str | bool | int | float | None

INSTALL_HINT: Final = ("ROOST_OTEL_ENABLED=true needs the roost[otel] extra "
                       "(opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http): "
                       "pip install 'roost[otel]'")
MAX_STATEMENT_CHARS: Final = 2000  # db.query.text of a statement span
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SQL_KEY: Final = "roost.tracing.sql"

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None
_sql_mode: str = "transaction"


class SpanHandle:
    """A span as instrumented code sees it.  This base class is the no-op one."""

    __slots__ = ()

    recording: bool = False

    def set(self, key: str, value: AttributeValue) -> None:
        """An attribute (``None`` is left out)."""

    def update(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Several attributes."""

    def rename(self, name: str) -> None:
        """A better name once it is known (the HTTP route after routing)."""

    def fail(self, error: BaseException | str) -> None:
        """Mark it failed (status ERROR), with the exception recorded when there is one."""

    def end(self) -> None:
        """End it (and stop it being the current span, when it was made so)."""

    def __enter__(self) -> SpanHandle:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass


NOOP: Final = SpanHandle()


class _Recording(SpanHandle):
    __slots__ = ("_span", "_token")

    recording = True

    def __init__(self, span: Any, *, current: bool) -> None:
        self._span = span
        self._token: object = None
        if current:
            from opentelemetry import context, trace

            self._token = context.attach(trace.set_span_in_context(span))

    def set(self, key: str, value: AttributeValue) -> None:
        if value is not None:
            self._span.set_attribute(key, value)

    def update(self, attributes: Mapping[str, AttributeValue]) -> None:
        self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def fail(self, error: BaseException | str) -> None:
        from opentelemetry.trace import Status, StatusCode

        if isinstance(error, BaseException):
            self._span.record_exception(error)
            detail = str(getattr(error, "detail", "") or error) or type(error).__name__
        else:
            detail = error
        self._span.set_status(Status(StatusCode.ERROR, detail[:500]))

    def end(self) -> None:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self._span.end()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            if isinstance(exc, Exception):
                self.fail(exc)
            else:  # cancelled (a client gone, a timeout, shutdown): not the span's fault
                self.set("roost.cancelled", True)
        self.end()


# --- set-up -------------------------------------------------------------------------------


def enabled() -> bool:
    return _tracer is not None


def configure(settings: Settings) -> bool:
    """Turn tracing on when ``settings.otel_enabled`` (once per process; never turns it
    off).  Spans go by OTLP http/protobuf to the ``OTEL_*`` variables' endpoint in
    batches.  Without the extra: RuntimeError naming the install command."""
    if _tracer is not None or not settings.otel_enabled:
        return _tracer is not None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    problem = settings_problem(settings)
    if problem is not None:
        raise RuntimeError(f"invalid configuration: {problem}")
    install(OTLPSpanExporter(), batch=True, sql=settings.otel_sql)
    return True


_BATCH_VARIABLES: Final = {
    "schedule_delay_millis": "OTEL_BSP_SCHEDULE_DELAY", "max_queue_size": "OTEL_BSP_MAX_QUEUE_SIZE",
    "max_export_batch_size": "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "export_timeout_millis": "OTEL_BSP_EXPORT_TIMEOUT"}


def settings_problem(settings: Settings) -> str | None:
    """What is wrong with the ``OTEL_BSP_*`` batching variables when tracing is on (the
    SDK refuses them with a ValueError when the batch processor is built: a traceback in
    every command that opens the database), as one line naming them; None when fine."""
    if not settings.otel_enabled:
        return None
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:  # configure() names the extra to install
        return None
    for variable in _BATCH_VARIABLES.values():  # the SDK logs a traceback and goes on
        value = os.environ.get(variable)
        if value is not None and not re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return f"{variable} must be a whole number (the OpenTelemetry SDK's batching variables)"
    try:
        BatchSpanProcessor(InMemorySpanExporter()).shutdown()  # type: ignore[no-untyped-call]
    except ValueError as exc:
        said = str(exc).rstrip(".")
        for parameter, variable in _BATCH_VARIABLES.items():
            said = said.replace(parameter, variable)
        return f"{said} (the OpenTelemetry SDK's batching variables)"
    return None


def install(exporter: Any, *, batch: bool = False, sql: str = "transaction") -> None:
    """Trace to ``exporter`` (an SDK ``SpanExporter``) from now on; ``batch``: through a
    ``BatchSpanProcessor`` (the server), else each span as it ends (tests)."""
    global _tracer, _provider, _sql_mode
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    import roost

    uninstall()
    attributes: dict[str, Any] = {"service.version": roost.__version__,
                                  "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"}
    if not os.environ.get("OTEL_SERVICE_NAME") and \
            "service.name=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = "roost"
    provider = TracerProvider(resource=Resource.create(attributes))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _provider, _sql_mode = provider, sql
    _tracer = provider.get_tracer("roost", roost.__version__)


def uninstall() -> None:
    """Flush and stop tracing (spans started afterwards are no-ops)."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        provider.shutdown()


def flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


# --- spans --------------------------------------------------------------------------------


def _kind(kind: Kind) -> Any:
    from opentelemetry.trace import SpanKind

    return {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER,
            "client": SpanKind.CLIENT, "consumer": SpanKind.CONSUMER,
            "producer": SpanKind.PRODUCER}[kind]


def _start(name: str, kind: Kind, attributes: Mapping[str, AttributeValue] | None,
           parent: Any, link_current: bool) -> Any:
    links = None
    if link_current:  # e.g. the job that runs an agent run, whose trace is the run's
        from opentelemetry import trace
        from opentelemetry.trace import Link

        here = trace.get_current_span().get_span_context()
        links = [Link(here)] if here.is_valid else None
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    return _tracer.start_span(name, context=parent, kind=_kind(kind), attributes=clean,
                              links=links)


def span(name: str, *, kind: Kind = "internal",
         attributes: Mapping[str, AttributeValue] | None = None, parent: Any = None,
         link_current: bool = False) -> SpanHandle:
    """A span that is the current one inside ``with``; ``parent``: a context from
    :func:`run_parent` instead of the current span; ``link_current``: link the current
    span (the new one starts another trace)."""
    if _tracer is None:
        return NOOP
    return _Recording(_start(name, kind, attributes, parent, link_current), current=True)


def start(name: str, *, kind: Kind = "internal",
          attributes: Mapping[str, AttributeValue] | None = None) -> SpanHandle:
    """A child of the current span that is not made current: end it with ``.end()``."""
    if _tracer is None:
        return NOOP
    return _Recording(_start(name, kind, attributes, None, False), current=False)


def current() -> SpanHandle:
    """The current span (to add attributes or mark it failed), or :data:`NOOP`."""
    if _tracer is None:
        return NOOP
    from opentelemetry import trace

    found = trace.get_current_span()
    return _Recording(found, current=False) if found.is_recording() else NOOP


def traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` value, or None (off, or no span)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


# A ``traceparent`` header as W3C Trace Context (and OpenTelemetry's propagator) reads it:
# lower-case hex only; a version above 00 may carry more fields.
_HEADER = re.compile(r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})"
                     r"(-.*|[ \t]*)")
MAX_TRACEPARENT_CHARS: Final = 512  # longer is ignored, as OpenTelemetry's propagator does


def header_trace_id(traceparent: str | None) -> str | None:
    """The trace id a caller's ``traceparent`` header names, or None when W3C Trace
    Context says to ignore it (as the request's span does: the two must agree): not
    lower-case hex, an all-zero trace or span id, version ff, or version 00 with more
    fields."""
    found = header_trace(traceparent)
    return None if found is None else found[0]


def header_trace(traceparent: str | None) -> tuple[str, bool] | None:
    """:func:`header_trace_id` and the header's sampled flag."""
    if not traceparent or len(traceparent) > MAX_TRACEPARENT_CHARS:
        return None
    match = _HEADER.fullmatch(traceparent)
    if match is None:
        return None
    version, trace, span_id, flags, rest = match.groups()
    if trace == "0" * 32 or span_id == "0" * 16 or version == "ff" or (
            version == "00" and rest.startswith("-")):
        return None
    return trace, bool(int(flags, 16) & 1)


def sole_traceparent(values: Sequence[str]) -> str | None:
    """The request's ``traceparent`` when it carries exactly one (two or more are invalid,
    W3C Trace Context: ignored, as the request's span ignores them)."""
    return values[0] if len(values) == 1 else None


def trace_ids(trace_id: str) -> tuple[int, int, bool]:
    """The OpenTelemetry trace id, parent span id and sampled flag a stored ``trace_id``
    stands for: its fields when it is a W3C ``traceparent`` (runs started through the API
    or a chat), else derived from its SHA-256 (``run-<uuid>``, workflow ids)."""
    match = _TRACEPARENT.match(trace_id.strip().lower())
    if match and match.group(2) != "0" * 32 and match.group(3) != "0" * 16:
        return int(match.group(2), 16), int(match.group(3), 16), bool(int(match.group(4), 16) & 1)
    digest = hashlib.sha256(trace_id.encode()).digest()
    return (int.from_bytes(digest[:16], "big") or 1,
            int.from_bytes(digest[16:24], "big") or 1, True)


def run_parent(trace_id: str) -> Any:
    """The parent context of a run's spans: the trace its stored ``trace_id`` names
    (:func:`trace_ids`), so every span of the run carries that trace id.  None when off."""
    if _tracer is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_int, span_int, sampled = trace_ids(trace_id)
    parent = SpanContext(trace_int, span_int, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))
    return trace.set_span_in_context(NonRecordingSpan(parent))


# --- HTTP ---------------------------------------------------------------------------------


def request_span(method: str, path: str | None, headers: Iterable[tuple[bytes, bytes]],
                 request_id: str) -> SpanHandle:
    """The server span of one HTTP request, current until :func:`end_request`; a child
    of the caller's trace when the request carries a W3C ``traceparent``."""
    if _tracer is None:
        return NOOP
    found = [(key.decode("latin-1"), value.decode("latin-1")) for key, value in headers
             if key in (b"traceparent", b"tracestate")]
    # Two traceparent headers are invalid (W3C Trace Context): a new trace, not the last
    # one silently (the run routes read the same way: sole_traceparent).
    parents = [v for k, v in found if k == "traceparent"]
    # Several tracestate fields are one list (W3C Trace Context, RFC 9110): joined, not
    # the last one only.
    states = [v for k, v in found if k == "tracestate"]
    carrier = ({"traceparent": parents[0]} | ({"tracestate": ",".join(states)} if states else {})
               if len(parents) == 1 else {})
    parent = None
    if carrier:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(carrier)
    return _Recording(_start(method, "server", {
        "http.request.method": method, "url.path": path, "roost.request_id": request_id,
    }, parent, False), current=True)


def end_request(handle: SpanHandle, method: str, route: str, status: int) -> None:
    """Name the request's span after its route template (``GET /api/v1/runs/{run_id}``),
    record the status (5xx: failed) and end it."""
    if not handle.recording:
        return
    handle.rename(f"{method} {route}")
    handle.update({"http.route": route, "http.response.status_code": status})
    if status >= 500:
        handle.fail(f"HTTP {status}")
    handle.end()


# --- SQL ----------------------------------------------------------------------------------


def instrument_engine(sync_engine: Any) -> None:
    """SQL spans for this engine (``AsyncEngine.sync_engine``) when tracing is on:
    ``ROOST_OTEL_SQL=transaction`` (default) one span per transaction with its statement
    count and kinds, ``statement`` one per statement with its text (parameters never),
    ``off`` none."""
    if _tracer is None or _sql_mode == "off":
        return
    url = getattr(sync_engine, "url", None)  # host and port tell a replica from the primary
    base: dict[str, AttributeValue] = {
        "db.system.name": "postgresql", "db.namespace": getattr(url, "database", None),
        "server.address": getattr(url, "host", None), "server.port": getattr(url, "port", None)}
    if _sql_mode == "statement":
        _statement_spans(sync_engine, base)
    else:
        _transaction_spans(sync_engine, base)


def _verb(statement: str) -> str:
    head = statement.lstrip()[:16].split(None, 1)
    return head[0].upper() if head else "SQL"


def _transaction_spans(engine: Any, base: dict[str, AttributeValue]) -> None:
    from sqlalchemy import event

    def finish(conn: Any, outcome: str) -> None:
        entry = conn.info.pop(_SQL_KEY, None)
        if entry is None:
            return
        handle, count, verbs = entry
        handle.update({"roost.db.statements": count, "roost.db.outcome": outcome,
                       "db.operation.name": ",".join(sorted(verbs)) or None})
        handle.end()

    def _begin(conn: Any) -> None:
        if _tracer is None:
            return
        finish(conn, "abandoned")
        conn.info[_SQL_KEY] = [start("db.transaction", kind="client", attributes=base), 0, set()]

    def _statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                   executemany: bool) -> None:
        entry = conn.info.get(_SQL_KEY)
        if entry is not None:
            entry[1] += 1
            if len(entry[2]) < 8:
                entry[2].add(_verb(statement))

    def _commit(conn: Any) -> None:
        finish(conn, "commit")

    def _rollback(conn: Any) -> None:
        finish(conn, "rollback")

    event.listen(engine, "begin", _begin)
    event.listen(engine, "before_cursor_execute", _statement)
    event.listen(engine, "commit", _commit)
    event.listen(engine, "rollback", _rollback)


def _statement_spans(engine: Any, base: dict[str, AttributeValue]) -> None:
    from sqlalchemy import event

    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if _tracer is None:
            return
        verb = _verb(statement)
        handle = start(verb, kind="client", attributes={
            **base, "db.operation.name": verb, "db.query.text": statement[:MAX_STATEMENT_CHARS]})
        conn.info.setdefault(_SQL_KEY, []).append(handle)

    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        stack = conn.info.get(_SQL_KEY)
        if stack:
            stack.pop().end()

    def _error(context: Any) -> None:
        conn = context.connection
        stack = conn.info.get(_SQL_KEY) if conn is not None else None
        if stack:
            handle = stack.pop()
            handle.fail(context.original_exception)
            handle.end()

    event.listen(engine, "before_cursor_execute", _before)
    event.listen(engine, "after_cursor_execute", _after)
    event.listen(engine, "handle_error", _error)
