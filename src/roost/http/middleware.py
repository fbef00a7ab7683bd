"""Pure-ASGI middleware: request id, request context, access log, metrics, body limit,
content codings, NUL characters in the path or query, ``Cache-Control`` of API answers,
redirects to this server as paths.

Written against raw ASGI rather than ``BaseHTTPMiddleware`` so streamed responses (SSE)
pass through untouched and the per-request cost stays small.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import structlog
from prometheus_client import Counter, Histogram
from starlette.datastructures import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roost import tracing
from roost.context import RequestContext, reset_context, set_context
from roost.http.problems import BodyTooLarge, problem, unexpected_error

log = structlog.get_logger("roost.http")

REQUESTS = Counter(
    "roost_http_requests_total", "HTTP requests by route template", ["method", "route", "status"]
)
LATENCY = Histogram(
    "roost_http_request_duration_seconds", "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# At most 64: the id is each audit record's correlation_id (String(64)), and a longer
# one failed every audited write of the request (and rolled back a failed login's
# throttle counters with its record).  A longer id is replaced, as a malformed one.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _nul_in(scope: Scope) -> str | None:
    """What of the request's query or path holds a NUL (U+0000), which no text column
    stores and PostgreSQL refuses in any text parameter: said here, naming the parameter,
    rather than as the database's "a value is out of range or malformed" (a filter's
    ``?tag=a%00b``).  A query without ``%00`` costs one ``in``."""
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True,
                                     errors="replace"):
            if "\x00" in name or "\x00" in value:
                return (f"query parameter {name.replace(chr(0), '')!r} holds a NUL character "
                        "(U+0000), which no text may hold")
    if "\x00" in scope.get("path", ""):
        return "the path holds a NUL character (U+0000), which no name or id may hold"
    return None


def _coding_beyond(scope: Scope, name: bytes, understood: tuple[str, ...]) -> str | None:
    """The codings the request's ``name`` header lines list (every line: two lines are
    one list, RFC 9110) when one of them is not in ``understood``; None when all are."""
    values = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]
    codings = [c.strip().lower() for value in values for c in value.split(",")]
    if all(c in understood for c in codings):
        return None
    return ", ".join(values)[:64]


def _drop_escaped_cookies(scope: Scope) -> None:
    """Leave out of the ``Cookie`` header each cookie holding a backslash, which no cookie
    value may (RFC 6265) and Roost's never do: the standard library's unquoting, which
    Starlette parses cookies with, takes quadratic time in them on this Python (before
    3.11.10, CVE-2024-7592): one 64 KiB header of backslashes held the event loop for
    seconds, for every request of every client."""
    headers = scope.get("headers")
    if not headers or not any(key == b"cookie" and b"\\" in value for key, value in headers):
        return
    scope["headers"] = [
        (key, b";".join(part for part in value.split(b";") if b"\\" not in part))
        if key == b"cookie" else (key, value) for key, value in headers]


def _route_path(scope: Scope) -> str:
    """The path without the root path the app is mounted at (``--root-path``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _is_console(scope: Scope) -> bool:
    path = _route_path(scope)
    return path == "/console" or path.startswith("/console/")


def _is_api(scope: Scope) -> bool:
    path = _route_path(scope)
    return path.startswith("/api/") or path == "/v1" or path.startswith("/v1/")


def _relative_location(scope: Scope, location: bytes) -> bytes:
    """A Location back to this server as a path.  Starlette's trailing-slash redirect
    (``/console`` -> ``/console/``) builds an absolute URL from the request's Host header,
    which a client or a confused proxy chooses: a path goes to the same place with no host
    to spoof.  Locations elsewhere (another host) stay as they are."""
    try:
        parts = urlsplit(location.decode("latin-1"))
        own = URL(scope=scope)
        if (parts.scheme.lower(), parts.netloc.lower()) != (own.scheme, own.netloc.lower()):
            return location
    except ValueError:  # a Host header no URL can hold ("[x"): no browser follows it either
        return location
    relative = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    if not relative.startswith("/") or relative.startswith("//"):  # "//x" names a host
        return location
    return relative.encode("latin-1")


_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def known_method(method: str) -> str:
    """``method`` for metric labels and span names: one of HTTP's, else ``_OTHER`` (as
    OpenTelemetry's HTTP conventions say): a client inventing methods (each a 405) must
    not add a series to /metrics per method."""
    return method if method in _METHODS else "_OTHER"


class RequestContextMiddleware:
    """Accepts or makes an ``X-Request-ID``, binds it to logs, times and counts the request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, b"x-request-id")
        request_id = supplied if supplied and _VALID_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        client = scope.get("client")
        token = set_context(
            RequestContext(
                request_id=request_id,
                ip_address=client[0][:45] if client else None,
                user_agent=_header(scope, b"user-agent"),
                path=scope.get("path"),
                traceparent=tracing.sole_traceparent(
                    [v.decode("latin-1") for k, v in scope.get("headers", ())
                     if k == b"traceparent"]),
            )
        )
        structlog.contextvars.bind_contextvars(request_id=request_id)
        method = known_method(scope["method"])
        span = tracing.request_span(method, scope.get("path"), scope.get("headers", ()),
                                    request_id)
        status = 500
        api = _is_api(scope)
        response_started = response_complete = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, response_complete
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                    headers.append(_NOSNIFF)  # a JSON answer is never sniffed as HTML
                # API answers are one user's data: no cache keeps them (a shared proxy, the
                # browser's disk after sign-out), unless the route said otherwise.
                if api and not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                if status in _REDIRECTS:
                    headers = [(name, _relative_location(scope, value))
                               if name.lower() == b"location" else (name, value)
                               for name, value in headers]
                message = {**message, "headers": headers}
                response_started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                response_complete = True
            await send(message)

        try:
            _drop_escaped_cookies(scope)
            # The console's pages take a malformed id or filter as their own (a not-found
            # page; the page's script shows the API's refusal): not the API's problem JSON.
            nul = None if _is_console(scope) else _nul_in(scope)
            if nul is not None:
                await problem(422, nul)(scope, _empty_receive, send_with_id)
                return
            transfer = _coding_beyond(scope, b"transfer-encoding", ("", "chunked", "identity"))
            if transfer is not None:
                # The server takes chunked apart and nothing else: a gzip transfer coding
                # would reach the app still compressed (RFC 9112: 501 for one not understood).
                await problem(501, f"Transfer-Encoding {transfer!r} is not supported: send "
                              "the body chunked or with a Content-Length")(
                    scope, _empty_receive, send_with_id)
                return
            coding = _coding_beyond(scope, b"content-encoding", ("", "identity"))
            if coding is not None:
                # Roost decodes no content coding: a gzip body read as JSON is garbage, and
                # one that happens to parse would be stored as if the header were absent.
                await problem(415, f"Content-Encoding {coding!r} is not supported: send the "
                              "body unencoded (identity)",
                              headers={"Accept-Encoding": "identity"})(
                    scope, _empty_receive, send_with_id)
                return
            declared = _header(scope, b"content-length")
            if (declared is not None and declared.isascii() and declared.isdigit()
                    and int(declared) > self.max_body_bytes):
                await self._reject_too_large(scope, send_with_id)
                return
            await self.app(scope, self._limited(receive), send_with_id)
        except Exception as exc:
            # Whatever escaped the app's handlers (a route, a dependency, a middleware
            # inside this one) is answered here, while the request id is still bound:
            # a 500 with the id in body and header.  Not re-raised, so the server keeps
            # the connection alive; only a response cut short must still fail (the server
            # then closes the connection, the one way to tell the client it is truncated).
            if response_started and not response_complete:
                raise
            response = unexpected_error(exc)
            if not response_started:
                await response(scope, _empty_receive, send_with_id)
        finally:
            try:
                elapsed = time.perf_counter() - started
                route = _route_template(scope)
                REQUESTS.labels(method, route, str(status)).inc()
                LATENCY.labels(method, route).observe(elapsed)
                tracing.end_request(span, method, route, status)
                log.info("request", method=scope["method"], path=scope["path"], route=route,
                         status=status, duration_ms=round(elapsed * 1000, 2))
            except Exception:  # bookkeeping must never turn an answer into a failure
                log.exception("request_bookkeeping_failed")
            structlog.contextvars.unbind_contextvars("request_id")
            reset_context(token)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return wrapped

    async def _reject_too_large(self, scope: Scope, send: Send) -> None:
        response = problem(413, f"request body is larger than the limit of {self.max_body_bytes} bytes")
        await response(scope, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _route_template(scope: Scope) -> str:
    """The matched route's path template, so metrics do not explode per id."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
