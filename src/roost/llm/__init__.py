"""The LLM domain: provider clients, the gateway (routing, fallback, ensembles) and the
records every call leaves in the database.

Calling a model from another domain: ``roost.llm.calls`` (see docs/chat.md, "Calling a
model from a domain").  Where the rest lives:

- ``types``, ``errors``: requests, answers, chunks and the provider error vocabulary;
- ``base``, ``openai_compat``, ``anthropic``, ``local``: the provider clients;
  ``provider_types``: building one from an ``llm_providers`` row's type and config;
- ``orchestration``: fallback chains, streaming fallback and ensembles (no database);
- ``gateway``: :class:`LLMGateway`, what every call needs (database, ciphers, provider
  pool); ``provider_pool``: the process's provider instances;
- ``providers`` (the registry's administration), ``routing``, ``execution``, ``records``,
  ``orphans``, ``calls``: the database-backed gateway; ``routes``, ``openai_routes``: HTTP.

This package re-exports the provider clients and the orchestration, not the
database-backed modules.
"""

from roost.llm.anthropic import AnthropicProvider
from roost.llm.base import HTTPProvider, LLMProvider
from roost.llm.errors import (
    AllProvidersFailed,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderModelMissing,
    ProviderNotSupported,
    ProviderRequestError,
    ProviderTimeout,
    ProviderUnavailable,
)
from roost.llm.openai_compat import OpenAICompatibleProvider
from roost.llm.orchestration import (
    Attempt,
    EnsembleOutcome,
    FallbackStream,
    ProviderRef,
    Strategy,
    call_with_fallback,
    ensemble,
    normalise_content,
    response_confidence,
    stream_with_fallback,
)
from roost.llm.provider_types import PROVIDER_TYPES, create_provider
from roost.llm.types import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    HealthResult,
    StreamAccumulator,
    ToolCall,
    ToolCallDelta,
)

__all__ = [
    "PROVIDER_TYPES",
    "AllProvidersFailed",
    "AnthropicProvider",
    "Attempt",
    "ChatChunk",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "EmbeddingResult",
    "EnsembleOutcome",
    "FallbackStream",
    "HTTPProvider",
    "HealthResult",
    "LLMProvider",
    "OpenAICompatibleProvider",
    "ProviderAuthError",
    "ProviderBadResponse",
    "ProviderError",
    "ProviderModelMissing",
    "ProviderNotSupported",
    "ProviderRef",
    "ProviderRequestError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "Strategy",
    "StreamAccumulator",
    "ToolCall",
    "ToolCallDelta",
    "call_with_fallback",
    "create_provider",
    "ensemble",
    "normalise_content",
    "response_confidence",
    "stream_with_fallback",
]
