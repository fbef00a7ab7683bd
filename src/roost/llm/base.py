"""The provider interface and the HTTP plumbing shared by HTTP-based providers.

Every provider maps transport and protocol failures onto the small error
vocabulary in ``roost.llm.errors`` so the gateway can decide, without knowing
the provider type, whether falling back can help.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, Final, Protocol, Self, TypedDict, TypeVar, Unpack, runtime_checkable

import anyio
import httpx
import structlog

from roost.llm.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRequestError,
    ProviderTimeout,
    ProviderUnavailable,
    scrub,
)
from roost.llm.types import ChatChunk, ChatRequest, ChatResult, EmbeddingResult, HealthResult

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Upstream 4xx statuses that mean "try again later" rather than "your request is
# wrong": a rate limit or a request timeout on one provider should let the
# gateway fall back to the next one.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# After a stream's final event, how long the end of its body may take to arrive.
STREAM_DRAIN_S: Final = 1.0


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
        if not isinstance(name, str) or not header_name_ok(name):
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
            f"provider {provider!r}: an extra header name is not a valid HTTP token; "
            "fix config.extra_headers", provider=provider,
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
        connect_timeout = options.get("connect_timeout")
        client = options.get("client")
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
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])
            if isinstance(err, str):
                return err
            if isinstance(data.get("detail"), str):
                return str(data["detail"])
        return body

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
        return scrub(text, self._api_key)

    def _status_error(self, status: int, body: str) -> ProviderError:
        message = self._safe(self._upstream_message(body)) or "(empty body)"
        detail = f"provider {self.name!r} answered HTTP {status}: {message}"
        if status >= 500 or status in RETRYABLE_4XX:
            return ProviderUnavailable(detail, provider=self.name, upstream_status=status)
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

    def _parse(self, data: Any, parser: Callable[[Any], T]) -> T:
        """Run a shape parser, turning any shape mismatch into ProviderBadResponse."""
        try:
            return parser(data)
        except ProviderError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self._bad_response(f"unexpected shape ({type(exc).__name__}: {exc})") from exc

    async def _request_json(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[Any, int]:
        """Send a request and return (decoded JSON, latency ms), with errors mapped."""
        start = time.perf_counter()
        try:
            resp = await self._client.request(
                method, f"{self.base_url}{path}", json=body, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        latency = elapsed_ms(start)
        if resp.status_code >= 400:
            err = self._status_error(resp.status_code, resp.text)
            log.info(
                "llm.provider.http_error",
                provider=self.name,
                status=resp.status_code,
                path=path,
            )
            raise err
        try:
            return resp.json(), latency
        except ValueError:
            raise self._bad_response(f"not JSON: {resp.text[:80]!r}") from None

    @asynccontextmanager
    async def _open_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """Open a streaming POST; raises mapped errors for connection failures and 4xx/5xx."""
        try:
            async with self._client.stream(
                "POST", f"{self.base_url}{path}", json=body, headers=self._headers()
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise self._status_error(resp.status_code, resp.text)
                yield resp
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    async def _sse_events(self, resp: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
        """Minimal Server-Sent Events parser yielding (event name, data) pairs."""
        event: str | None = None
        data: list[str] = []
        try:
            async for line in resp.aiter_lines():
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
        value = json.loads(data)
    except ValueError:
        raise provider._bad_response(f"stream event is not JSON: {data[:80]!r}") from None
    if not isinstance(value, dict):
        raise provider._bad_response("stream event is not a JSON object")
    return value
