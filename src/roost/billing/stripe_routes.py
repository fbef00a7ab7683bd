"""HTTP routes: the Stripe webhook, ``POST /api/v1/billing/stripe/webhook``.

No Roost authentication: Stripe signs each delivery, and the signature is checked
before anything else (roost.billing.stripe_webhooks).  The transaction opens only once
the signature holds, so unsigned requests cost no database connection."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Header, Request
from pydantic import BaseModel

from roost.billing import stripe_webhooks
from roost.billing.stripe_webhooks import Outcome
from roost.db.engine import Database
from roost.errors import NotFound
from roost.http.deps import SettingsDep, database_dep
from roost.http.routing import RoostRouter

router = RoostRouter(prefix="/api/v1/billing", tags=["billing"])


class StripeWebhookOut(BaseModel):
    received: Literal[True] = True
    event_id: str
    type: str
    outcome: Outcome
    detail: str | None = None


@router.post(
    "/stripe/webhook", response_model=StripeWebhookOut,
    summary="Stripe webhook: signed events, each id processed once (no Roost authentication)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object",
                                        "description": "a Stripe event, signed"}}}}},
)
async def stripe_webhook(
    request: Request, settings: SettingsDep,
    database: Annotated[Database, Depends(database_dep)],
    # Its length is checked with the signature (a 400 like any bad signature, not a 422).
    stripe_signature: Annotated[str | None, Header()] = None,
) -> StripeWebhookOut:
    secret = settings.stripe_webhook_secret
    if secret is None or not secret.get_secret_value():
        # 404, not 503: nothing is down, the endpoint is off (Stripe retries either way).
        raise NotFound("Stripe webhooks are not configured on this server: set "
                       "ROOST_STRIPE_WEBHOOK_SECRET to the endpoint's signing secret")
    payload = await request.body()
    event = stripe_webhooks.verify_event(secret.get_secret_value(), payload, stripe_signature)
    async with database.transaction() as session:
        result = await stripe_webhooks.process_event(session, event)
    return StripeWebhookOut(event_id=result.event_id, type=result.type, outcome=result.outcome,
                            detail=result.detail)
