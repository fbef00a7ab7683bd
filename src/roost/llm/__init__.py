"""LLM layer: provider clients and gateway orchestration (no database here).

The database-backed parts (models, schemas, service, routes) live beside these
modules and build on this API.
"""

from roost.llm.anthropic import AnthropicProvider
from roost.llm.base import HTTPProvider, LLMProvider
from roost.llm.errors import (
    AllProvidersFailed,
    ProviderBadResponse,
    ProviderError,
    ProviderNotSupported,
    ProviderRequestError,
    ProviderTimeout,
    ProviderUnavailable,
)
from roost.llm.gateway_core import (
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
from roost.llm.openai_compat import OpenAICompatibleProvider
from roost.llm.providers import PROVIDER_TYPES, create_provider
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
    "ProviderBadResponse",
    "ProviderError",
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
