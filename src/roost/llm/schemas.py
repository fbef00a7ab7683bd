"""Pydantic shapes of the provider registry and LLM request records (Roost's own API)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
)

from roost.inputs import StrictInput, holds_control, holds_nul, is_blank, json_size
from roost.llm.base import (
    AUTH_HEADER_NAMES,
    HEADER_VALUE_RULE,
    MAX_PROVIDER_NAME,
    framing_header,
    header_value_ok,
    unsendable_header,
)
from roost.llm.hosts import host_refusal
from roost.llm.orchestration import STRATEGIES, Strategy

# Accepted as ``type``: the two protocols plus names of OpenAI-compatible servers (stored
# as "openai"; they only pick a default base URL) and the in-process local model.
PROVIDER_TYPE_INPUTS = (
    "openai", "anthropic", "local", "openai_compatible", "vllm", "ollama", "llamacpp", "lmstudio",
)
ProviderTypeInput = Literal[
    "openai", "anthropic", "local", "openai_compatible", "vllm", "ollama", "llamacpp", "lmstudio"
]
NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_PROVIDER_NAME - 1}}}$"


def not_blank(value: str) -> str:
    if is_blank(value):
        raise ValueError("must not be blank")
    return value


def one_line(value: str) -> str:
    if holds_control(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


# A registered LLM provider's name where another domain names one (a persona's default, an
# agent's preferred, a debate participant's; the services check that one is: 422 otherwise).
ProviderName = Annotated[str, Field(min_length=1, max_length=MAX_PROVIDER_NAME),
                         AfterValidator(not_blank), AfterValidator(one_line)]
# A model's name as its provider knows it: shown in lists and the CLI, sent in requests.
ModelName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(not_blank),
                      AfterValidator(one_line)]
MAX_CONFIG_BYTES = 16 * 1024
MAX_BASE_URL_CHARS = 500  # llm_providers.base_url
# The most model ids a provider keeps: a PATCH's disabled_models, and a sync (the first
# ones listed; a 30,000-model list made every provider answer ~400 KB).
MAX_MODELS = 10_000
SECRET_CONFIG_KEYS = frozenset({"api_key", "apikey", "key", "token", "password", "secret"})


class ProviderOptions(StrictInput):
    """The ``config`` keys a provider's constructor reads (roost.llm.provider_types), typed
    and bounded: a wrong one is refused when the provider is registered, not found out at
    its first call (``"timeout": "slow"`` made every call a confusing 409).  Other keys
    are kept as given."""

    model_config = ConfigDict(extra="allow")

    timeout: float = Field(default=60, gt=0, le=3600)
    connect_timeout: float | None = Field(default=None, gt=0, le=600)
    retry_bad_response: bool = True
    stream_usage: bool = True
    anthropic_version: str = Field(default="2023-06-01", min_length=1, max_length=64,
                                   pattern=r"^[\x21-\x7e]+$")
    default_max_tokens: int = Field(default=1024, ge=1, le=1_000_000)
    model_path: str | None = Field(default=None, min_length=1, max_length=4096)
    n_ctx: int = Field(default=2048, ge=16, le=1_048_576)
    n_threads: int | None = Field(default=None, ge=1, le=1024)
    seed: int = Field(default=0, ge=-(2**31), le=2**32 - 1)
    chat_format: str | None = Field(default=None, min_length=1, max_length=64)


def _check_options(value: dict[str, Any]) -> None:
    try:
        ProviderOptions.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()[:5])
        raise ValueError(problems) from None


def _secret_key(value: Any, top: bool = True) -> str | None:
    """The first key naming a secret at any depth (``{"auth": {"api_key": ...}}`` too);
    the names of ``extra_headers`` are header names, whose values answers never show."""
    if isinstance(value, list):
        return next((k for v in value if (k := _secret_key(v, False)) is not None), None)
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if str(key).lower() in SECRET_CONFIG_KEYS:
            return str(key)
        if top and key == "extra_headers":
            continue
        found = _secret_key(item, False)
        if found is not None:
            return found
    return None


def _check_model(value: str | None) -> str | None:
    """A model id someone can ask for: not blank (null leaves the provider without one)."""
    if value is not None and is_blank(value):
        raise ValueError("model must not be empty or only spaces; send null for no default")
    return value


def _check_config(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if json_size(value) > MAX_CONFIG_BYTES:
        raise ValueError(f"config is larger than {MAX_CONFIG_BYTES} bytes")
    secret_key = _secret_key(value)
    if secret_key is not None:
        raise ValueError(
            f"config must not hold secrets ({secret_key!r}); pass the key as api_key, "
            "which is stored encrypted"
        )
    headers = value.get("extra_headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise ValueError("config.extra_headers must be an object of header names to values")
        if any(name.lower() in AUTH_HEADER_NAMES for name in headers):
            raise ValueError("config.extra_headers must not carry credentials; use api_key")
        lowered = [str(name).lower() for name in headers]
        twins = sorted({n for n in lowered if lowered.count(n) > 1})
        if twins:
            # One header to HTTP, two values here: sent both, and the masked config sent
            # back kept only one of the stored values.
            raise ValueError(f"config.extra_headers names {twins[0]!r} twice (header names "
                             "are case-insensitive)")
        framing = sorted(name for name in headers if isinstance(name, str)
                         and framing_header(name))
        if framing:
            raise ValueError(
                f"config.extra_headers must not set {framing[0]!r}: hop-by-hop and framing "
                "headers (Content-Length, Transfer-Encoding, Host, Connection, Upgrade, "
                "Keep-Alive, TE, Trailer, Proxy-*) are set by Roost's HTTP client")
        bad = unsendable_header(headers)
        if bad is not None and bad[0] == "name":
            raise ValueError("config.extra_headers has a name that is not a valid HTTP token")
        if bad is not None:
            raise ValueError(
                f"config.extra_headers[{bad[1]!r}] must be a string of {HEADER_VALUE_RULE}")
    _check_options(value)
    return value


def _check_base_url(value: HttpUrl | None) -> HttpUrl | None:
    """A base URL that fits its column, carries no credentials and does not point at a
    link-local address (the cloud metadata service); loopback and private addresses
    stay allowed, self-hosted models live there."""
    if value is None:
        return None
    if len(str(value)) > MAX_BASE_URL_CHARS:
        raise ValueError(f"base_url must be at most {MAX_BASE_URL_CHARS} characters")
    if value.username is not None or value.password is not None:
        raise ValueError("base_url must not carry a user name or password (user:password@): "
                         "pass the key as api_key, or other credentials in "
                         "config.extra_headers")
    if value.query is not None or value.fragment is not None:
        # Request paths are appended to the base URL: they would land inside the query.
        raise ValueError("base_url must not carry a query (?...) or a fragment (#...): "
                         "request paths such as /chat/completions are appended to it")
    refusal = host_refusal(value.host)
    if refusal is not None:
        raise ValueError(f"base_url must not point at {refusal}")
    return value


def _check_api_key(value: str | None) -> str | None:
    """The key travels in an HTTP header: refuse at registration what could never be sent."""
    if value and not header_value_ok(value):
        raise ValueError(
            f"api_key must be {HEADER_VALUE_RULE} and without surrounding spaces "
            "(it is sent in an HTTP header)"
        )
    return value


# The fields kept as text or jsonb, which hold no NUL (the name has its pattern, the key
# its own rule: printable ASCII).
STORED_AS_TEXT = ("model", "config", "modelsdev_provider_id")


def _check_no_nul(value: Any) -> Any:
    """A NUL anywhere in the value (a config key or value at any depth) is a 422 naming the
    field, not the database's anonymous 400."""
    if holds_nul(value):
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


class ProviderCreate(StrictInput):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Unique name, e.g. 'openai' or 'vllm-a'")
    type: ProviderTypeInput = Field(
        description="'openai' for any OpenAI-compatible server (OpenAI, vLLM, Ollama, "
        "llama.cpp server, LM Studio), 'anthropic', or 'local' (llama.cpp in process)"
    )
    base_url: HttpUrl | None = Field(
        default=None, description="API base, e.g. http://127.0.0.1:11434/v1 (type default if unset)"
    )
    api_key: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="Stored AES-256-GCM encrypted; never returned",
    )
    model: str | None = Field(default=None, max_length=255, description="Default model")
    weight: float = Field(default=1.0, ge=0, le=999.99, description="Ensemble voting weight")
    priority: int = Field(default=100, ge=0, le=1_000_000, description="Fallback order, lower first")
    enabled: bool = True
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Options: timeout, connect_timeout, extra_headers, stream_usage, "
        "anthropic_version, default_max_tokens; local: model_path, n_ctx, n_threads",
    )
    modelsdev_provider_id: str | None = Field(default=None, max_length=255)

    @field_validator(*STORED_AS_TEXT, mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _check_no_nul(value)

    @field_validator("config")
    @classmethod
    def _no_secrets_in_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_config(value) or {}

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str | None) -> str | None:
        return _check_model(value)

    @field_validator("api_key")
    @classmethod
    def _api_key_fits_a_header(cls, value: str | None) -> str | None:
        return _check_api_key(value)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_usable(cls, value: HttpUrl | None) -> HttpUrl | None:
        return _check_base_url(value)


class ProviderUpdate(StrictInput):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    base_url: HttpUrl | None = None
    api_key: str | None = Field(
        default=None, max_length=4096, description="New key; empty string removes the key"
    )
    model: str | None = Field(default=None, max_length=255)
    weight: float | None = Field(default=None, ge=0, le=999.99)
    priority: int | None = Field(default=None, ge=0, le=1_000_000)
    enabled: bool | None = None
    config: dict[str, Any] | None = None
    modelsdev_provider_id: str | None = Field(default=None, max_length=255)
    disabled_models: list[str] | None = Field(
        default=None, max_length=MAX_MODELS,
        description="Model ids (from the last sync) this provider must not be routed for",
    )

    @field_validator(*STORED_AS_TEXT, "disabled_models", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _check_no_nul(value)

    @field_validator("config")
    @classmethod
    def _no_secrets_in_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_config(value)

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str | None) -> str | None:
        return _check_model(value)

    @field_validator("api_key")
    @classmethod
    def _api_key_fits_a_header(cls, value: str | None) -> str | None:
        return _check_api_key(value)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_usable(cls, value: HttpUrl | None) -> HttpUrl | None:
        return _check_base_url(value)


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    type: str
    base_url: str | None
    model: str | None
    weight: float
    priority: int
    enabled: bool
    config: dict[str, Any]
    has_api_key: bool
    health_status: str
    health_error: str | None
    last_health_check_at: datetime | None
    response_time: int = Field(description="Last health check's response time in ms")
    modelsdev_provider_id: str | None
    models: dict[str, bool] = Field(description="Model id -> enabled, from the last sync")
    total_models: int
    enabled_models: int
    last_models_sync: datetime | None
    created_at: datetime
    updated_at: datetime


class EnsembleSpec(StrictInput):
    """Ask several providers at once and keep one answer."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(default="weighted_vote", description=f"One of {STRATEGIES}")
    providers: list[str] | None = Field(
        default=None, max_length=20, description="Provider names; default: every enabled one"
    )
    n: int | None = Field(default=None, ge=1, le=20, description="At most this many members")


class ResponseOut(BaseModel):
    id: uuid.UUID
    provider_id: uuid.UUID | None
    provider_name: str
    model: str | None
    content: str
    tokens_prompt: int
    tokens_completion: int
    tokens_total: int
    confidence: float
    response_time: int
    finish_reason: str | None
    selected: bool
    outcome: str
    error_kind: str | None
    error_message: str | None


class RequestOut(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID | None
    user_id: uuid.UUID | None
    request_type: str
    model: str | None
    status: str
    error_message: str | None
    model_params: dict[str, Any]
    ensemble_config: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    # The call's last user message and every message sent (stored encrypted).
    prompt: str = ""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    responses: list[ResponseOut]


class UsageOut(BaseModel):
    tokens_input: int
    tokens_output: int
    credits_used: int
    latency_ms: int | None
    model: str | None


