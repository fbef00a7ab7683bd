"""LLM providers: the interface, the implementations, and a factory from configuration.

``create_provider`` builds a provider from the fields of an ``llm_providers``
row (type, base_url, api_key, model, config), so the database layer never
needs to know the classes.  Types:

- ``openai``, ``openai_compatible``, ``vllm``, ``ollama``, ``llamacpp``,
  ``lmstudio`` -> OpenAICompatibleProvider (the type only picks the default
  base URL when none is configured);
- ``anthropic`` -> AnthropicProvider;
- ``local`` -> LocalLlamaProvider (needs the optional llama-cpp-python).
"""

from __future__ import annotations

from typing import Any

from roost.llm.anthropic import AnthropicProvider
from roost.llm.base import HTTPProvider, LLMProvider
from roost.llm.errors import ProviderRequestError
from roost.llm.openai_compat import OpenAICompatibleProvider

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
    "anthropic": "https://api.anthropic.com",
}
OPENAI_COMPATIBLE_TYPES = frozenset({"openai", "openai_compatible", "vllm", "ollama", "llamacpp", "lmstudio"})
PROVIDER_TYPES = OPENAI_COMPATIBLE_TYPES | {"anthropic", "local"}

# config keys forwarded to the constructors (everything else in the JSONB
# config is ignored here and left to the caller).
_HTTP_OPTIONS = ("timeout", "connect_timeout", "extra_headers", "retry_bad_response")


def create_provider(
    type: str,
    *,
    name: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    config: dict[str, Any] | None = None,
) -> LLMProvider:
    """Build a provider from an ``llm_providers``-style configuration."""
    kind = type.lower().replace("-", "_").replace(".", "")
    cfg = dict(config or {})
    options = {k: cfg[k] for k in _HTTP_OPTIONS if k in cfg}
    if kind in OPENAI_COMPATIBLE_TYPES:
        url = base_url or DEFAULT_BASE_URLS.get(kind)
        if not url:
            raise ProviderRequestError(f"provider type {type!r} needs a base_url")
        if "stream_usage" in cfg:
            options["stream_usage"] = bool(cfg["stream_usage"])
        return OpenAICompatibleProvider(
            url, api_key=api_key, default_model=model, name=name or kind, **options
        )
    if kind == "anthropic":
        for key in ("anthropic_version", "default_max_tokens"):
            if key in cfg:
                options[key] = cfg[key]
        return AnthropicProvider(
            base_url or DEFAULT_BASE_URLS["anthropic"],
            api_key=api_key,
            default_model=model,
            name=name or kind,
            **options,
        )
    if kind == "local":
        from roost.llm.local import LocalLlamaProvider

        local_opts = {k: cfg[k] for k in ("n_ctx", "n_threads", "seed", "chat_format") if k in cfg}
        return LocalLlamaProvider(cfg.get("model_path"), default_model=model, name=name or kind, **local_opts)
    raise ProviderRequestError(f"unknown provider type {type!r}; use one of {sorted(PROVIDER_TYPES)}")


__all__ = [
    "DEFAULT_BASE_URLS",
    "PROVIDER_TYPES",
    "AnthropicProvider",
    "HTTPProvider",
    "LLMProvider",
    "OpenAICompatibleProvider",
    "create_provider",
]
