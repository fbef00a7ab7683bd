"""A plan's feature limits (``plans.limits``): which models its subscribers may call and
how many agents, documents and runs a day they may have.  A missing or null limit is no
limit.  A refused action answers 403 with the limit named (``LimitReached``); nothing is
done then.  The domain that owns the counted thing counts it and asks here."""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing.credits import Payer, payer_for
from roost.errors import LimitReached
from roost.identity.common import lock_owner_quota

COUNT_LIMITS: Final = ("max_agents", "max_documents", "runs_per_day")
LIMIT_KEYS: Final = ("models_allowed", *COUNT_LIMITS)


def check_model(payer: Payer | None, model: str | None) -> None:
    """403 when the payer's plan lists the models it allows and ``model`` is none of them
    (a call that names no model: :func:`allowed_defaults`)."""
    if payer is None or model is None:
        return
    allowed = payer.limits.get("models_allowed")
    if not allowed:
        return
    if not _includes(allowed, model):
        raise LimitReached(
            f"the plan {payer.plan_key!r} does not include the model {model[:200]!r} "
            f"(allowed: {', '.join(allowed)})",
            extra={"limit": "models_allowed", "plan": payer.plan_key})


def allowed_defaults(payer: Payer | None, models: Sequence[str | None]) -> list[bool]:
    """For a call that names no model, answered by a provider's default model (``models``,
    one per provider it may ask): which of them the payer's plan includes, so the others
    are not asked (not naming a model must not reach a model the plan excludes); 403
    when it includes none."""
    allowed = payer.limits.get("models_allowed") if payer is not None else None
    if not allowed:
        return [True] * len(models)
    assert payer is not None
    included = [model is not None and _includes(allowed, model) for model in models]
    if not any(included):
        raise LimitReached(
            f"the plan {payer.plan_key!r} includes no provider's default model "
            f"(allowed: {', '.join(allowed)}): name a model it includes",
            extra={"limit": "models_allowed", "plan": payer.plan_key})
    return included


def _includes(allowed: Sequence[str], model: str) -> bool:
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in allowed)


def plan_includes(payer: Payer | None, model: str) -> bool:
    """Whether the payer's plan lets ``model`` be called (every model without a list)."""
    allowed = payer.limits.get("models_allowed") if payer is not None else None
    return not allowed or _includes(allowed, model)


async def lock_count(session: AsyncSession, payer: Payer, limit: str) -> None:
    """Call before counting for ``check_count``: parallel creates of the agents, documents
    or runs one subscription pays for (a group's: any member's) queue here until the
    transaction ends, so each counts the ones committed before it and they cannot all
    pass the limit together."""
    if limit not in COUNT_LIMITS:
        raise ValueError(f"unknown count limit {limit!r}")
    await lock_owner_quota(session, payer.subscription_id, f"billing.{limit}")


_OWNED = text("SELECT roost_subscription_owned(:subscription, :what, :since, :except_run)")


async def owned_count(session: AsyncSession, payer: Payer,
                      what: Literal["agents", "documents", "runs"], *,
                      since: datetime | None = None, except_run: uuid.UUID | None = None
                      ) -> int:
    """How many agents, documents or agent runs (created since ``since``, ``except_run``
    left out) the users ``payer`` pays for own: for a group's subscription, every member
    it bills, whom the caller's own scope does not show (migration 1440)."""
    count = await session.scalar(_OWNED, {"subscription": payer.subscription_id, "what": what,
                                          "since": since, "except_run": except_run})
    return int(count or 0)


async def check_count(session: AsyncSession, user_id: uuid.UUID | None, limit: str,
                      current: int, *, payer: Payer | None = None) -> None:
    """403 when one more would pass the plan's ``limit`` (``current`` is how many there
    are now: agents, documents, or runs started today, UTC)."""
    if limit not in COUNT_LIMITS:
        raise ValueError(f"unknown count limit {limit!r}")
    if payer is None:
        payer = await payer_for(session, user_id)
    if payer is None:
        return
    maximum = payer.limits.get(limit)
    if maximum is None:
        return
    if current + 1 > int(maximum):
        noun = {"max_agents": "agents", "max_documents": "documents",
                "runs_per_day": "runs today"}[limit]
        raise LimitReached(
            f"the plan {payer.plan_key!r} allows {maximum} {noun}; this would be one more "
            f"({current} already)", extra={"limit": limit, "maximum": int(maximum),
                                           "current": current, "plan": payer.plan_key})
