"""HTTP routes of the provider registry (admin) and of LLM request records."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Response, status

from roost.billing.usage_routes import get_usage as usage_get_usage
from roost.billing.usage_schemas import UsageReportOut
from roost.http.auth import AdminPrincipal, CurrentPrincipal
from roost.http.deps import DbSession
from roost.http.routing import RoostRouter
from roost.llm import providers, records
from roost.llm.deps import GatewayDep
from roost.llm.models import LLMProviderRow
from roost.llm.schemas import (
    ProviderCreate,
    ProviderOut,
    ProviderUpdate,
    RequestOut,
    ResponseOut,
)

router = RoostRouter(prefix="/api/v1/llm", tags=["llm"])


def _shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each extra header's value masked: they may carry credentials
    (docs/chat.md), shown no more than the api_key is."""
    headers = config.get("extra_headers")
    if not isinstance(headers, dict):
        return config
    return {**config, "extra_headers": {name: providers.MASKED for name in headers}}


def provider_out(row: LLMProviderRow) -> ProviderOut:
    return ProviderOut(
        id=row.id, name=row.name, type=row.type, base_url=row.base_url, model=row.model,
        weight=float(row.weight), priority=row.priority, enabled=row.enabled,
        config=_shown_config(row.config or {}), has_api_key=row.api_key_encrypted is not None,
        health_status=row.health_status, health_error=row.health_error,
        last_health_check_at=row.last_health_check_at, response_time=row.response_time,
        modelsdev_provider_id=row.modelsdev_provider_id,
        models={str(k): bool(v) for k, v in (row.models or {}).items()},
        total_models=row.total_models, enabled_models=row.enabled_models,
        last_models_sync=row.last_models_sync, created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/providers", response_model=list[ProviderOut])
async def list_providers(principal: AdminPrincipal, db: DbSession) -> list[ProviderOut]:
    """Every provider in fallback order (priority, then name).  API keys are never shown."""
    return [provider_out(r) for r in await providers.list_providers(db, principal)]


@router.post("/providers", status_code=status.HTTP_201_CREATED, response_model=ProviderOut)
async def create_provider(
    body: ProviderCreate, principal: AdminPrincipal, db: DbSession, gateway: GatewayDep
) -> ProviderOut:
    return provider_out(await providers.create_provider(db, gateway, principal, body))


@router.get("/providers/{provider_id}", response_model=ProviderOut)
async def get_provider(provider_id: uuid.UUID, principal: AdminPrincipal, db: DbSession) -> ProviderOut:
    return provider_out(await providers.get_provider(db, principal, provider_id))


@router.patch("/providers/{provider_id}", response_model=ProviderOut)
async def update_provider(
    provider_id: uuid.UUID, body: ProviderUpdate, principal: AdminPrincipal, db: DbSession,
    gateway: GatewayDep,
) -> ProviderOut:
    return provider_out(await providers.update_provider(db, gateway, principal, provider_id, body))


@router.delete("/providers/{provider_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_provider(
    provider_id: uuid.UUID, principal: AdminPrincipal, db: DbSession, gateway: GatewayDep
) -> Response:
    await providers.delete_provider(db, gateway, principal, provider_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/providers/{provider_id}/health", response_model=ProviderOut)
async def check_provider_health(
    provider_id: uuid.UUID, principal: AdminPrincipal, gateway: GatewayDep
) -> ProviderOut:
    """Probe the provider now; stores health_status, response_time and the error if any."""
    return provider_out(await providers.check_health(gateway, principal, provider_id))


@router.post("/providers/{provider_id}/sync-models", response_model=ProviderOut)
async def sync_provider_models(
    provider_id: uuid.UUID, principal: AdminPrincipal, gateway: GatewayDep
) -> ProviderOut:
    """Fetch the provider's model list; updates models, total_models and enabled_models."""
    return provider_out(await providers.sync_models(gateway, principal, provider_id))


@router.get("/requests/{request_id}", response_model=RequestOut)
async def get_request(
    request_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession, gateway: GatewayDep
) -> RequestOut:
    """One LLM request with every provider attempt (decrypted for its owner)."""
    row, responses = await records.get_request(db, gateway, principal, request_id)
    cipher = gateway.cipher
    return RequestOut(
        id=row.id, session_id=row.session_id, user_id=row.user_id, request_type=row.request_type,
        model=row.model, status=row.status, error_message=row.error_message,
        model_params=row.model_params or {}, ensemble_config=row.ensemble_config,
        created_at=row.created_at, started_at=row.started_at, completed_at=row.completed_at,
        prompt=cipher.decrypt(row.prompt), messages=records.decrypt_json(cipher, row.messages),
        responses=[
            ResponseOut(
                id=r.id, provider_id=r.provider_id, provider_name=r.provider_name, model=r.model,
                content=cipher.decrypt(r.content), tokens_prompt=r.tokens_prompt,
                tokens_completion=r.tokens_completion, tokens_total=r.tokens_total,
                confidence=float(r.confidence), response_time=r.response_time,
                finish_reason=r.finish_reason, selected=r.selected, outcome=r.outcome,
                error_kind=r.error_kind, error_message=r.error_message,
            )
            for r in responses
        ],
    )


# The report of /api/v1/billing/usage, by its own handler: the same parameters (source,
# user_id) and answers, never a copy that drifts from it.
router.add_api_route(
    "/usage", usage_get_usage, methods=["GET"], response_model=UsageReportOut,
    summary="Usage summed per UTC day, user, model, provider, agent, API key or request "
            "type (administrators: everyone's; the same as /api/v1/billing/usage)")
