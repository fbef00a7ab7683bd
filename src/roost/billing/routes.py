"""HTTP routes: /api/v1/billing plans, subscriptions and model prices (docs/billing.md).

Usage, invoices and the Stripe webhook have their own routers (usage_routes,
invoice_routes, stripe_routes) under the same prefix."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Body, Query, Response, status

from roost.billing import plans, prices, subscriptions
from roost.billing.schemas import (
    ChangePlan,
    PlanCreate,
    PlanOut,
    PlanRef,
    PlanUpdate,
    PriceCreate,
    PriceOut,
    PriceUpdate,
    StatusChange,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionStatus,
)
from roost.http.auth import AdminPrincipal, CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page

router = RoostRouter(prefix="/api/v1/billing", tags=["billing"])

OptionalReason = Annotated[StatusChange | None, Body()]


def _sub(view: subscriptions.SubscriptionView) -> SubscriptionOut:
    return SubscriptionOut(**view.fields())


# --- plans -------------------------------------------------------------------------------


@router.post("/plans", status_code=status.HTTP_201_CREATED, response_model=PlanOut,
             summary="Create a plan (administrators)")
async def create_plan(body: PlanCreate, principal: AdminPrincipal, db: DbSession) -> PlanOut:
    return PlanOut.model_validate(await plans.create_plan(db, principal, body))


@router.get("/plans", response_model=Page[PlanOut],
            summary="The active plans, by key (administrators: ?include_inactive=true)")
async def list_plans(principal: CurrentPrincipal, db: DbSession,
                     include_inactive: bool = False, limit: Limit = DEFAULT_LIMIT,
                     cursor: Cursor = None) -> Page[PlanOut]:
    rows, next_cursor = await plans.list_plans(db, principal, include_inactive=include_inactive,
                                               limit=limit, cursor=cursor)
    return Page[PlanOut](items=[PlanOut.model_validate(p) for p in rows],
                         next_cursor=next_cursor)


@router.get("/plans/{plan_ref}", response_model=PlanOut,
            summary="A plan by key or id (inactive ones: administrators only)")
async def get_plan(plan_ref: str, principal: CurrentPrincipal, db: DbSession) -> PlanOut:
    return PlanOut.model_validate(await plans.find_plan(db, principal, plan_ref))


@router.patch("/plans/{plan_ref}", response_model=PlanOut,
              summary="Change a plan (administrators); subscriptions keep this period's "
                      "credits")
async def update_plan(plan_ref: str, body: PlanUpdate, principal: AdminPrincipal,
                      db: DbSession) -> PlanOut:
    return PlanOut.model_validate(await plans.update_plan(db, principal, plan_ref, body))


@router.delete("/plans/{plan_ref}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Deactivate a plan (administrators): nobody new subscribes, existing "
                       "subscriptions keep working")
async def deactivate_plan(plan_ref: str, principal: AdminPrincipal, db: DbSession) -> Response:
    await plans.deactivate_plan(db, principal, plan_ref)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- subscriptions -----------------------------------------------------------------------


@router.post("/subscriptions", status_code=status.HTTP_201_CREATED,
             response_model=SubscriptionOut,
             summary="Subscribe a user or a group to a plan (administrators)")
async def create_subscription(body: SubscriptionCreate, principal: AdminPrincipal,
                              db: DbSession) -> SubscriptionOut:
    return _sub(await subscriptions.create_subscription(db, principal, body))


@router.get("/subscriptions", response_model=Page[SubscriptionOut],
            summary="Subscriptions, newest first (administrators: all; others: their own "
                    "and their groups')")
async def list_subscriptions(
    principal: CurrentPrincipal, db: DbSession,
    status_: Annotated[SubscriptionStatus | None, Query(alias="status")] = None,
    user_id: uuid.UUID | None = None, group_id: uuid.UUID | None = None,
    plan: Annotated[PlanRef | None, Query(max_length=64, description="key or id")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[SubscriptionOut]:
    rows, next_cursor = await subscriptions.list_subscriptions(
        db, principal, status=status_, user_id=user_id, group_id=group_id, plan=plan,
        limit=limit, cursor=cursor)
    return Page[SubscriptionOut](items=[_sub(v) for v in rows], next_cursor=next_cursor)


@router.get("/subscription", response_model=SubscriptionOut,
            summary="Your live subscription (or your group's) with its balance")
async def my_subscription(principal: CurrentPrincipal, db: DbSession) -> SubscriptionOut:
    return _sub(await subscriptions.my_subscription(db, principal))


@router.get("/subscriptions/{subscription_id:uuid}", response_model=SubscriptionOut,
            summary="A subscription (yours, your group's, or any for administrators)")
async def get_subscription(subscription_id: uuid.UUID, principal: CurrentPrincipal,
                           db: DbSession) -> SubscriptionOut:
    return _sub(await subscriptions.get_view(db, principal, subscription_id))


@router.post("/subscriptions/{subscription_id:uuid}/cancel", response_model=SubscriptionOut,
             summary="Cancel a subscription (administrators); final")
async def cancel_subscription(subscription_id: uuid.UUID, principal: AdminPrincipal,
                              db: DbSession, body: OptionalReason = None) -> SubscriptionOut:
    return _sub(await subscriptions.cancel(db, principal, subscription_id,
                                           body.reason if body else None))


@router.post("/subscriptions/{subscription_id:uuid}/pause", response_model=SubscriptionOut,
             summary="Pause a subscription (administrators): it allows no usage")
async def pause_subscription(subscription_id: uuid.UUID, principal: AdminPrincipal,
                             db: DbSession, body: OptionalReason = None) -> SubscriptionOut:
    return _sub(await subscriptions.pause(db, principal, subscription_id,
                                          body.reason if body else None))


@router.post("/subscriptions/{subscription_id:uuid}/resume", response_model=SubscriptionOut,
             summary="Make a paused (or trialing, or past due) subscription active "
                     "(administrators)")
async def resume_subscription(subscription_id: uuid.UUID, principal: AdminPrincipal,
                              db: DbSession, body: OptionalReason = None) -> SubscriptionOut:
    return _sub(await subscriptions.resume(db, principal, subscription_id,
                                           body.reason if body else None))


@router.post("/subscriptions/{subscription_id:uuid}/change-plan",
             response_model=SubscriptionOut,
             summary="Move a subscription to another plan (administrators); its credits "
                     "limit follows the new plan")
async def change_plan(subscription_id: uuid.UUID, body: ChangePlan, principal: AdminPrincipal,
                      db: DbSession) -> SubscriptionOut:
    return _sub(await subscriptions.change_plan(db, principal, subscription_id, body.plan))


# --- model prices ------------------------------------------------------------------------


@router.get("/prices", response_model=Page[PriceOut],
            summary="Model prices per million tokens, by pattern")
async def list_prices(principal: CurrentPrincipal, db: DbSession, limit: Limit = MAX_LIMIT,
                      cursor: Cursor = None) -> Page[PriceOut]:
    rows, next_cursor = await prices.list_prices(db, limit=limit, cursor=cursor)
    return Page[PriceOut](items=[PriceOut.model_validate(p) for p in rows],
                          next_cursor=next_cursor)


@router.post("/prices", status_code=status.HTTP_201_CREATED, response_model=PriceOut,
             summary="Add a model price (administrators)")
async def create_price(body: PriceCreate, principal: AdminPrincipal, db: DbSession) -> PriceOut:
    return PriceOut.model_validate(await prices.create_price(db, principal, body))


@router.get("/prices/{price_id:uuid}", response_model=PriceOut, summary="A model price")
async def get_price(price_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> PriceOut:
    return PriceOut.model_validate(await prices.get_price(db, price_id))


@router.patch("/prices/{price_id:uuid}", response_model=PriceOut,
              summary="Change a model price (administrators)")
async def update_price(price_id: uuid.UUID, body: PriceUpdate, principal: AdminPrincipal,
                       db: DbSession) -> PriceOut:
    return PriceOut.model_validate(await prices.update_price(db, principal, price_id, body))


@router.delete("/prices/{price_id:uuid}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a model price (administrators): the models it matched cost "
                       "what the next match says, or nothing")
async def delete_price(price_id: uuid.UUID, principal: AdminPrincipal, db: DbSession) -> Response:
    await prices.delete_price(db, principal, price_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
