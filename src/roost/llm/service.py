"""The provider registry and the recorded gateway: routing, fallback, ensemble, and the
``llm_requests`` / ``llm_responses`` / ``usage_records`` rows every call leaves behind.

No database transaction is held open while a provider works.  A call is three short
transactions:

1. the caller stores what it must keep whatever happens (for chat: the user's message)
   together with the ``llm_requests`` row (``pending``), and commits;
2. :func:`mark_running` flips it to ``running`` just before the first provider is asked;
3. :func:`record_success` or :func:`record_failure` store one ``llm_responses`` row per
   attempt, the ``usage_records`` row, the request's final status, and (through the
   caller's hook) the answer itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import anyio
import structlog
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.config import Settings
from roost.db.base import uuid7
from roost.errors import BadRequest, Conflict, Forbidden, NotFound, RoostError
from roost.http.auth import Principal
from roost.llm.base import LLMProvider
from roost.llm.errors import (
    AllProvidersFailed,
    ProviderError,
    ProviderNotSupported,
    ProviderRequestError,
    ProviderTimeout,
)
from roost.llm.gateway_core import (
    Attempt,
    FallbackStream,
    ProviderRef,
    Strategy,
    call_with_fallback,
    ensemble,
)
from roost.llm.local import find_smollm2_gguf, llama_cpp_available
from roost.llm.models import LLMProviderRow, LLMRequest, LLMResponse, UsageRecord
from roost.llm.openai_compat import OpenAICompatibleProvider
from roost.llm.providers import DEFAULT_BASE_URLS
from roost.llm.registry import ProviderBuildError, api_key_aad
from roost.llm.runtime import Runtime
from roost.llm.schemas import EnsembleSpec, ProviderCreate, ProviderUpdate
from roost.llm.types import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    StreamAccumulator,
    fill_missing_usage,
)
from roost.security.crypto import MessageCipher

log = structlog.get_logger(__name__)
T = TypeVar("T")

RESOURCE = "llm_provider"
REQUEST_RESOURCE = "llm_request"
LOCAL_PROVIDER_NAME = "local"
LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
ADD_PROVIDER_HINT = (
    "no LLM provider is configured. An administrator can add one with "
    "POST /api/v1/llm/providers (e.g. {\"name\": \"ollama\", \"type\": \"openai\", "
    "\"base_url\": \"http://127.0.0.1:11434/v1\", \"model\": \"llama3.2\"}), or install the "
    "local model with pip install 'roost[local]' and restart Roost"
)
# Keys whose values are conversation text: kept out of llm_responses.raw_response (the
# text itself is stored encrypted in llm_responses.content).
_TEXT_KEYS = frozenset({"content", "text", "arguments", "reasoning_content", "refusal", "input",
                        "partial_json", "thinking", "delta"})


class NoProvider(Conflict):
    type_slug = "no-llm-provider"


class ModelNotFound(NotFound):
    type_slug = "model-not-found"


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


def now() -> datetime:
    return datetime.now(UTC)


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("managing LLM providers needs an administrator")


# --- provider registry ------------------------------------------------------------------


def _normalise_type(kind: str, base_url: str | None) -> tuple[str, str | None]:
    """Stored type ('openai' | 'anthropic' | 'local') and the base URL to store."""
    if kind in ("anthropic", "local"):
        return kind, base_url
    return "openai", base_url or DEFAULT_BASE_URLS.get(kind)


def _recount(row: LLMProviderRow) -> None:
    models = dict(row.models or {})
    row.total_models = len(models)
    row.enabled_models = sum(1 for enabled in models.values() if enabled)


async def list_providers(session: AsyncSession, actor: Principal) -> list[LLMProviderRow]:
    _require_admin(actor)
    rows = await session.scalars(select(LLMProviderRow).order_by(LLMProviderRow.priority,
                                                                 LLMProviderRow.name))
    return list(rows.all())


async def get_provider(session: AsyncSession, actor: Principal, provider_id: uuid.UUID) -> LLMProviderRow:
    _require_admin(actor)
    row = await session.get(LLMProviderRow, provider_id)
    if row is None:
        raise NotFound(f"no LLM provider with id {provider_id}")
    return row


async def _name_taken(session: AsyncSession, name: str, exclude: uuid.UUID | None = None) -> bool:
    stmt = select(LLMProviderRow.id).where(func.lower(LLMProviderRow.name) == name.lower())
    if exclude is not None:
        stmt = stmt.where(LLMProviderRow.id != exclude)
    return (await session.scalar(stmt)) is not None


async def create_provider(
    session: AsyncSession, runtime: Runtime, actor: Principal, data: ProviderCreate
) -> LLMProviderRow:
    _require_admin(actor)
    if await _name_taken(session, data.name):
        raise Conflict(f"an LLM provider named {data.name!r} already exists")
    kind, base_url = _normalise_type(data.type, str(data.base_url) if data.base_url else None)
    if kind == "local" and not llama_cpp_available():
        raise Conflict(
            "the local provider needs the optional llama-cpp-python: pip install 'roost[local]'"
        )
    row = LLMProviderRow(
        id=uuid7(), name=data.name, type=kind, base_url=base_url, model=data.model,
        weight=Decimal(str(data.weight)), priority=data.priority, enabled=data.enabled,
        config=data.config, modelsdev_provider_id=data.modelsdev_provider_id,
        models={data.model: True} if data.model else {},
        health_status="unknown", response_time=0,
    )
    _recount(row)
    if data.api_key:
        row.api_key_encrypted = runtime.secret_box.encrypt(data.api_key, api_key_aad(row.id)).decode()
    session.add(row)
    await session.flush()
    await audit.record(
        session, "llm.provider.create", user_id=actor.user_id, resource_type=RESOURCE,
        resource_id=row.id,
        changes={"name": row.name, "type": row.type, "base_url": row.base_url, "model": row.model,
                 "weight": float(row.weight), "priority": row.priority, "enabled": row.enabled,
                 "api_key_set": data.api_key is not None},
    )
    return row


async def update_provider(
    session: AsyncSession, runtime: Runtime, actor: Principal, provider_id: uuid.UUID,
    data: ProviderUpdate,
) -> LLMProviderRow:
    row = await get_provider(session, actor, provider_id)
    changes: dict[str, Any] = {}
    fields = data.model_dump(exclude_unset=True)
    if "name" in fields and fields["name"] is not None and fields["name"] != row.name:
        if await _name_taken(session, fields["name"], exclude=row.id):
            raise Conflict(f"an LLM provider named {fields['name']!r} already exists")
        changes["name"] = [row.name, fields["name"]]
        row.name = fields["name"]
    if "base_url" in fields:
        new_url = str(data.base_url) if data.base_url else None
        if row.type == "openai" and new_url is None:
            raise BadRequest("an OpenAI-compatible provider needs a base_url")
        changes["base_url"] = [row.base_url, new_url]
        row.base_url = new_url
    if "api_key" in fields:
        key = data.api_key or None
        row.api_key_encrypted = (
            runtime.secret_box.encrypt(key, api_key_aad(row.id)).decode() if key else None
        )
        changes["api_key_set"] = key is not None
    for name in ("model", "priority", "enabled", "config", "modelsdev_provider_id"):
        if name in ("priority", "enabled", "config") and fields.get(name) is None:
            continue  # not nullable: an explicit null means "leave it"
        if name in fields and getattr(row, name) != fields[name]:
            if name != "config":
                changes[name] = [getattr(row, name), fields[name]]
            else:
                changes["config"] = "changed"
            setattr(row, name, fields[name])
    if "weight" in fields and fields["weight"] is not None:
        changes["weight"] = [float(row.weight), fields["weight"]]
        row.weight = Decimal(str(fields["weight"]))
    if "model" in fields and data.model and data.model not in (row.models or {}):
        row.models = {**(row.models or {}), data.model: True}
    if data.disabled_models is not None:
        disabled = set(data.disabled_models)
        row.models = {m: m not in disabled for m in (row.models or {})}
        changes["disabled_models"] = sorted(disabled & set(row.models))
    _recount(row)
    row.updated_at = now()
    await session.flush()
    await audit.record(session, "llm.provider.update", user_id=actor.user_id,
                       resource_type=RESOURCE, resource_id=row.id, changes=changes)
    return row


async def delete_provider(
    session: AsyncSession, runtime: Runtime, actor: Principal, provider_id: uuid.UUID
) -> None:
    row = await get_provider(session, actor, provider_id)
    await session.execute(delete(LLMProviderRow).where(LLMProviderRow.id == row.id))
    await audit.record(session, "llm.provider.delete", user_id=actor.user_id,
                       resource_type=RESOURCE, resource_id=row.id, changes={"name": row.name})
    await runtime.pool.forget(row.id)


async def check_health(
    runtime: Runtime, actor: Principal | None, provider_id: uuid.UUID, *, always_audit: bool = True
) -> LLMProviderRow:
    """Probe one provider (outside any transaction) and store the result.

    ``actor`` None is the periodic system check: audited only when the status changes.
    """
    async with runtime.transaction(actor) as session:
        if actor is not None:
            snapshot: LLMProviderRow | None = await get_provider(session, actor, provider_id)
        else:
            snapshot = await session.get(LLMProviderRow, provider_id)
        if snapshot is None:
            raise NotFound(f"no LLM provider with id {provider_id}")
    try:
        provider = await runtime.pool.get(snapshot)
        result = await provider.health()
        status, error, ms = result.status, result.error, result.response_time_ms
    except ProviderBuildError as exc:
        status, error, ms = "unhealthy", exc.reason, 0
    async with runtime.transaction(actor) as session:
        row = await session.get(LLMProviderRow, provider_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no LLM provider with id {provider_id}")
        previous = row.health_status
        # Written with an UPDATE that leaves updated_at alone: a health check is not an
        # edit, and must not make the pool rebuild the provider.
        await session.execute(
            update(LLMProviderRow).where(LLMProviderRow.id == provider_id).values(
                health_status=status, health_error=error, response_time=ms,
                last_health_check_at=now(), updated_at=row.updated_at,
            )
        )
        if always_audit or previous != status:
            await audit.record(
                session, "llm.provider.health", user_id=actor.user_id if actor else None,
                category="system", resource_type=RESOURCE, resource_id=provider_id,
                changes={"health_status": [previous, status]},
                metadata={"response_time_ms": ms}, success=status == "healthy",
                error_message=error,
            )
        await session.refresh(row)
        return row


async def sync_models(runtime: Runtime, actor: Principal, provider_id: uuid.UUID) -> LLMProviderRow:
    """Ask the provider for its models; new ones start enabled, disabled ones stay so."""
    async with runtime.transaction(actor) as session:
        snapshot = await get_provider(session, actor, provider_id)
    try:
        provider = await runtime.pool.get(snapshot)
    except ProviderBuildError as exc:
        raise Conflict(f"cannot sync models: {exc.reason}") from exc
    try:
        listed = await provider.list_models()
    except ProviderError as exc:
        # The provider's state, not the request, is at fault: a 409 the admin can act on.
        raise Conflict(f"cannot list the models of provider {snapshot.name!r}: {exc.detail}",
                       extra={"provider_error": exc.kind}) from exc
    async with runtime.transaction(actor) as session:
        row = await session.get(LLMProviderRow, provider_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no LLM provider with id {provider_id}")
        before = dict(row.models or {})
        models = {m: bool(before.get(m, True)) for m in listed}
        if row.model and row.model not in models:
            models[row.model] = bool(before.get(row.model, True))
        await session.execute(
            update(LLMProviderRow).where(LLMProviderRow.id == provider_id).values(
                models=models, total_models=len(models),
                enabled_models=sum(1 for v in models.values() if v),
                last_models_sync=now(), updated_at=row.updated_at,
            )
        )
        await audit.record(
            session, "llm.provider.sync_models", user_id=actor.user_id, resource_type=RESOURCE,
            resource_id=provider_id,
            changes={"added": sorted(set(models) - set(before)),
                     "removed": sorted(set(before) - set(models))},
        )
        await session.refresh(row)
        return row


async def register_local_if_empty(runtime: Runtime) -> LLMProviderRow | None:
    """On a fresh install with the 'local' extra: register SmolLM2 as provider "local".

    Only when no provider exists at all, so deleting it after adding others sticks.
    """
    if not runtime.settings.llm_local_model or not llama_cpp_available():
        return None
    path = find_smollm2_gguf()
    if path is None:
        return None
    async with runtime.db.transaction() as session:
        # One starter at a time (several workers may start together).
        await session.execute(select(func.pg_advisory_xact_lock(0x726F6F73_4C4C4D)))
        if await session.scalar(select(func.count()).select_from(LLMProviderRow)):
            return None
        row = LLMProviderRow(
            id=uuid7(), name=LOCAL_PROVIDER_NAME, type="local", model=LOCAL_MODEL_NAME,
            config={"n_ctx": 2048}, models={LOCAL_MODEL_NAME: True}, priority=1000,
            health_status="unknown",
        )
        _recount(row)
        session.add(row)
        await session.flush()
        await audit.record(
            session, "llm.provider.create", category="system", resource_type=RESOURCE,
            resource_id=row.id, description="local SmolLM2 model registered on first start",
            changes={"name": row.name, "type": "local", "model": LOCAL_MODEL_NAME},
        )
    log.info("llm.local_provider_registered", model=LOCAL_MODEL_NAME, path=path.name)
    return row


# --- routing ----------------------------------------------------------------------------


@dataclass
class Route:
    members: list[tuple[ProviderRef, LLMProvider]]
    mode: Literal["fallback", "ensemble"]
    model: str | None  # the model name asked for (None: each provider's default)
    strategy: Strategy | None = None
    ensemble_config: dict[str, Any] | None = None

    def refs(self) -> list[ProviderRef]:
        return [ref for ref, _ in self.members]


def serves(row: LLMProviderRow, model: str) -> bool:
    return row.model == model or bool((row.models or {}).get(model))


async def enabled_providers(session: AsyncSession) -> list[LLMProviderRow]:
    rows = await session.scalars(
        select(LLMProviderRow).where(LLMProviderRow.enabled)
        .order_by(LLMProviderRow.priority, LLMProviderRow.name)
    )
    return list(rows.all())


async def resolve_route(
    session: AsyncSession, runtime: Runtime, model: str | None,
    ensemble_spec: EnsembleSpec | None = None,
) -> Route:
    """Which providers to ask, in order.  409 without providers, 404 for an unknown model."""
    rows = await enabled_providers(session)
    if not rows:
        raise NoProvider(ADD_PROVIDER_HINT)
    if model:
        candidates = [r for r in rows if serves(r, model)]
        if not candidates:
            raise ModelNotFound(
                f"no enabled LLM provider serves model {model!r}; GET /v1/models lists the "
                "models available"
            )
    else:
        candidates = [r for r in rows if r.model]
        if not candidates:
            raise NoProvider(
                "no enabled LLM provider has a default model: name a model, or give a "
                "provider a default model"
            )
    mode: Literal["fallback", "ensemble"] = "fallback"
    config = None
    if ensemble_spec is not None:
        mode = "ensemble"
        if ensemble_spec.providers:
            wanted = {n.lower() for n in ensemble_spec.providers}
            unknown = wanted - {r.name.lower() for r in candidates}
            if unknown:
                raise BadRequest(
                    f"ensemble names providers that are unknown, disabled or do not serve "
                    f"the model: {sorted(unknown)}"
                )
            candidates = [r for r in candidates if r.name.lower() in wanted]
        limit = min(ensemble_spec.n or runtime.settings.llm_max_ensemble,
                    runtime.settings.llm_max_ensemble)
        candidates = candidates[:limit]
        config = {"strategy": ensemble_spec.strategy, "providers": [r.name for r in candidates]}
    members, failed = await runtime.pool.members(candidates)
    if not members:
        reasons = "; ".join(f"{e.name}: {e.reason}" for e in failed)
        raise NoProvider(f"no configured LLM provider can be used ({reasons})")
    return Route(
        members=members, mode=mode, model=model,
        strategy=ensemble_spec.strategy if ensemble_spec else None, ensemble_config=config,
    )


async def list_models(session: AsyncSession) -> list[tuple[str, str, datetime]]:
    """(model id, provider name, provider created_at) for every routable model."""
    seen: dict[str, tuple[str, str, datetime]] = {}
    for row in await enabled_providers(session):
        names = [m for m, on in (row.models or {}).items() if on]
        if row.model and row.model not in names:
            names.insert(0, row.model)
        for name in names:
            seen.setdefault(name, (name, row.name, row.created_at))
    return list(seen.values())


# --- request records --------------------------------------------------------------------


def encrypt_json(cipher: MessageCipher, value: Any) -> bytes:
    return cipher.encrypt(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def strip_text(value: Any, depth: int = 0) -> Any:
    """The provider's raw answer without conversation text (that is stored encrypted)."""
    if depth > 16:
        return None
    if isinstance(value, dict):
        return {k: ("[encrypted]" if k in _TEXT_KEYS and v not in (None, "", [])
                    else strip_text(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list):
        return [strip_text(v, depth + 1) for v in value[:64]]
    return value


def credits_for(runtime: Runtime, tokens: int) -> int:
    rate = runtime.settings.llm_credits_per_1k_tokens
    return math.ceil(tokens * rate / 1000) if tokens > 0 and rate > 0 else 0


def new_request(
    runtime: Runtime, principal: Principal, chat: ChatRequest, route: Route, *,
    request_type: str, session_id: uuid.UUID | None = None,
) -> LLMRequest:
    return LLMRequest(
        id=uuid7(), session_id=session_id, user_id=principal.user_id, request_type=request_type,
        model=route.model, prompt=runtime.cipher.encrypt(chat.prompt_text()),
        messages=encrypt_json(runtime.cipher, [m.to_openai() for m in chat.messages]),
        model_params=chat.model_params(), ensemble_config=route.ensemble_config,
        status="pending",
    )


async def mark_running(runtime: Runtime, principal: Principal, request_id: uuid.UUID) -> None:
    async with runtime.transaction(principal) as session:
        await session.execute(
            update(LLMRequest).where(LLMRequest.id == request_id, LLMRequest.status == "pending")
            .values(status="running", started_at=now())
        )


ORPHAN_MARGIN_S = 300.0
ORPHAN_BATCH = 500


async def orphan_threshold_s(session: AsyncSession, settings: Settings) -> float:
    """How long a request may stay pending/running before it counts as orphaned.

    ``ROOST_LLM_ORPHAN_AFTER_S`` when set; else the longest a live call can take before
    its own final write (each provider of a fallback chain gets ``ROOST_LLM_TIMEOUT_S``)
    plus a margin for streams, which may go on after their first chunk.
    """
    if settings.llm_orphan_after_s is not None:
        return float(settings.llm_orphan_after_s)
    enabled = await session.scalar(
        select(func.count()).select_from(LLMProviderRow).where(LLMProviderRow.enabled)
    )
    return settings.llm_timeout_s * max(1, int(enabled or 0)) + ORPHAN_MARGIN_S


async def fail_orphaned_requests(session: AsyncSession, older_than_s: float) -> list[uuid.UUID]:
    """Mark ``failed`` (with the reason) up to ORPHAN_BATCH requests left ``pending`` or
    ``running`` for longer than ``older_than_s`` since they started: the process that ran
    them died (crash, ``kill -9``) before its final write.  Each is audited
    ``llm.request.fail``.  Rows being finalised right now are skipped (SKIP LOCKED); a
    live call that outlasts the threshold still records its real outcome at the end."""
    reason = (f"orphaned: still {{status}} {older_than_s:g} s after it started; the Roost "
              "process handling it stopped (crash or kill) before it finished")
    rows = (await session.execute(
        text(
            "UPDATE llm_requests r SET status = 'failed', completed_at = now(),"
            " error_message = replace(:reason, '{status}', old.status)"
            " FROM (SELECT id, status FROM llm_requests"
            "       WHERE status IN ('pending', 'running')"
            "       AND coalesce(started_at, created_at) < now() - make_interval(secs => :secs)"
            "       ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED) old"
            " WHERE r.id = old.id"
            " RETURNING r.id, r.user_id, old.status AS was, r.error_message"
        ),
        {"reason": reason, "secs": older_than_s, "batch": ORPHAN_BATCH},
    )).all()
    for row in rows:
        await audit.record(
            session, "llm.request.fail", user_id=row.user_id, category="error",
            resource_type=REQUEST_RESOURCE, resource_id=row.id, success=False,
            error_message=row.error_message, metadata={"orphaned": True, "was": row.was},
        )
    return [row.id for row in rows]


def _response_row(
    runtime: Runtime, attempt: Attempt, request_id: uuid.UUID, user_id: uuid.UUID | None,
) -> LLMResponse:
    values = attempt.to_response_row()
    res = attempt.result
    provider_id = values["provider_id"]
    return LLMResponse(
        id=uuid7(), request_id=request_id, user_id=user_id,
        provider_id=provider_id if isinstance(provider_id, uuid.UUID) else None,
        provider_name=values["provider_name"], model=res.model if res else None,
        content=runtime.cipher.encrypt(values["content"]),
        raw_response=strip_text(values["raw_response"]),
        tokens_prompt=values["tokens_prompt"], tokens_completion=values["tokens_completion"],
        tokens_total=values["tokens_total"],
        confidence=Decimal(str(round(float(values["confidence"]), 4))),
        response_time=values["response_time"], finish_reason=values["finish_reason"],
        selected=values["selected"], outcome=values["outcome"], error_kind=values["error_kind"],
        error_message=values["error_message"], started_at=values["started_at"],
        finished_at=values["finished_at"],
    )


@dataclass
class CallOutcome:
    """A finished, successful call."""

    request_id: uuid.UUID
    result: ChatResult
    winner: ProviderRef
    attempts: list[Attempt]
    latency_ms: int
    usage: UsageRecord | None = None
    votes: dict[str, float] = field(default_factory=dict)


async def record_success(
    session: AsyncSession, runtime: Runtime, principal: Principal, outcome: CallOutcome, *,
    request_type: str, session_id: uuid.UUID | None = None, audit_action: str | None = None,
) -> UsageRecord:
    """Responses, usage, status ``completed``; audited unless the caller audits itself."""
    user_id = principal.user_id
    session.add_all([_response_row(runtime, a, outcome.request_id, user_id)
                     for a in outcome.attempts])
    result = outcome.result
    winner_id = outcome.winner.id if isinstance(outcome.winner.id, uuid.UUID) else None
    usage = UsageRecord(
        id=uuid7(), user_id=user_id, request_type=request_type,
        model=result.model or outcome.winner.name, tokens_input=result.tokens_in,
        tokens_output=result.tokens_out, credits_used=credits_for(runtime, result.tokens_total),
        latency_ms=outcome.latency_ms, session_id=session_id, llm_request_id=outcome.request_id,
        provider_id=winner_id, success=True,
    )
    session.add(usage)
    await session.execute(
        update(LLMRequest).where(LLMRequest.id == outcome.request_id)
        .values(status="completed", completed_at=now(), error_message=None)
    )
    await session.flush()
    outcome.usage = usage
    if audit_action:
        await audit.record(
            session, audit_action, user_id=user_id, resource_type=REQUEST_RESOURCE,
            resource_id=outcome.request_id,
            metadata={"provider": outcome.winner.name, "model": usage.model,
                      "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
                      "attempts": len(outcome.attempts), "latency_ms": outcome.latency_ms},
        )
    return usage


async def record_failure(
    session: AsyncSession, runtime: Runtime, principal: Principal, request_id: uuid.UUID,
    error: BaseException, attempts: Sequence[Attempt], *, request_type: str, model: str | None,
    latency_ms: int, session_id: uuid.UUID | None = None, audit_action: str | None = None,
) -> str:
    """Failed attempts, a zero-credit usage row, status ``failed``; returns the message."""
    user_id = principal.user_id
    session.add_all([_response_row(runtime, a, request_id, user_id) for a in attempts])
    message = failure_message(error, attempts)
    session.add(UsageRecord(
        id=uuid7(), user_id=user_id, request_type=request_type, model=model, tokens_input=0,
        tokens_output=0, credits_used=0, latency_ms=latency_ms, session_id=session_id,
        llm_request_id=request_id, success=False,
    ))
    await session.execute(
        update(LLMRequest).where(LLMRequest.id == request_id)
        .values(status="failed", completed_at=now(), error_message=message[:4000])
    )
    await session.flush()
    if audit_action:
        await audit.record(
            session, audit_action, user_id=user_id, category="error",
            resource_type=REQUEST_RESOURCE, resource_id=request_id, success=False,
            error_message=message[:1000],
            metadata={"attempts": [{"provider": a.ref.name, "outcome": a.outcome,
                                    "error_kind": a.error_kind} for a in attempts]},
        )
    return message


def failure_message(error: BaseException, attempts: Sequence[Attempt]) -> str:
    if isinstance(error, AllProvidersFailed):
        parts = [f"{a.ref.name}: {a.error or a.error_kind}" for a in attempts] or [error.detail]
        return "no provider answered (" + "; ".join(parts) + ")"
    if isinstance(error, RoostError):
        return error.detail
    if isinstance(error, BaseException) and type(error).__name__ in ("CancelledError", "GeneratorExit"):
        return "cancelled: the client went away before the answer was complete"
    return f"internal error ({type(error).__name__})"


def public_error(error: BaseException, attempts: Sequence[Attempt]) -> RoostError:
    """What the caller sees for a failed call (a 4xx/5xx problem, never a stack trace)."""
    if isinstance(error, ProviderRequestError):
        upstream = error.upstream_status
        if upstream in (401, 403):
            return GatewayFailed(
                f"{error.detail} (the provider refused Roost's credentials: an administrator "
                "must fix its API key)", timeout=False, kind=error.kind)
        if upstream == 404:
            return ModelNotFound(error.detail)
        return UpstreamRejected(error.detail)
    if isinstance(error, ProviderError):
        timeouts = bool(attempts) and all(a.outcome == "timeout" for a in attempts if not a.ok)
        is_timeout = isinstance(error, ProviderTimeout) or (
            isinstance(error, AllProvidersFailed) and timeouts)
        return GatewayFailed(failure_message(error, attempts), timeout=is_timeout, kind=error.kind)
    if isinstance(error, RoostError):
        return error
    return GatewayFailed(failure_message(error, attempts), timeout=False, kind="internal")


# --- execution --------------------------------------------------------------------------


def retry_predicate(runtime: Runtime) -> Any:
    kinds = runtime.fallback_kinds

    def retry(err: ProviderError) -> bool:
        return err.kind in kinds

    return retry


def _model_request(route: Route, chat: ChatRequest) -> ChatRequest:
    return chat.model_copy(update={"model": route.model})


async def execute(runtime: Runtime, route: Route, chat: ChatRequest, request_id: uuid.UUID) -> CallOutcome:
    """Run the call (fallback chain or ensemble).  Raises ProviderError with ``.attempts``."""
    started = time.perf_counter()
    request = _model_request(route, chat)
    if route.mode == "ensemble":
        outcome = await ensemble(route.members, request, route.strategy or "weighted_vote",
                                 timeout_s=runtime.settings.llm_timeout_s)
        return CallOutcome(request_id=request_id,
                           result=fill_missing_usage(outcome.result, request), winner=outcome.winner_ref,
                           attempts=outcome.responses, latency_ms=_ms(started), votes=outcome.votes)
    ref, result, attempts = await call_with_fallback(
        route.members, request, retry_on=retry_predicate(runtime),
        attempt_timeout_s=runtime.settings.llm_timeout_s,
    )
    return CallOutcome(request_id=request_id, result=fill_missing_usage(result, request),
                       winner=ref, attempts=attempts, latency_ms=_ms(started))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class CallStream:
    """A streamed call: chunks as they come, the whole answer and its attempts at the end.

    ``await start()`` fetches the first chunk (falling back between providers until one
    produces it) so a failure before any output can still be an ordinary error answer.
    An ensemble cannot stream (the winner is known only at the end): its answer arrives
    as one chunk.
    """

    def __init__(self, runtime: Runtime, route: Route, chat: ChatRequest, request_id: uuid.UUID) -> None:
        self.runtime = runtime
        self.route = route
        self.request = _model_request(route, chat)
        self.request_id = request_id
        self.started = time.perf_counter()
        self._first: ChatChunk | None = None
        self._iter: AsyncIterator[ChatChunk] | None = None
        self._fallback: FallbackStream | None = None
        self._ensemble: CallOutcome | None = None
        self.accumulator = StreamAccumulator()

    @property
    def attempts(self) -> list[Attempt]:
        if self._ensemble is not None:
            return self._ensemble.attempts
        return self._fallback.attempts if self._fallback is not None else []

    async def start(self) -> None:
        if self.route.mode == "ensemble":
            self._ensemble = await execute(self.runtime, self.route, self.request, self.request_id)
            res = self._ensemble.result
            self._first = ChatChunk(delta=res.content, finish_reason=res.finish_reason,
                                    model=res.model, tokens_in=res.tokens_in,
                                    tokens_out=res.tokens_out)
            return
        self._fallback = FallbackStream(
            self.route.members, self.request, retry_on=retry_predicate(self.runtime),
            first_chunk_timeout_s=self.runtime.settings.llm_timeout_s,
        )
        self._iter = aiter(self._fallback)
        self._first = await anext(self._iter)

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        assert self._first is not None, "start() first"
        self.accumulator.add(self._first)
        yield self._first
        if self._iter is not None:
            async for chunk in self._iter:
                self.accumulator.add(chunk)
                yield chunk

    def outcome(self) -> CallOutcome:
        if self._ensemble is not None:
            return self._ensemble
        assert self._fallback is not None and self._fallback.winner is not None
        result = self._fallback.result or self.accumulator.result(latency_ms=_ms(self.started))
        # Usage from the stream's last chunk when the provider sent it (OpenAI servers
        # are asked with stream_options.include_usage), else the same estimate as a
        # non-streamed answer without usage.
        return CallOutcome(request_id=self.request_id,
                           result=fill_missing_usage(result, self.request),
                           winner=self._fallback.winner, attempts=self._fallback.attempts,
                           latency_ms=_ms(self.started))

    def latency_ms(self) -> int:
        return _ms(self.started)

    async def aclose(self) -> None:
        closer = getattr(self._iter, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:  # already failing or finished; nothing left to save
                log.debug("llm.stream.close_failed", error=type(exc).__name__)


_background: set[asyncio.Task[Any]] = set()


async def shielded(coro: Awaitable[T]) -> T:
    """Finish a database write even if the caller is being cancelled (client went away)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    with anyio.CancelScope(shield=True):
        await asyncio.shield(task)
    return task.result()


# --- whole calls (the /v1 gateway) ------------------------------------------------------


async def begin_call(
    runtime: Runtime, principal: Principal, chat: ChatRequest, *, model: str | None,
    ensemble_spec: EnsembleSpec | None, request_type: str,
) -> tuple[Route, LLMRequest]:
    """Transaction 1: route (404/409 before anything is stored) and the pending request."""
    async with runtime.transaction(principal) as session:
        route = await resolve_route(session, runtime, model, ensemble_spec)
        row = new_request(runtime, principal, chat, route, request_type=request_type)
        session.add(row)
        await session.flush()
        await audit.record(
            session, "llm.request.create", user_id=principal.user_id,
            resource_type=REQUEST_RESOURCE, resource_id=row.id,
            metadata={"model": model, "type": request_type, "mode": route.mode,
                      "providers": [ref.name for ref in route.refs()]},
        )
    return route, row


async def finish_failed(
    runtime: Runtime, principal: Principal, request_id: uuid.UUID, error: BaseException,
    attempts: Sequence[Attempt], *, request_type: str, model: str | None, latency_ms: int,
    session_id: uuid.UUID | None = None, audit_action: str | None = "llm.request.fail",
) -> None:
    async with runtime.transaction(principal) as session:
        await record_failure(session, runtime, principal, request_id, error, attempts,
                             request_type=request_type, model=model, latency_ms=latency_ms,
                             session_id=session_id, audit_action=audit_action)


async def complete(
    runtime: Runtime, principal: Principal, chat: ChatRequest, *, model: str | None,
    ensemble_spec: EnsembleSpec | None = None,
) -> CallOutcome:
    """A recorded, non-streamed completion (``POST /v1/chat/completions``)."""
    request_type = "ensemble" if ensemble_spec else "chat"
    route, row = await begin_call(runtime, principal, chat, model=model,
                                  ensemble_spec=ensemble_spec, request_type=request_type)
    await mark_running(runtime, principal, row.id)
    started = time.perf_counter()
    try:
        outcome = await execute(runtime, route, chat, row.id)
    except ProviderError as exc:
        await shielded(finish_failed(runtime, principal, row.id, exc, exc.attempts,
                                     request_type=request_type, model=model,
                                     latency_ms=_ms(started)))
        raise public_error(exc, exc.attempts) from exc
    except BaseException as exc:  # cancelled, or a bug: the request must not stay running
        await shielded(finish_failed(runtime, principal, row.id, exc, [],
                                     request_type=request_type, model=model,
                                     latency_ms=_ms(started)))
        raise

    async def save() -> None:
        async with runtime.transaction(principal) as session:
            await record_success(session, runtime, principal, outcome, request_type=request_type,
                                 audit_action="llm.request.complete")

    await shielded(save())
    return outcome


async def _embed_call(
    provider: LLMProvider, texts: list[str], model: str, dimensions: int | None
) -> EmbeddingResult:
    if dimensions is not None and isinstance(provider, OpenAICompatibleProvider):
        return await provider.embed(texts, model, dimensions=dimensions)
    return await provider.embed(texts, model)


def _fail_attempt(attempt: Attempt, exc: ProviderError, started: float) -> None:
    attempt.finished_at, attempt.latency_ms = now(), _ms(started)
    attempt.outcome = "timeout" if isinstance(exc, ProviderTimeout) else "error"
    attempt.error_kind, attempt.error = exc.kind, exc.detail
    attempt.upstream_status, attempt.retryable = exc.upstream_status, exc.retryable
    attempt.exception = exc


async def embed(
    runtime: Runtime, principal: Principal, texts: list[str], *, model: str,
    dimensions: int | None = None,
) -> tuple[uuid.UUID, EmbeddingResult, ProviderRef]:
    """A recorded embeddings call, with fallback over the providers serving ``model``."""
    chat = ChatRequest(messages=[ChatMessage(role="user", content=t) for t in texts])
    route, row = await begin_call(runtime, principal, chat, model=model, ensemble_spec=None,
                                  request_type="embedding")
    await mark_running(runtime, principal, row.id)
    started = time.perf_counter()
    attempts: list[Attempt] = []
    retry = retry_predicate(runtime)
    errors: list[ProviderError] = []
    for ref, provider in route.members:
        attempt = Attempt(ref=ref, started_at=now())
        attempts.append(attempt)
        t0 = time.perf_counter()
        try:
            result = await _with_timeout(_embed_call(provider, texts, model, dimensions),
                                         runtime.settings.llm_timeout_s, ref.name)
        except ProviderError as exc:
            _fail_attempt(attempt, exc, t0)
            errors.append(exc)
            # A provider type without embeddings never blocks the next one.
            if retry(exc) or isinstance(exc, ProviderNotSupported):
                continue
            break
        attempt.finished_at, attempt.latency_ms = now(), _ms(t0)
        attempt.outcome, attempt.selected, attempt.confidence = "success", True, 1.0
        attempt.result = ChatResult(
            content="", model=result.model or model, tokens_in=result.tokens_in,
            finish_reason="stop", raw={"dimensions": result.dimensions, "count": len(result.vectors)},
        )
        outcome = CallOutcome(request_id=row.id, result=attempt.result, winner=ref,
                              attempts=attempts, latency_ms=_ms(started))
        async with runtime.transaction(principal) as session:
            await record_success(session, runtime, principal, outcome, request_type="embedding",
                                 audit_action="llm.request.complete")
        return row.id, result, ref
    error: ProviderError = (
        errors[0] if len(errors) == 1 else AllProvidersFailed("every provider failed", errors=errors)
    )
    await finish_failed(runtime, principal, row.id, error, attempts, request_type="embedding",
                        model=model, latency_ms=_ms(started))
    raise public_error(error, attempts)


async def _with_timeout(coro: Awaitable[T], timeout_s: float, name: str) -> T:
    try:
        async with asyncio.timeout(timeout_s):
            return await coro
    except TimeoutError:
        raise ProviderTimeout(f"provider {name!r} did not answer within {timeout_s}s",
                              provider=name) from None


# --- reading request records ------------------------------------------------------------


async def get_request(
    session: AsyncSession, runtime: Runtime, actor: Principal, request_id: uuid.UUID
) -> tuple[LLMRequest, list[LLMResponse]]:
    row = await session.get(LLMRequest, request_id)
    if row is None or not (actor.is_admin or (row.user_id is not None and row.user_id == actor.user_id)):
        raise NotFound(f"no LLM request with id {request_id}")
    responses = list((await session.scalars(
        select(LLMResponse).where(LLMResponse.request_id == request_id)
        .order_by(LLMResponse.started_at, LLMResponse.id)
    )).all())
    return row, responses

