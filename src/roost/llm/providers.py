"""The provider registry (``llm_providers``): administrators add, edit and remove
providers; health checks and model syncs ask the provider and store what it said; a fresh
install with the 'local' extra registers SmolLM2.

Provider API keys are stored encrypted (bound to their row) and decrypted only inside
the pool's provider objects (``roost.llm.provider_pool``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.db.base import utcnow, uuid7
from roost.db.errors import flush_unique
from roost.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from roost.llm import leases
from roost.llm.base import LLMProvider
from roost.llm.errors import ProviderError, ProviderTimeout, clean_text
from roost.llm.gateway import LLMGateway
from roost.llm.local import find_smollm2_gguf, llama_cpp_available
from roost.llm.models import LLMProviderRow
from roost.llm.provider_pool import ProviderBuildError, api_key_aad
from roost.llm.provider_types import DEFAULT_BASE_URLS
from roost.llm.schemas import MAX_MODELS, ProviderCreate, ProviderUpdate
from roost.principal import Principal
from roost.security.crypto import DecryptionError

log = structlog.get_logger(__name__)
T = TypeVar("T")

RESOURCE = "llm_provider"
LOCAL_PROVIDER_NAME = "local"
LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
NAME_INDEX = "uq_llm_providers_lower_name"
# What an answer shows instead of an extra header's value (routes.provider_out); a PATCH
# sending it back keeps the value stored.
MASKED = "***"


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("managing LLM providers needs an administrator")


def _normalise_type(kind: str, base_url: str | None) -> tuple[str, str | None]:
    """Stored type ('openai' | 'anthropic' | 'local') and the base URL to store."""
    if kind in ("anthropic", "local"):
        return kind, base_url
    return "openai", base_url or DEFAULT_BASE_URLS.get(kind)


def _require_base_url(kind: str, base_url: str | None) -> None:
    """An OpenAI-compatible provider (stored type 'openai') with no base URL is a 400: no
    health check, sync or call could use it ('openai_compatible' has no usual URL)."""
    if kind == "openai" and base_url is None:
        raise BadRequest("an OpenAI-compatible provider needs a base_url")


def _unchanged_since(snapshot: LLMProviderRow, row: LLMProviderRow) -> bool:
    """``row`` (read again, locked) is still the version a health check or model sync
    called: every edit sets ``updated_at`` (and the pool builds a new instance for it), so
    an answer got before an edit (a new ``base_url``, key, type...) describes another
    server and must not be stored as the edited provider's."""
    return row.updated_at == snapshot.updated_at


def _recount(row: LLMProviderRow) -> None:
    models = dict(row.models or {})
    row.total_models = len(models)
    row.enabled_models = sum(1 for enabled in models.values() if enabled)


async def _bounded(gateway: LLMGateway, provider: LLMProvider,
                   call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` within ROOST_LLM_TIMEOUT_S in all, as a model call is: httpx's read
    timeout restarts with every byte, so a provider trickling its answer would otherwise
    hold a health check or model sync (and the periodic check) forever.  Past it:
    :class:`ProviderTimeout`."""
    limit = gateway.settings.llm_timeout_s
    try:
        async with asyncio.timeout(limit), leases.held(provider):  # not closed under it by an edit
            return await call()
    except TimeoutError:
        raise ProviderTimeout(f"provider {provider.name!r} did not answer within {limit:g} s "
                              "(ROOST_LLM_TIMEOUT_S)", provider=provider.name) from None


async def list_providers(session: AsyncSession, actor: Principal) -> list[LLMProviderRow]:
    _require_admin(actor)
    rows = await session.scalars(select(LLMProviderRow).order_by(LLMProviderRow.priority,
                                                                 LLMProviderRow.name))
    return list(rows.all())


async def get_provider(
    session: AsyncSession, actor: Principal, provider_id: uuid.UUID, *, lock: bool = False
) -> LLMProviderRow:
    """``lock``: read it FOR UPDATE, so an edit racing a deletion waits for it and is a
    404 (not an UPDATE that finds no row)."""
    _require_admin(actor)
    row = await session.get(LLMProviderRow, provider_id, with_for_update=lock)
    if row is None:
        raise NotFound(f"no LLM provider with id {provider_id}")
    return row


async def _name_taken(session: AsyncSession, name: str, exclude: uuid.UUID | None = None) -> bool:
    stmt = select(LLMProviderRow.id).where(func.lower(LLMProviderRow.name) == name.lower())
    if exclude is not None:
        stmt = stmt.where(LLMProviderRow.id != exclude)
    return (await session.scalar(stmt)) is not None


async def _flush_name(session: AsyncSession, name: str) -> None:
    """Flush; a name taken meanwhile by a create or rename at once (whatever its case:
    the unique index is on lower(name)) is the 409 :func:`_name_taken` gives."""
    await flush_unique(session, NAME_INDEX, f"an LLM provider named {name!r} already exists")


def _weight(value: float) -> Decimal:
    """The weight as stored (``Numeric(5, 2)``, which rounds half away from zero), so the
    answer to a create or edit shows what a GET and the votes will use."""
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _unmasked_config(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """``new`` with each extra header sent back as :data:`MASKED` (as answers show it)
    given its stored value again; a masked value for a header not stored is a 400."""
    headers = new.get("extra_headers")
    if not isinstance(headers, dict) or MASKED not in headers.values():
        return new
    stored = {str(k).lower(): v for k, v in (old.get("extra_headers") or {}).items()}
    kept: dict[str, Any] = {}
    for name, value in headers.items():
        if value == MASKED:
            if name.lower() not in stored:
                raise BadRequest(f"config.extra_headers[{name!r}] is {MASKED!r} (a hidden "
                                 "value) but the provider has no such header; send its value")
            value = stored[name.lower()]
        kept[name] = value
    return {**new, "extra_headers": kept}


async def create_provider(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, data: ProviderCreate
) -> LLMProviderRow:
    _require_admin(actor)
    if await _name_taken(session, data.name):
        raise Conflict(f"an LLM provider named {data.name!r} already exists")
    kind, base_url = _normalise_type(data.type, str(data.base_url) if data.base_url else None)
    _require_base_url(kind, base_url)
    config = _unmasked_config(data.config, {})  # no header stored yet: "***" is a 400
    if kind == "local" and not llama_cpp_available():
        raise Conflict(
            "the local provider needs the optional llama-cpp-python: pip install 'roost[local]'"
        )
    row = LLMProviderRow(
        id=uuid7(), name=data.name, type=kind, base_url=base_url, model=data.model,
        weight=_weight(data.weight), priority=data.priority, enabled=data.enabled,
        config=config, modelsdev_provider_id=data.modelsdev_provider_id,
        models={data.model: True} if data.model else {},
        health_status="unknown", response_time=0,
    )
    _recount(row)
    if data.api_key:
        row.api_key_encrypted = gateway.secret_box.encrypt(data.api_key, api_key_aad(row.id)).decode()
    session.add(row)
    await _flush_name(session, row.name)
    await audit.record(
        session, "llm.provider.create", user_id=actor.user_id, resource_type=RESOURCE,
        resource_id=row.id,
        changes={"name": row.name, "type": row.type, "base_url": row.base_url, "model": row.model,
                 "weight": float(row.weight), "priority": row.priority, "enabled": row.enabled,
                 "api_key_set": data.api_key is not None},
    )
    return row


async def update_provider(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, provider_id: uuid.UUID,
    data: ProviderUpdate,
) -> LLMProviderRow:
    row = await get_provider(session, actor, provider_id, lock=True)
    changes: dict[str, Any] = {}
    models_before = dict(row.models or {})
    fields = data.model_dump(exclude_unset=True)
    if "name" in fields and fields["name"] is not None and fields["name"] != row.name:
        if await _name_taken(session, fields["name"], exclude=row.id):
            raise Conflict(f"an LLM provider named {fields['name']!r} already exists")
        changes["name"] = [row.name, fields["name"]]
        row.name = fields["name"]
    if "base_url" in fields:
        new_url = str(data.base_url) if data.base_url else None
        _require_base_url(row.type, new_url)
        if new_url != row.base_url:
            changes["base_url"] = [row.base_url, new_url]
            row.base_url = new_url
    if "api_key" in fields:
        key = data.api_key or None
        # The key it has already (or none again): no edit, as for any field sent unchanged
        # (a tool re-applying its settings must not void a model sync running meanwhile).
        try:
            current = (gateway.secret_box.decrypt_str(row.api_key_encrypted,
                                                      api_key_aad(row.id))
                       if row.api_key_encrypted else None)
            unchanged = key == current
        except (DecryptionError, ValueError):  # unreadable (another key): replaced
            unchanged = False
        if not unchanged:
            row.api_key_encrypted = (
                gateway.secret_box.encrypt(key, api_key_aad(row.id)).decode() if key else None
            )
            changes["api_key_set"] = key is not None
    if fields.get("config") is not None:
        fields["config"] = _unmasked_config(fields["config"], row.config or {})
    old_model = row.model
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
        weight = _weight(fields["weight"])
        if weight != row.weight:
            changes["weight"] = [float(row.weight), float(weight)]
            row.weight = weight
    if old_model and old_model != row.model and row.last_models_sync is None:
        # Never synced: the old default was in models only as the default (a typo fixed
        # must not stay listed and routed).  After a sync it may be one the provider
        # listed; the next sync drops it if not.
        row.models = {m: on for m, on in (row.models or {}).items() if m != old_model}
    if "model" in fields and data.model and data.model not in (row.models or {}):
        row.models = {**(row.models or {}), data.model: True}
    if data.disabled_models is not None:
        disabled = set(data.disabled_models)
        unknown = sorted(disabled - set(row.models or {}))
        if unknown:  # a typo or a twin (NFD, a zero-width character) would disable nothing
            raise Unprocessable(
                f"the provider has no model {unknown[0]!r}"
                + (f" (nor {len(unknown) - 1} more of those named)" if len(unknown) > 1 else "")
                + "; disabled_models names models of its list (GET .../models)",
                extra={"field": "disabled_models", "models": unknown[:20]})
        wanted = {m: m not in disabled for m in (row.models or {})}
        if wanted != models_before:
            row.models = wanted
            changes["disabled_models"] = sorted(disabled & set(row.models))
    if not changes and (row.models or {}) == models_before:
        # Nothing changed (a PATCH {} or the same values again): no edit, so a model sync
        # or health check running meanwhile is not discarded as outdated (they compare
        # updated_at), no pool rebuild, no empty audit record.
        return row
    _recount(row)
    row.updated_at = utcnow()
    await _flush_name(session, row.name)
    await audit.record(session, "llm.provider.update", user_id=actor.user_id,
                       resource_type=RESOURCE, resource_id=row.id, changes=changes)
    return row


async def delete_provider(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, provider_id: uuid.UUID
) -> None:
    row = await get_provider(session, actor, provider_id)
    # A deletion at once with this one: the second waits for the row, then deletes
    # nothing, and is a 404 (one audit record).
    gone = await session.scalar(delete(LLMProviderRow).where(LLMProviderRow.id == row.id)
                                .returning(LLMProviderRow.id))
    if gone is None:
        raise NotFound(f"no LLM provider with id {provider_id}")
    await audit.record(session, "llm.provider.delete", user_id=actor.user_id,
                       resource_type=RESOURCE, resource_id=row.id, changes={"name": row.name})
    await gateway.pool.forget(row.id)


async def check_health(
    gateway: LLMGateway, actor: Principal | None, provider_id: uuid.UUID, *, always_audit: bool = True
) -> LLMProviderRow:
    """Probe one provider (outside any transaction) and store the result.

    ``actor`` None is the periodic system check: audited only when the status changes.
    """
    async with gateway.transaction(actor) as session:
        if actor is not None:
            snapshot: LLMProviderRow | None = await get_provider(session, actor, provider_id)
        else:
            snapshot = await session.get(LLMProviderRow, provider_id)
        if snapshot is None:
            raise NotFound(f"no LLM provider with id {provider_id}")
    try:
        provider = await gateway.pool.get(snapshot)
        result = await _bounded(gateway, provider, provider.health)
        status, error, ms = result.status, result.error, result.response_time_ms
    except ProviderBuildError as exc:
        status, error, ms = "unhealthy", exc.reason, 0
    except ProviderError as exc:  # timed out, or an instance replaced meanwhile (leases.held)
        status, error, ms = "unhealthy", exc.detail, 0
    if error is not None:  # the provider's words in part: storable whatever they hold
        error = clean_text(error)
    async with gateway.transaction(actor) as session:
        row = await session.get(LLMProviderRow, provider_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no LLM provider with id {provider_id}")
        if not _unchanged_since(snapshot, row):
            return row  # edited meanwhile: its health is for the next check to tell
        previous = row.health_status
        # Written with an UPDATE that leaves updated_at alone: a health check is not an
        # edit, and must not make the pool rebuild the provider.
        await session.execute(
            update(LLMProviderRow).where(LLMProviderRow.id == provider_id).values(
                health_status=status, health_error=error, response_time=ms,
                last_health_check_at=utcnow(), updated_at=row.updated_at,
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


async def sync_models(gateway: LLMGateway, actor: Principal, provider_id: uuid.UUID) -> LLMProviderRow:
    """Ask the provider for its models; new ones start enabled, disabled ones stay so."""
    async with gateway.transaction(actor) as session:
        snapshot = await get_provider(session, actor, provider_id)
    try:
        provider = await gateway.pool.get(snapshot)
    except ProviderBuildError as exc:
        raise Conflict(f"cannot sync models: {exc.reason}") from exc
    try:
        listed = await _bounded(gateway, provider, provider.list_models)
    except ProviderError as exc:
        # The provider's state, not the request, is at fault: a 409 the admin can act on.
        raise Conflict(f"cannot list the models of provider {snapshot.name!r}: {exc.detail}",
                       extra={"provider_error": exc.kind}) from exc
    async with gateway.transaction(actor) as session:
        row = await session.get(LLMProviderRow, provider_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no LLM provider with id {provider_id}")
        if not _unchanged_since(snapshot, row):
            raise Conflict("the provider changed during the sync; sync again")
        before = dict(row.models or {})
        # At most MAX_MODELS kept (the first listed, the default model among them): the
        # list goes into every answer about the provider.
        kept = listed[:MAX_MODELS]
        if row.model and row.model not in kept and len(kept) == MAX_MODELS:
            kept = kept[:-1]
        models = {m: bool(before.get(m, True)) for m in kept}
        if row.model and row.model not in models:
            models[row.model] = bool(before.get(row.model, True))
        await session.execute(
            update(LLMProviderRow).where(LLMProviderRow.id == provider_id).values(
                models=models, total_models=len(models),
                enabled_models=sum(1 for v in models.values() if v),
                last_models_sync=utcnow(), updated_at=row.updated_at,
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


async def register_local_if_empty(gateway: LLMGateway) -> LLMProviderRow | None:
    """On a fresh install with the 'local' extra: register SmolLM2 as provider "local".

    Only when no provider exists at all, so deleting it after adding others sticks.
    """
    if not gateway.settings.llm_local_model or not llama_cpp_available():
        return None
    path = find_smollm2_gguf()
    if path is None:
        return None
    async with gateway.db.transaction() as session:
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
