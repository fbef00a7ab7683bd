"""Task-queue handlers of the billing domain (listed in ``roost.domains``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from roost.billing import credits, stripe_sync
from roost.billing.renewals import renew_due
from roost.tasks.handlers import TaskContext, task
from roost.tasks.schedules import periodic


# --- renewals (roost.billing.renewals) ---------------------------------------------------
@periodic("billing.renew", every=timedelta(minutes=5), queue="maintenance",
          priority="background", max_retries=0, timeout_s=600)
async def renew_subscriptions(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, object]:
    """Invoice every ended period and roll the subscriptions forward (idempotent)."""
    return (await renew_due(ctx.database)).as_dict()


# --- Stripe (roost.billing.stripe_sync; enqueued only with a Stripe key) -----------------
@task(stripe_sync.SYNC_TASK, max_retries=8, backoff_base_s=10.0, backoff_max_s=3600.0,
      timeout_s=300, payload_model=stripe_sync.SyncPayload)
async def sync_to_stripe(ctx: TaskContext, payload: stripe_sync.SyncPayload) -> dict[str, Any]:
    """Create or update the Stripe side of one subscription or invoice (idempotent)."""
    return await stripe_sync.run_job(ctx.database, payload)


# --- credit reservations (roost.billing.credits) -----------------------------------------
@periodic("billing.release_expired", every=timedelta(minutes=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=120)
async def release_expired_holds(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, int]:
    """Give back the credits held by calls whose holder died (past their expiry)."""
    released = 0
    while True:
        async with ctx.database.transaction() as session:
            freed = await credits.release_expired(session)
        released += freed
        if not freed:
            return {"released_credits": released}
