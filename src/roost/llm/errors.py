"""Errors raised by LLM providers and the gateway, and the gateway's public answers.

They subclass Roost's domain errors so the HTTP layer can turn them into
problem JSON without knowing about providers: an upstream failure is a 502
(504 for timeouts) from Roost's point of view, whatever the upstream said.

``retryable`` tells the gateway whether trying another provider can help.
``upstream_status`` is the status the provider answered with, if any (kept
apart from ``status``, which is the status Roost itself answers with).
Messages never include API keys: providers build them from fixed text plus
the upstream's own (scrubbed, truncated) error message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from roost.errors import BadGateway, BadRequest, Conflict, NotFound, RoostError

if TYPE_CHECKING:
    from roost.llm.orchestration import Attempt


class ProviderError(BadGateway):
    kind: str = "provider_error"
    default_retryable: bool = False

    def __init__(
        self,
        detail: str,
        *,
        provider: str | None = None,
        upstream_status: int | None = None,
        retryable: bool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, extra=extra)
        self.provider = provider
        self.upstream_status = upstream_status
        self.retryable = self.default_retryable if retryable is None else retryable
        # Filled by the gateway when the error ends a fallback chain or an
        # ensemble, so callers can persist one llm_responses row per attempt.
        self.attempts: list[Attempt] = []


class ProviderUnavailable(ProviderError):
    """Connection refused/reset, 5xx, 408/429: another provider (or a retry) may succeed."""

    kind = "unavailable"
    default_retryable = True


class ProviderTimeout(ProviderUnavailable):
    status, title, type_slug = 504, "Gateway timeout", "gateway-timeout"
    kind = "timeout"


class ProviderRequestError(ProviderError):
    """The provider rejected the request (4xx): the same request will fail elsewhere too."""

    kind = "request_error"
    default_retryable = False


class ProviderAuthError(ProviderError):
    """The provider refused Roost's credentials (401/403: its API key is wrong or revoked):
    Roost's configuration, not the request, is at fault, so another provider may answer."""

    kind = "auth"
    default_retryable = True


class ProviderModelMissing(ProviderError):
    """The provider answered 404 (it does not serve the model, e.g. removed since the last
    sync): another provider serving it may answer."""

    kind = "model_missing"
    default_retryable = True


class ProviderBadResponse(ProviderError):
    """The provider answered, but not with something we can parse (junk, wrong shape)."""

    kind = "bad_response"
    default_retryable = True


class ProviderNotSupported(ProviderError):
    """The provider type cannot do this operation at all (e.g. embeddings on Anthropic)."""

    kind = "unsupported"
    default_retryable = True


class AllProvidersFailed(ProviderUnavailable):
    """Every provider in a fallback chain or ensemble failed; ``errors`` holds each cause."""

    kind = "all_failed"

    def __init__(self, detail: str, *, errors: list[ProviderError]) -> None:
        super().__init__(detail, retryable=any(e.retryable for e in errors))
        self.errors = errors


# A lone UTF-16 surrogate: what a JSON ``\\ud800`` escape decodes to, not valid Unicode
# text (it cannot be encoded as UTF-8, so it can be neither stored nor sent).
SURROGATE: Final = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return SURROGATE.search(text) is not None


def clean_text(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL dropped, lone surrogates replaced (U+FFFD)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return SURROGATE.sub("\ufffd", text)


def scrub(text: str, *secrets: str | None, limit: int = 300) -> str:
    """Remove secrets from upstream text and cap its length before it goes into an error;
    NUL characters are dropped and lone surrogates replaced (U+FFFD), so the text can be
    stored (PostgreSQL text holds no NUL) and sent as UTF-8."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(clean_text(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- what callers of the gateway see (roost.llm.records.public_error maps to these) ---


class NoProvider(Conflict):
    type_slug = "no-llm-provider"


class ModelNotFound(NotFound):
    type_slug = "model-not-found"


class ModelCannotEmbed(BadRequest):
    """Embeddings asked of a model whose providers have no embeddings API."""

    type_slug = "model-without-embeddings"


class GatewayFailed(RoostError):
    """Every provider failed; ``status`` is 504 when they all timed out, else 502."""

    status, title, type_slug = 502, "Bad gateway", "llm-provider-failed"

    def __init__(self, detail: str, *, timeout: bool, kind: str) -> None:
        super().__init__(detail)
        self.kind = kind
        if timeout:
            self.status, self.title, self.type_slug = 504, "Gateway timeout", "llm-provider-timeout"


class UpstreamRejected(RoostError):
    """The provider refused the request itself (its 4xx): the caller must change it."""

    status, title, type_slug = 400, "Bad request", "llm-request-rejected"
