"""The route class of every Roost router: JSON request bodies are decoded once, strictly.

Python's ``json`` accepts more than JSON, and ``StrictJSONRequest.json()`` rejects each as
malformed JSON (400, or OpenAI's 400 under ``/v1``), naming the field or the rule, never
the value:

* a lone UTF-16 surrogate (``"\\ud800"``, or the raw bytes of one) yields a ``str`` that
  cannot be encoded as UTF-8 again: stored, encrypted or sent on, it fails far from the
  request;
* ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, and a number too large for a
  float (``1e400``) reads as infinity: none of them can be stored in ``jsonb`` or sent
  on as JSON, and a prompt rendered ``nan``;
* a document nested deeper than ``MAX_JSON_DEPTH`` (100) arrays and objects: nothing
  Roost takes is that deep, and answering with such a value (metadata stored as given)
  failed in the serializer, a 500; deeper still, the decoder itself runs out of stack.

A body is UTF-8 (RFC 8259 8.1; a leading UTF-8 byte order mark is dropped): ``json``
would guess UTF-16 or UTF-32 from bytes and decode them, so the bytes are decoded here.
Two things ``json`` raises as other errors than ``JSONDecodeError`` (which FastAPI answered
with a bare "There was an error parsing the body") are malformed JSON too: bytes that are
not UTF-8 text (UTF-16 and UTF-32 included), and an integer of more than 4300 digits
(Python's limit on converting digits to ``int``).

Every router is a :class:`RoostRouter`, whose routes are ``RoostRoute`` (a test checks
every route).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi import HTTPException, Request, Response, params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute, APIRouter
from starlette._utils import get_route_path  # what FastAPI's own matching uses
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

_SURROGATE = re.compile("[\ud800-\udfff]")


class LoneSurrogateError(json.JSONDecodeError):
    """A JSON string holds an unpaired UTF-16 surrogate: not valid Unicode text."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"{where} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape); "
            "text must be valid Unicode", "", 0)


def _field(key: object) -> str:
    text = _SURROGATE.sub("\ufffd", str(key))
    return text if len(text) <= 64 else text[:63] + "…"


def _surrogate_at(value: Any) -> str | None:
    """Where (``the string at messages[0].content``) a string or key has a surrogate."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return f"the string at {path}" if path else "the top-level string"
        elif isinstance(node, dict):
            items = list(node.items())
            for key, child in reversed(items):
                where = f"{path}.{_field(key)}" if path else _field(key)
                if _SURROGATE.search(key):
                    return f"the key {where}"
                stack.append((child, where))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(node))))
    return None


class NotJSONNumberError(json.JSONDecodeError):
    """``NaN``, ``Infinity``, ``-Infinity``, or a number beyond a float's range."""

    def __init__(self) -> None:
        super().__init__("a number is NaN, Infinity or beyond a float's range (about "
                         "1.8e308): JSON numbers are finite", "", 0)


MAX_JSON_DEPTH: Final = 100
"""How deep arrays and objects may nest in a request body (the document itself is level 1)."""


class NotUnicodeError(json.JSONDecodeError):
    """The body's bytes are not UTF-8 text."""

    def __init__(self, exc: UnicodeDecodeError) -> None:
        super().__init__(f"the body is not valid {exc.encoding.upper()} text (byte "
                         f"{exc.start}); JSON must be UTF-8", "", 0)


class IntegerTooLongError(json.JSONDecodeError):
    """An integer with more digits than Python converts (``sys.get_int_max_str_digits``)."""

    def __init__(self) -> None:
        super().__init__(f"an integer has more than {sys.get_int_max_str_digits()} digits",
                         "", 0)


class NestedTooDeepError(json.JSONDecodeError):
    """Arrays and objects nested deeper than ``MAX_JSON_DEPTH``."""

    def __init__(self) -> None:
        super().__init__(f"arrays and objects are nested deeper than {MAX_JSON_DEPTH} levels",
                         "", 0)


def _not_a_number(token: str) -> Any:
    raise NotJSONNumberError()


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise NotJSONNumberError()
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in ``value`` (one)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def loads_strict(data: bytes | str) -> Any:
    """``json.loads`` that accepts JSON only: a ``JSONDecodeError`` (``LoneSurrogateError``,
    ``NotJSONNumberError``, ``NestedTooDeepError``, ``NotUnicodeError``,
    ``IntegerTooLongError``) for a string with a lone surrogate, a number that is not
    finite, nesting deeper than ``MAX_JSON_DEPTH``, bytes that are not UTF-8 text (a
    leading UTF-8 byte order mark is dropped; UTF-16 and UTF-32, which ``json.loads``
    would detect and decode, are refused) or an integer too long to convert.  A document
    with no more brackets than that cannot be too deep, and an ASCII one without ``\\u``
    escapes holds no surrogate: each check is skipped when it cannot fail."""
    try:
        # Decoded here, as UTF-8 only; "surrogatepass" as json.loads does, so the raw
        # bytes of a surrogate are named as a lone surrogate below.
        text = data.decode("utf-8-sig", "surrogatepass") if isinstance(data, bytes) else data
        # _finite costs about 0.4 us a float (a regular expression finding the numbers
        # that could overflow cost more on any large body, floats or not).
        value = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        raise NestedTooDeepError() from None
    except UnicodeDecodeError as exc:
        raise NotUnicodeError(exc) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # the only other one: int() refusing too many digits
        if "digits" not in str(exc):
            raise
        raise IntegerTooLongError() from None
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if (isinstance(value, dict | list) and raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
            and _deeper_than(value, MAX_JSON_DEPTH)):
        raise NestedTooDeepError()
    if raw.isascii() and b"\\u" not in raw:
        return value
    where = _surrogate_at(value)
    if where is not None:
        raise LoneSurrogateError(where)
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (what FastAPI decodes as JSON)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


def _without_body(send: Send) -> Send:
    """``send`` for a HEAD answer: the GET answer's status and headers, no body."""
    async def head_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return head_send


class RoostRoute(APIRoute):
    """Hands the endpoint (and FastAPI's body parsing) a ``StrictJSONRequest``; answers a
    body that is not declared JSON with 415 (FastAPI handed the bytes to validation, a
    422 "Input should be a valid dictionary"); serves HEAD wherever it serves GET.

    FastAPI's routes, unlike Starlette's, do not serve HEAD (RFC 9110 9.1: a server
    serves HEAD wherever it serves GET; uptime checkers probe ``/health`` with it).  HEAD
    runs the GET endpoint (which sees GET) and drops the body; it is not an operation of
    the OpenAPI document.  A streamed GET (server-sent events) has no HEAD: it would take
    a stream slot and run a stream whose every byte is dropped."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.serves_head = "GET" in (self.methods or ()) and not self._streams()

    def _streams(self) -> bool:
        response_class = self.response_class
        if isinstance(response_class, DefaultPlaceholder):
            response_class = response_class.value
        return (issubclass(response_class, StreamingResponse)
                or any("text/event-stream" in (answer.get("content") or {})
                       for answer in self.responses.values()))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.PARTIAL and self.serves_head and scope.get("method") == "HEAD":
            return Match.FULL, child_scope
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.serves_head and scope.get("method") == "HEAD":
            await super().handle({**scope, "method": "GET"}, receive, _without_body(send))
            return
        await super().handle(scope, receive, send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()  # also called by APIRoute.__init__
        json_body = self.body_field is not None and not isinstance(
            self.body_field.field_info, params.Form)  # File is a Form too

        async def route(request: Request) -> Response:
            strict = StrictJSONRequest(request.scope, request.receive)
            if json_body and not _is_json(strict.headers.get("content-type")) \
                    and await strict.body():
                raise HTTPException(415, "the request body must be JSON, sent with "
                                         "'Content-Type: application/json'")
            return await handler(strict)

        return route


class RoostRouter(APIRouter):
    """An ``APIRouter`` of ``RoostRoute`` routes that answers "no match" at once for a path
    outside its routes' literal prefixes.

    FastAPI 0.165 includes routers lazily: the app tries each included router in turn and
    each walks all of its routes (regular expressions, scope bookkeeping), so a request
    to the last domain's routes paid for every route of every router before it, about a
    tenth of an authenticated read's Python time (docs/benchmarks.md, "Per-request
    overhead").  A path that starts with none of this router's literal prefixes (a route's
    path up to its first ``{``) cannot match any of its routes' anchored patterns, so the
    answer is the same, without the walk.  Routes are only added at start-up; the
    prefixes are computed again whenever the number of routes changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("route_class", RoostRoute)
        super().__init__(*args, **kwargs)
        self._prefixes: tuple[str, ...] | None = None
        self._prefixes_for = -1

    def _literal_prefixes(self) -> tuple[str, ...] | None:
        """None when some route has no plain path (a mount, a nested router): no guard."""
        if self._prefixes_for != len(self.routes):
            paths = [getattr(route, "path", None) for route in self.routes]
            self._prefixes = (None if any(not isinstance(p, str) for p in paths)
                              else tuple({str(p).split("{", 1)[0] for p in paths}))
            self._prefixes_for = len(self.routes)
        return self._prefixes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        prefixes = self._literal_prefixes()
        if prefixes is not None and scope["type"] in ("http", "websocket") \
                and not get_route_path(scope).startswith(prefixes):
            return Match.NONE, {}
        return super().matches(scope)
