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

from collections.abc import Iterable
from typing import Any

from roost.llm.anthropic import AnthropicProvider
from roost.llm.base import HTTPConfig, HTTPProvider, LLMProvider
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


def _options(config: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The constructor keywords among a row's ``config`` (other keys are left alone)."""
    return {k: config[k] for k in keys if k in config}


def create_provider(
    type: str,
    *,
    name: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    config: dict[str, Any] | None = None,
    max_answer_bytes: int | None = None,
) -> LLMProvider:
    """Build a provider from an ``llm_providers``-style configuration; ``max_answer_bytes``
    (ROOST_LLM_MAX_ANSWER_BYTES) bounds what an HTTP provider reads."""
    kind = type.lower().replace("-", "_").replace(".", "")
    cfg = dict(config or {})
    if kind == "local":
        from roost.llm.local import LocalLlamaProvider

        return LocalLlamaProvider(cfg.get("model_path"), default_model=model, name=name or kind,
                                  **_options(cfg, LocalLlamaProvider.config_keys))
    # HTTPOptions: the keywords every HTTP provider takes, from the row and its config.
    http = {"api_key": api_key, "default_model": model, "name": name or kind,
            **_options(cfg, HTTPConfig.__optional_keys__)}
    if max_answer_bytes is not None:
        http["max_answer_bytes"] = max_answer_bytes
    if kind in OPENAI_COMPATIBLE_TYPES:
        url = base_url or DEFAULT_BASE_URLS.get(kind)
        if not url:
            raise ProviderRequestError(f"provider type {type!r} needs a base_url")
        if "stream_usage" in cfg:
            cfg["stream_usage"] = bool(cfg["stream_usage"])
        return OpenAICompatibleProvider(
            url, **_options(cfg, OpenAICompatibleProvider.config_keys), **http)
    if kind == "anthropic":
        return AnthropicProvider(base_url or DEFAULT_BASE_URLS["anthropic"],
                                 **_options(cfg, AnthropicProvider.config_keys), **http)
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
