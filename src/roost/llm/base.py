"""The provider interface and the HTTP plumbing shared by HTTP-based providers.

Every provider maps transport and protocol failures onto the small error
vocabulary in ``roost.llm.errors`` so the gateway can decide, without knowing
the provider type, whether falling back can help.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, Final, Protocol, Self, TypedDict, TypeVar, Unpack, runtime_checkable

import anyio
import h11
import httpx
import structlog

from roost.llm.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderModelMissing,
    ProviderRequestError,
    ProviderTimeout,
    ProviderUnavailable,
    has_surrogate,
    scrub,
)
from roost.llm.hosts import host_refusal
from roost.llm.types import ChatChunk, ChatRequest, ChatResult, EmbeddingResult, HealthResult
from roost.security.decompression import ACCEPT_ENCODING, DecodingRefused, decoded_body

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_PROVIDER_NAME: Final = 128
"""A provider's name, at most, wherever one is named (personas, agents, debates)."""

# Upstream 4xx statuses that mean "try again later" rather than "your request is
# wrong": a rate limit or a request timeout on one provider should let the
# gateway fall back to the next one.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# After a stream's final event, how long the end of its body may take to arrive.
STREAM_DRAIN_S: Final = 1.0
# The largest answer read from a provider (ROOST_LLM_MAX_ANSWER_BYTES); an embeddings
# answer may be larger by this much per input (16,384 dimensions of JSON floats).
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024
EMBEDDING_BYTES_PER_INPUT: Final = 400_000
# Of an error answer (4xx/5xx), only this much is read: its message is all that is used.
ERROR_BODY_BYTES: Final = 64 * 1024
# A token count a provider reports is kept within this (two fit a PostgreSQL integer).
MAX_TOKEN_COUNT: Final = 1_000_000_000
# A JSON escape of a UTF-16 surrogate (``\ud800``-``\udfff``): only an answer holding one
# needs to be searched for a lone surrogate.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_LINE_END: Final = re.compile(r"\r\n|\r|\n")
# An extra header's value at least this long is removed from the errors a provider quotes.
MIN_SECRET_CHARS: Final = 8


@runtime_checkable
class LLMProvider(Protocol):
    """What the gateway needs from a provider.  All methods are coroutine-safe."""

    name: str
    default_model: str | None

    async def chat(self, request: ChatRequest) -> ChatResult: ...

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """An async generator: ``async for chunk in provider.stream_chat(req)``."""
        ...

    async def embed(self, texts: list[str], model: str | None = None) -> EmbeddingResult: ...

    async def list_models(self) -> list[str]: ...

    async def health(self) -> HealthResult: ...

    async def aclose(self) -> None: ...


def elapsed_ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


# RFC 9110 section 5.1 (token) and 5.5: what httpx can send without failing mid-request.
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
AUTH_HEADER_NAMES = frozenset({"authorization", "x-api-key"})
HEADER_VALUE_RULE = "printable ASCII without control characters"
# Headers that frame the message or the connection: httpx sets them itself, and one set
# by hand (Content-Length: 5) makes every request fail before it is sent.
FRAMING_HEADER_NAMES = frozenset({
    "content-length", "transfer-encoding", "host", "connection", "upgrade", "keep-alive",
    "te", "trailer",
})


def framing_header(name: str) -> bool:
    """A hop-by-hop or framing header (``Proxy-*`` too), which no configuration may set."""
    lowered = name.lower()
    return lowered in FRAMING_HEADER_NAMES or lowered.startswith("proxy-")


def header_value_ok(value: str) -> bool:
    """True when ``value`` can be sent as an HTTP header value (printable ASCII, no
    control characters, no surrounding whitespace)."""
    return value.isascii() and value.isprintable() and value == value.strip()


def header_name_ok(name: str) -> bool:
    return _HEADER_NAME_RE.fullmatch(name) is not None


def unsendable_header(headers: Mapping[Any, Any]) -> tuple[str, Any] | None:
    """The first header httpx could not send, as ``("name", name)`` (not an HTTP token)
    or ``("value", name)`` (not a string of printable ASCII without surrounding spaces);
    None when every one can be sent.  Each caller words its own refusal."""
    for name, value in headers.items():
        if not isinstance(name, str) or not header_name_ok(name) or framing_header(name):
            return "name", name
        if not isinstance(value, str) or not header_value_ok(value):
            return "value", name
    return None


def check_headers(headers: Mapping[str, Any], provider: str) -> None:
    """Raise :class:`ProviderRequestError` (never echoing a value) for a header that cannot
    be sent: a key stored before keys were validated must fail as a clear provider error,
    not as an ``UnicodeEncodeError`` deep in httpx."""
    bad = unsendable_header(headers)
    if bad is None:
        return
    kind, name = bad
    if kind == "name":
        raise ProviderRequestError(
            f"provider {provider!r}: an extra header name is not a valid HTTP token or "
            "is a framing header (Content-Length, Host, Connection...); fix "
            "config.extra_headers", provider=provider,
        )
    what = "the API key" if name.lower() in AUTH_HEADER_NAMES else f"header {name!r}"
    fix = "set the key again" if name.lower() in AUTH_HEADER_NAMES else "fix the configuration"
    raise ProviderRequestError(
        f"provider {provider!r}: {what} is not a valid HTTP header value (it must be "
        f"{HEADER_VALUE_RULE}); {fix}", provider=provider,
    )


class HTTPConfig(TypedDict, total=False):
    """What an ``llm_providers`` row's ``config`` may set on any HTTP provider."""

    timeout: float  # seconds, per request (default 60)
    connect_timeout: float | None  # default min(timeout, 10)
    extra_headers: Mapping[str, str] | None
    retry_bad_response: bool  # may the gateway fall back after a malformed answer (default yes)


class HTTPOptions(HTTPConfig, total=False):
    """The keywords every HTTP provider's constructor takes and hands to HTTPProvider."""

    api_key: str | None
    default_model: str | None
    name: str | None  # default: the provider type
    client: httpx.AsyncClient | None  # injected (tests, shared pools); else owned
    max_answer_bytes: int  # ROOST_LLM_MAX_ANSWER_BYTES (default MAX_ANSWER_BYTES)


def error_message(data: Any) -> str | None:
    """The human message of a decoded upstream error body (``error.message``, an ``error``
    string or a ``detail`` string), if it has one."""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return None


class HTTPProvider:
    """Base for providers reached over HTTP with httpx.

    Holds one ``httpx.AsyncClient`` (connection pooling) per provider instance.
    A client can be injected (tests, shared pools); otherwise it is created
    here and closed by ``aclose``.
    """

    provider_type: str = "http"

    def __init__(self, base_url: str, **options: Unpack[HTTPOptions]) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = options.get("api_key") or None
        self.default_model = options.get("default_model")
        self.timeout = timeout = options.get("timeout", 60.0)
        self.name = options.get("name") or self.provider_type
        self.retry_bad_response = options.get("retry_bad_response", True)
        self.extra_headers = dict(options.get("extra_headers") or {})
        self.max_answer_bytes = options.get("max_answer_bytes") or MAX_ANSWER_BYTES
        connect_timeout = options.get("connect_timeout")
        client = options.get("client")
        try:
            refusal = host_refusal(httpx.URL(self.base_url).host)
        except httpx.InvalidURL:
            refusal = None  # its requests fail as an unreachable provider
        if refusal is not None:  # a row stored before base URLs were checked
            raise ProviderRequestError(
                f"provider {self.name!r}: its base_url points at {refusal}; change it",
                provider=self.name)
        # Refuse at build time what could never be sent (the registry turns this into a
        # clear "unusable provider" answer); _headers() checks again before each request.
        check_headers(self.extra_headers, self.name)
        if self._api_key is not None and not header_value_ok(self._api_key):
            check_headers({"Authorization": self._api_key}, self.name)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout or min(timeout, 10.0)),
            # Never follow redirects: a redirect could carry the API key header
            # to a host the operator did not configure.
            follow_redirects=False,
            # Only what _answer_bytes decodes (httpx would offer zstd and br when installed).
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        )

    def __repr__(self) -> str:
        # Deliberately omits the API key.
        return (
            f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, "
            f"default_model={self.default_model!r})"
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- to be provided by subclasses -------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return {}

    def _upstream_message(self, body: str) -> str:
        """Pull the human message out of an upstream error body (both OpenAI and Anthropic
        nest it under ``error.message``)."""
        try:
            data = json.loads(body)
        except ValueError:
            return body
        return error_message(data) or body

    # --- shared helpers ---------------------------------------------------------------

    def _model(self, requested: str | None) -> str:
        model = requested or self.default_model
        if not model:
            raise ProviderRequestError(
                f"provider {self.name!r} has no default model and the request names none",
                provider=self.name,
            )
        return model

    def _headers(self) -> dict[str, str]:
        headers = {**self.extra_headers, **self._auth_headers()}
        check_headers(headers, self.name)
        return headers

    def _safe(self, text: str) -> str:
        # Extra headers may carry credentials (docs/chat.md sends them there); a value too
        # short to be one is left, or an error quoting "1" or "v2" would be garbled.
        secrets = [v for v in self.extra_headers.values() if len(v) >= MIN_SECRET_CHARS]
        return scrub(text, self._api_key, *secrets)

    def _status_error(self, status: int, body: str) -> ProviderError:
        message = self._safe(self._upstream_message(body)) or "(empty body)"
        detail = f"provider {self.name!r} answered HTTP {status}: {message}"
        if status >= 500 or status in RETRYABLE_4XX:
            return ProviderUnavailable(detail, provider=self.name, upstream_status=status)
        if status in (401, 403):  # the provider's configuration in Roost, not the request
            return ProviderAuthError(
                f"{detail} (the provider refused Roost's credentials: an administrator must "
                "fix its API key)", provider=self.name, upstream_status=status)
        if status == 404:
            return ProviderModelMissing(detail, provider=self.name, upstream_status=status)
        return ProviderRequestError(detail, provider=self.name, upstream_status=status)

    def _transport_error(self, exc: httpx.HTTPError) -> ProviderError:
        # Only the exception class goes into the message: httpx messages can
        # contain the URL, and some deployments put keys in query strings.
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeout(
                f"provider {self.name!r} timed out ({type(exc).__name__})", provider=self.name
            )
        return ProviderUnavailable(
            f"provider {self.name!r} is unreachable ({type(exc).__name__})", provider=self.name
        )

    def _bad_response(self, what: str) -> ProviderBadResponse:
        return ProviderBadResponse(
            f"provider {self.name!r} sent a malformed answer: {self._safe(what)}",
            provider=self.name,
            retryable=self.retry_bad_response,
        )

    def _unsendable(self) -> ProviderUnavailable:
        """httpx refused to write the request (h11's LocalProtocolError): the provider's
        configuration, not the caller, is at fault."""
        return ProviderUnavailable(
            f"provider {self.name!r}: the request could not be written (its configuration "
            "makes an invalid HTTP request; check config.extra_headers)", provider=self.name)

    def _parse(self, data: Any, parser: Callable[[Any], T]) -> T:
        """Run a shape parser, turning any shape mismatch into ProviderBadResponse."""
        try:
            return parser(data)
        except ProviderError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError,
                ArithmeticError) as exc:
            raise self._bad_response(f"unexpected shape ({type(exc).__name__}: {exc})") from exc

    def _decode(self, raw: bytes | str) -> Any:
        """JSON from a provider; ValueError for anything that is not, including text with a
        lone UTF-16 surrogate (it can be neither stored nor sent on as UTF-8)."""
        # Decoded strictly here: json.loads of bytes would let UTF-8-encoded surrogates in.
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        try:
            value = json.loads(text)
        except RecursionError:  # not a ValueError: it was a 500, and no fallback tried
            raise ValueError("it is JSON nested too deeply to read") from None
        if _SURROGATE_ESCAPE.search(text) is not None and _holds_surrogate(value):
            raise ValueError("it holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff)")
        return value

    async def _answer_bytes(self, resp: httpx.Response) -> AsyncIterator[bytes]:
        """The decoded body in bounded pieces: not ``aiter_bytes()``, which decodes a
        network chunk whole (a few hundred bytes of stacked gzip would become gigabytes
        before any cap is checked).  A coding Roost did not ask for is a malformed answer."""
        try:
            async for piece in decoded_body(resp):
                yield piece
        except DecodingRefused as exc:
            raise self._bad_response(f"the answer {exc}") from None

    async def _answer_text(self, resp: httpx.Response) -> AsyncIterator[str]:
        """The decoded body as text (as ``aiter_text()``: the answer's charset, else
        UTF-8, undecodable bytes replaced), one leading byte order mark dropped (as the
        Server-Sent Events standard says: else the first field would be U+FEFF + "data"
        and the first event be lost)."""
        # httpx's encoding is one Python knows (an unknown charset falls back to UTF-8).
        decoder = codecs.getincrementaldecoder(resp.encoding or "utf-8")("replace")
        first = True
        async for piece in self._answer_bytes(resp):
            text = decoder.decode(piece)
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            if text:
                yield text
        if text := decoder.decode(b"", final=True):
            yield text

    async def _read_capped(self, resp: httpx.Response, limit: int) -> bytes | None:
        """The body, or None past ``limit`` bytes (decoded: a compression bomb stops too)."""
        parts: list[bytes] = []
        size = 0
        async for part in self._answer_bytes(resp):
            size += len(part)
            if size > limit:
                return None
            parts.append(part)
        return b"".join(parts)

    async def _error_from(self, resp: httpx.Response) -> ProviderError:
        """The ProviderError for an answer of status 400 or more (its first
        ERROR_BODY_BYTES only: the message is all that is used)."""
        parts: list[bytes] = []
        size = 0
        with suppress(ProviderBadResponse):  # an undecodable body: the status alone
            async for part in self._answer_bytes(resp):
                parts.append(part)
                size += len(part)
                if size >= ERROR_BODY_BYTES:
                    break
        text = b"".join(parts)[:ERROR_BODY_BYTES].decode(resp.encoding or "utf-8", "replace")
        return self._status_error(resp.status_code, text)

    async def _request_json(
        self, method: str, path: str, body: dict[str, Any] | None = None, *,
        limit: int | None = None,
    ) -> tuple[Any, int]:
        """Send a request and return (decoded JSON, latency ms), with errors mapped.  An
        answer over ``limit`` bytes (default ``max_answer_bytes``) is a malformed one."""
        limit = limit or self.max_answer_bytes
        start = time.perf_counter()
        try:
            async with self._client.stream(
                method, f"{self.base_url}{path}", json=body, headers=self._headers()
            ) as resp:
                if resp.status_code >= 400:
                    err = await self._error_from(resp)
                    log.info("llm.provider.http_error", provider=self.name,
                             status=resp.status_code, path=path)
                    raise err
                raw = await self._read_capped(resp, limit)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        except h11.LocalProtocolError:
            raise self._unsendable() from None
        latency = elapsed_ms(start)
        if raw is None:
            raise self._bad_response(f"the answer is larger than {limit} bytes "
                                     "(ROOST_LLM_MAX_ANSWER_BYTES)")
        try:
            return self._decode(raw), latency
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
                shown = raw[:80].decode("utf-8", "replace")
                raise self._bad_response(f"not JSON: {shown!r}") from None
            raise self._bad_response(str(exc)) from None

    @asynccontextmanager
    async def _open_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """Open a streaming POST; raises mapped errors for connection failures and 4xx/5xx."""
        try:
            async with self._client.stream(
                "POST", f"{self.base_url}{path}", json=body, headers=self._headers()
            ) as resp:
                if resp.status_code >= 400:
                    raise await self._error_from(resp)
                yield resp
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        except h11.LocalProtocolError:
            raise self._unsendable() from None

    async def _lines(self, resp: httpx.Response) -> AsyncIterator[str]:
        """The body's lines (``\\r\\n``, ``\\r`` or ``\\n`` ends one, as in Server-Sent
        Events); a line longer than ``max_answer_bytes`` characters is a malformed answer
        (a line is held whole until it ends)."""
        pending: list[str] = []  # the pieces of the line not ended yet
        size = 0
        held_cr = False  # the last piece ended with "\\r": a "\\n" may follow
        async for piece in self._answer_text(resp):
            if held_cr:
                piece = "\r" + piece
                held_cr = False
            if "\n" not in piece and "\r" not in piece:
                pending.append(piece)
                size += len(piece)
            else:
                if piece.endswith("\r"):
                    piece, held_cr = piece[:-1], True
                lines = _LINE_END.split("".join(pending) + piece)
                pending = [lines.pop()]
                size = len(pending[0])
                for line in lines:
                    yield line
            if size > self.max_answer_bytes:
                raise self._bad_response(
                    f"a stream line is longer than {self.max_answer_bytes} characters")
        rest = "".join(pending)
        if rest or held_cr:
            yield rest

    async def _sse_events(self, resp: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
        """Minimal Server-Sent Events parser yielding (event name, data) pairs."""
        event: str | None = None
        data: list[str] = []
        try:
            async for line in self._lines(resp):
                if not line:
                    if data:
                        yield event, "\n".join(data)
                    event, data = None, []
                    continue
                if line.startswith(":"):
                    continue  # comment / keep-alive
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "data":
                    data.append(value)
                elif field == "event":
                    event = value
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if data:
            yield event, "\n".join(data)

    async def _drain(self, events: AsyncIterator[tuple[str | None, str]]) -> None:
        """Read what follows a stream's final event (the end of the chunked body), so the
        connection goes back to the pool: a response closed before its end closes its
        connection, and the next call would pay a new TCP (and TLS) handshake.  Bounded:
        a server that keeps the body open past its final event costs only the connection."""
        with anyio.move_on_after(STREAM_DRAIN_S), suppress(ProviderError):
            async for _ in events:
                pass

    async def _timed_health(self, probe: Callable[[], Any]) -> HealthResult:
        start = time.perf_counter()
        try:
            await probe()
        except ProviderError as exc:
            return HealthResult(ok=False, response_time_ms=elapsed_ms(start), error=exc.detail)
        return HealthResult(ok=True, response_time_ms=elapsed_ms(start))


def decode_json_event(provider: HTTPProvider, data: str) -> dict[str, Any]:
    """Decode one SSE data payload that must be a JSON object."""
    try:
        value = provider._decode(data)
    except json.JSONDecodeError:
        raise provider._bad_response(f"stream event is not JSON: {data[:80]!r}") from None
    except ValueError as exc:
        raise provider._bad_response(f"stream event: {exc}") from None
    if not isinstance(value, dict):
        raise provider._bad_response("stream event is not a JSON object")
    return value


def _holds_surrogate(value: Any, depth: int = 0) -> bool:
    """A string (value or key) in decoded JSON holds a lone UTF-16 surrogate."""
    if isinstance(value, str):
        return has_surrogate(value)
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(has_surrogate(k) or _holds_surrogate(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_surrogate(v, depth + 1) for v in value)
    return False


def token_count(value: Any) -> int:
    """A token count from a provider's usage: missing is 0, a negative one 0, a huge one
    MAX_TOKEN_COUNT (it is the provider's word, but it must not fail the call's records);
    not a number, or not finite, is a malformed answer (ValueError, OverflowError)."""
    if value is None or value == "":
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a token count is {value}")
    return max(0, min(int(value), MAX_TOKEN_COUNT))


def usable_model_ids(data: Any) -> list[str]:
    """The model ids of a ``/models`` answer (``{"data": [{"id": ...}, ...]}``) that can be
    stored and asked for: non-empty strings of at most 255 characters without NUL (others
    are skipped).  A list of models none of which is usable is a malformed answer."""
    listed = data["data"]
    if not isinstance(listed, list):
        raise TypeError("data is not a list")
    ids = [m.get("id") for m in listed if isinstance(m, dict)]
    usable = [i for i in ids if isinstance(i, str) and i.strip() and len(i) <= 255
              and "\x00" not in i and not has_surrogate(i)]
    if listed and not usable:
        raise ValueError("it lists models, but none with a usable id (a non-empty string "
                         "of at most 255 characters without NUL)")
    return list(dict.fromkeys(usable))
