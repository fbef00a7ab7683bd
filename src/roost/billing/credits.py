"""Credits: reserve before a call, settle after it, and never let concurrent callers
spend past a subscription's limit.

A subscription's balance is ``credits_limit - credits_used - credits_reserved``.
:func:`reserve` moves the estimated amount into ``credits_reserved`` with ONE conditional
UPDATE (``... WHERE credits_used + credits_reserved + :amount <= credits_limit``): the
row lock serialises concurrent reservations and PostgreSQL re-checks the condition on
the updated row, so 64 callers racing for a balance that covers 10 get exactly 10
reservations (tests/billing/test_credits.py counts them in SQL).  The reservation row
(``credit_reservations``) is written by the same statement; the caller commits it before
calling the provider, so other requests see the hold.

:func:`settle` moves the hold into ``credits_used`` with the actual amount (which may be
more or less than the estimate: the estimate only gates); :func:`release` gives it back
(the call failed).  A holder that dies leaves a ``held`` row: the sweeper job
(:func:`release_expired`) gives those back after ``ROOST_BILLING_RESERVATION_TTL_S``.
A hold taken alone (:func:`reserve_alone`) commits without waiting for the WAL flush;
:func:`settle` charges a call whose hold a crash of the database lost (docs/billing.md
"Holds commit asynchronously").

Who pays: the user's own live subscription, else a live subscription of one of their
groups.  A user with none is not metered unless ``billing_require_subscription`` is on
(then every metered call answers 402).  A paused or canceled subscription allows
nothing (402 naming the status).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing import runtime_settings
from roost.config import Settings
from roost.db.base import uuid7
from roost.db.engine import Database
from roost.db.transaction import on_rollback
from roost.errors import PaymentRequired
from roost.system_settings import runtime

KINDS: Final = ("llm", "tool", "run")
CHANNEL: Final = "roost_billing"
# Statuses that may spend (past_due keeps serving until the operator or Stripe says).
SPENDING: Final = ("trialing", "active", "past_due")


@dataclass(frozen=True)
class Payer:
    """The subscription that pays for a user's calls."""

    subscription_id: uuid.UUID
    status: str
    balance: int
    credits_limit: int
    limits: dict[str, Any]  # the plan's feature limits
    plan_key: str


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    subscription_id: uuid.UUID
    amount: int
    kind: str
    user_id: uuid.UUID | None


# The user's own subscription first, then their groups' (oldest first); canceled ones
# are history.  A UNION of two index probes (an OR across them scans).
# The user's own live subscription first, then their groups' (oldest first).
_PAYER_SQL = """
SELECT c.id, c.status, c.credits_limit, c.balance, p.limits, p.key AS plan_key FROM (
  SELECT s.id, s.status, s.credits_limit, s.plan_id, s.created_at, false AS via_group,
         s.credits_limit - s.credits_used - s.credits_reserved AS balance
  FROM subscriptions s WHERE s.user_id = :user_id AND s.status <> 'canceled'
  UNION ALL
  SELECT s.id, s.status, s.credits_limit, s.plan_id, s.created_at, true,
         s.credits_limit - s.credits_used - s.credits_reserved
  FROM user_group_memberships m
  JOIN subscriptions s ON s.group_id = m.group_id AND s.status <> 'canceled'
  WHERE m.user_id = :user_id
) c JOIN plans p ON p.id = c.plan_id
ORDER BY c.via_group, c.created_at
LIMIT 1
"""
_PAYER = text(_PAYER_SQL)

# The hold's row, for each subscription the ``held`` CTE's conditional UPDATE returned.
_INSERT_HELD = """
INSERT INTO credit_reservations
  (id, subscription_id, user_id, kind, reference, amount, status, expires_at, created_at)
SELECT :id, held.id, :user_id, :kind, :reference, :amount, 'held',
       now() + make_interval(secs => :ttl), now()
FROM held
RETURNING subscription_id
"""

_RESERVE = text("""
WITH held AS (
  UPDATE subscriptions SET credits_reserved = credits_reserved + :amount
  WHERE id = :subscription_id AND status IN ('trialing', 'active', 'past_due')
    AND credits_used + credits_reserved + :amount <= credits_limit
  RETURNING id
)""" + _INSERT_HELD)  # noqa: S608 (constants only; the values are bound)

_SETTLE = text("""
WITH done AS (
  UPDATE credit_reservations SET status = :status, actual = :actual, settled_at = now()
  WHERE id = :id AND status = 'held'
  RETURNING subscription_id, amount
)
UPDATE subscriptions s
SET credits_reserved = s.credits_reserved - done.amount,
    credits_used = s.credits_used + :actual
FROM done WHERE s.id = done.subscription_id
RETURNING s.id
""")

# NOTE: migration 1020's roost_hold_credits (reserve_alone) repeats this statement and
# _PAYER_SQL as history: a change to either needs a migration that replaces that function
# too (tests/billing/test_credits.py runs both paths against the same subscriptions).
# Find the payer and hold the credits in one round trip (reserve() without a payer): the
# payer's row as _PAYER reads it, and whether the conditional UPDATE took the hold (it
# takes none for a paused subscription or a balance too small: reserve() then refuses).
_FIND_AND_HOLD = text(f"""
WITH payer AS ({_PAYER_SQL}),
held AS (
  UPDATE subscriptions s SET credits_reserved = s.credits_reserved + :amount
  FROM payer
  WHERE s.id = payer.id AND s.status IN ('trialing', 'active', 'past_due')
    AND s.credits_used + s.credits_reserved + :amount <= s.credits_limit
  RETURNING s.id
),
reserved AS ({_INSERT_HELD})
SELECT payer.*, EXISTS (SELECT 1 FROM reserved) AS held FROM payer
""")  # noqa: S608 (constants only; the values are bound)

# A settlement that arrives after the sweeper released the hold still bills the call.
_LATE_SETTLE = text("""
WITH late AS (
  UPDATE credit_reservations SET status = 'settled', actual = :actual, settled_at = now()
  WHERE id = :id AND status = 'released' AND actual IS NULL
  RETURNING subscription_id
)
UPDATE subscriptions s SET credits_used = s.credits_used + :actual
FROM late WHERE s.id = late.subscription_id
RETURNING s.id
""")
# A settlement whose hold is gone altogether: a hold commits without waiting for the WAL
# flush (reserve_alone, migration 1080), so a crash of PostgreSQL right after it can lose
# it.  The call still happened: its row is written settled and the actual is charged.
# ON CONFLICT: a reservation settled already (a retried settlement) is not charged twice.
_LOST_SETTLE = text("""
WITH lost AS (
  INSERT INTO credit_reservations (id, subscription_id, user_id, kind, amount, actual, status,
                                   expires_at, settled_at, created_at)
  VALUES (:id, :subscription_id, :user_id, :kind, :amount, :actual, 'settled', now(), now(),
          now())
  ON CONFLICT (id) DO NOTHING
  RETURNING subscription_id
)
UPDATE subscriptions s SET credits_used = s.credits_used + :actual
FROM lost WHERE s.id = lost.subscription_id
""")

_RELEASE_EXPIRED = text("""
WITH expired AS (
  UPDATE credit_reservations SET status = 'released', settled_at = now()
  WHERE id IN (SELECT id FROM credit_reservations
               WHERE status = 'held' AND expires_at < now()
               ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED)
  RETURNING subscription_id, amount
), per_subscription AS (
  SELECT subscription_id, sum(amount) AS amount FROM expired GROUP BY subscription_id
)
UPDATE subscriptions s SET credits_reserved = s.credits_reserved - p.amount
FROM per_subscription p WHERE s.id = p.subscription_id
RETURNING p.amount
""")


class _Metering:
    """Whether any live subscription exists (``roost_billing_active()``), cached per
    process while its LISTEN connection is up: a subscription's insert, status change or
    delete NOTIFYs ``roost_billing`` (migration 0910) and drops the answer.  Without
    subscriptions, a model or tool call then costs no billing query at all."""

    def __init__(self) -> None:
        self.listening = False
        self.generation = 0
        self.active: bool | None = None

    def drop(self, _payload: str = "") -> None:
        self.generation += 1
        self.active = None

    def set_listening(self, listening: bool) -> None:
        self.listening = listening
        self.drop()


METERING = _Metering()
runtime.watch(CHANNEL, METERING.drop, METERING.set_listening)


async def _anyone_metered(session: AsyncSession) -> bool:
    return await _metered(METERING.listening and runtime.serves(session),
                          lambda: session.scalar(text(_BILLING_ACTIVE)))


_BILLING_ACTIVE: Final = "SELECT roost_billing_active()"


async def _metered(cached: bool, ask: Callable[[], Awaitable[Any]]) -> bool:
    """Whether anyone is metered: the process's cache when it may answer (``cached``),
    else ``ask`` the database (and remember the answer when no change was announced
    meanwhile)."""
    if cached and METERING.active is not None:
        return METERING.active
    generation = METERING.generation
    active = bool(await ask())
    if cached and METERING.listening and METERING.generation == generation:
        METERING.active = active
    return active


def unmetered_by_caches(database: str | None, settings: Settings) -> bool:
    """Whether this process's caches alone tell that nothing is charged now (nobody is
    metered, and subscriptions are not required): what :func:`reserve` would find,
    without a statement.  False when that needs the database (``database``: the name of
    the caller's; the caches answer only for the one the process listens on)."""
    if not (METERING.listening and runtime.serves_database(database)) \
            or METERING.active is not False:
        return False
    hit, required = runtime.cached(runtime_settings.REQUIRE_SUBSCRIPTION,
                                   settings.billing_require_subscription)
    return hit and not required


async def payer_for(session: AsyncSession, user_id: uuid.UUID | None) -> Payer | None:
    """The subscription paying for ``user_id``'s calls, or None (not metered)."""
    if user_id is None:
        return None
    if METERING.listening and runtime.serves(session) and not await _anyone_metered(session):
        return None
    row = (await session.execute(_PAYER, {"user_id": user_id})).first()
    return _payer(row._mapping) if row is not None else None


async def require_payer(session: AsyncSession, settings: Settings,
                        user_id: uuid.UUID | None) -> Payer | None:
    """:func:`payer_for`, refusing (402) a user with none when subscriptions are required
    and a subscription that may not spend (paused)."""
    payer = await payer_for(session, user_id)
    if payer is None:
        await _check_unsubscribed(session, settings, user_id)
        return None
    _check_spending(payer)
    return payer


async def _check_unsubscribed(session: AsyncSession, settings: Settings,
                              user_id: uuid.UUID | None) -> None:
    """402 for a user without a subscription when subscriptions are required."""
    if user_id is not None and await runtime.get(
            session, runtime_settings.REQUIRE_SUBSCRIPTION,
            settings.billing_require_subscription):
        raise PaymentRequired(
            "this account has no subscription: an administrator must subscribe it to "
            "a plan (POST /api/v1/billing/subscriptions)",
            extra={"balance": 0, "needed": None})


def _check_spending(payer: Payer) -> None:
    """402 for a subscription that may not spend (paused)."""
    if payer.status not in SPENDING:
        raise PaymentRequired(
            f"the subscription is {payer.status}: nothing can be charged to it until it is "
            "resumed", extra={"subscription_id": str(payer.subscription_id),
                              "status": payer.status})


def _payer(row: Mapping[Any, Any]) -> Payer:
    """The payer of a row by column name (an ORM row's ``_mapping``, an asyncpg record)."""
    return Payer(subscription_id=row["id"], status=row["status"], balance=int(row["balance"]),
                 credits_limit=int(row["credits_limit"]), limits=dict(row["limits"] or {}),
                 plan_key=row["plan_key"])


def _refuse(payer: Payer, amount: int) -> PaymentRequired:
    return PaymentRequired(
        f"not enough credits: this needs {amount} and the balance is {max(payer.balance, 0)} "
        f"of {payer.credits_limit} (plan {payer.plan_key!r}); the limit resets with the "
        "next billing period, or an administrator can change the plan",
        extra={"balance": max(payer.balance, 0), "needed": amount,
               "subscription_id": str(payer.subscription_id)})


async def reserve(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID | None, amount: int, *,
    kind: str,
    reference: str | None = None, payer: Payer | None = None,
    check: Callable[[Payer], None] | None = None,
) -> Reservation | None:
    """Hold ``amount`` credits of the user's balance in the caller's transaction (commit it
    before doing the work).  None: the user is not metered.  Raises PaymentRequired (402)
    when the balance cannot cover it; nothing is held then.  Without ``payer``, finding
    it and holding are one statement (a refusal, read from its answer, held nothing);
    ``check`` then sees the payer found (a plan limit, e.g. the models it allows) before
    the balance is judged, and may raise: the caller's transaction rolls back with the
    error, the hold with it."""
    amount = max(int(amount), 1)
    reservation_id = uuid7()
    params = {"amount": amount, "id": reservation_id, "user_id": user_id, "kind": kind,
              "reference": reference, "ttl": float(settings.billing_reservation_ttl_s)}
    if payer is None:
        if user_id is None or (METERING.listening and runtime.serves(session)
                               and not await _anyone_metered(session)):
            return None  # not metered (what payer_for says first)
        row = (await session.execute(_FIND_AND_HOLD, params)).first()
        if row is None:
            await _check_unsubscribed(session, settings, user_id)
            return None
        payer = _payer(row._mapping)
        _check_spending(payer)
        if check is not None:
            check(payer)
        if not row.held:  # not enough: as the snapshot says, or taken since (read again)
            fresh = payer if amount > payer.balance else await payer_for(session, user_id)
            raise _refuse(fresh or payer, amount)
        return Reservation(id=reservation_id, subscription_id=payer.subscription_id,
                           amount=amount, kind=kind, user_id=user_id)
    if check is not None:
        check(payer)
    if amount > payer.balance:  # the common refusal, without taking the row lock
        raise _refuse(payer, amount)
    held = (await session.execute(
        _RESERVE, {**params, "subscription_id": payer.subscription_id})).first()
    if held is None:  # someone else took the balance since we read it
        fresh = await payer_for(session, user_id)
        raise _refuse(fresh or payer, amount)
    return Reservation(id=reservation_id, subscription_id=payer.subscription_id, amount=amount,
                       kind=kind, user_id=user_id)


_HOLD_ALONE: Final = "SELECT * FROM roost_hold_credits($1, $2, $3, $4, $5, $6, $7)"


async def reserve_alone(
    database: Database, settings: Settings, scope: Mapping[str, str],
    user_id: uuid.UUID | None, amount: int, *, kind: str, reference: str | None = None,
    check: Callable[[Payer], None] | None = None, side: bool = False,
) -> Reservation | None:
    """:func:`reserve` without a payer, in a transaction of its own, in one round trip:
    the SQL function ``roost_hold_credits`` (migration 1020) applies ``scope`` (the
    caller's ``tenancy.scope_settings``), finds the payer and holds, and its implicit
    transaction commits as it ends, so the payer's row stays locked for that one
    statement (a transaction of its own was three round trips, the row locked until the
    ``COMMIT`` arrived).  Committed when it returns (visible to every other hold: the
    work may start), without waiting for the WAL flush (migration 1080: a hold is not
    money; a crash of the database can lose it, and :func:`settle` charges the call all
    the same).  The same
    answers as :func:`reserve`: None when the user is not metered; 402 for a paused
    subscription, a balance that cannot cover it, or no subscription when one is
    required, with nothing held.  ``check`` as :func:`reserve` takes it (a hold it
    refuses is given back before its error is raised).

    ``side``: the caller has a transaction of the main pool open (a model call's request
    being stored): the hold, and whatever it reads to explain a refusal, use the side
    pool (``Database.autocommit``).  The caller gives the hold back if that transaction
    does not commit (``roost.db.transaction.on_rollback`` with :func:`release_alone`)."""
    if user_id is None:
        return None
    amount = max(int(amount), 1)
    reservation_id = uuid7()
    cached = METERING.listening and runtime.serves_database(database.engine.url.database)
    if cached and METERING.active is False:
        return None  # nobody is metered, as the cache knows: no connection taken
    async with database.autocommit(side=side) as driver:
        # As reserve() does first: where nobody is metered, nothing is held (the cache
        # answers; once per change of subscriptions, the database).
        if cached and not await _metered(True, lambda: driver.fetchval(_BILLING_ACTIVE)):
            return None
        row = await driver.fetchrow(
            _HOLD_ALONE, json.dumps(dict(scope)), reservation_id, user_id, amount, kind,
            reference, float(settings.billing_reservation_ttl_s))
    if row is None:  # no subscription pays for this user
        hit, required = runtime.cached(runtime_settings.REQUIRE_SUBSCRIPTION,
                                       settings.billing_require_subscription)
        if hit and not required:
            return None
        async with database.transaction(side=side) as session:
            await _check_unsubscribed(session, settings, user_id)
        return None
    payer = _payer(row)
    _check_spending(payer)
    reservation = Reservation(id=reservation_id, subscription_id=payer.subscription_id,
                              amount=amount, kind=kind, user_id=user_id)
    if check is not None:
        try:
            check(payer)
        except BaseException:
            if row["held"]:
                await release_alone(database, scope, reservation, side=side)
            raise
    if not row["held"]:  # not enough: as the snapshot says, or taken since (read again)
        fresh = payer
        if amount <= payer.balance:
            async with database.transaction(side=side) as session:
                fresh = await payer_for(session, user_id) or payer
        raise _refuse(fresh, amount)
    return reservation


async def hold_beside(
    session: AsyncSession, database: Database, settings: Settings, scope: Mapping[str, str],
    user_id: uuid.UUID | None, amount: int, *, kind: str, reference: str | None = None,
    check: Callable[[Payer], None] | None = None,
) -> Reservation | None:
    """:func:`reserve_alone` on the side pool while ``session``'s transaction (the one
    that stores what the hold pays for) is open, the hold given back in the background if
    that transaction does not commit.  Committed when it returns, so the payer's row is
    locked for one statement, not until that transaction's durable commit."""
    reservation = await reserve_alone(database, settings, scope, user_id, amount, kind=kind,
                                      reference=reference, check=check, side=True)
    if reservation is not None:
        held = reservation
        on_rollback(session, lambda: release_alone(database, scope, held))
    return reservation


# release() as one statement for the driver, sent after the scope in a transaction of
# its own (release_alone).
_RELEASE_ALONE: Final = """
WITH done AS (
  UPDATE credit_reservations SET status = 'released', actual = 0, settled_at = now()
  WHERE id = $1 AND status = 'held'
  RETURNING subscription_id, amount
)
UPDATE subscriptions s SET credits_reserved = s.credits_reserved - done.amount
FROM done WHERE s.id = done.subscription_id
"""


async def release_alone(database: Database, scope: Mapping[str, str],
                        reservation: Reservation, *, side: bool = False) -> None:
    """:func:`release` in a transaction of its own, scoped as the hold was (``scope``):
    a hold taken alone whose work never started (its caller's transaction rolled back).
    A hold settled or released meanwhile is left as it is."""
    async with database.autocommit(side=side) as driver, driver.transaction():
        await driver.execute("SELECT roost_apply_scope($1::jsonb)", json.dumps(dict(scope)))
        await driver.execute(_RELEASE_ALONE, reservation.id)


async def settle(session: AsyncSession, reservation: Reservation, actual: int) -> None:
    """Charge ``actual`` credits for the reserved call and give the rest of the hold back
    (in the call's final transaction).  A hold the sweeper released meanwhile, or one a
    crash of the database lost (holds commit asynchronously: migration 1080), is charged
    all the same; a settlement retried after it succeeded charges nothing."""
    actual = max(int(actual), 0)
    params = {"id": reservation.id, "actual": actual, "status": "settled"}
    if (await session.execute(_SETTLE, params)).first() is not None or not actual:
        return
    late = {"id": reservation.id, "actual": actual}
    if (await session.execute(_LATE_SETTLE, late)).first() is None:
        await session.execute(_LOST_SETTLE, {
            **late, "subscription_id": reservation.subscription_id,
            "user_id": reservation.user_id, "kind": reservation.kind,
            "amount": reservation.amount})


async def release(session: AsyncSession, reservation: Reservation) -> None:
    """Give the whole hold back (the call failed before costing anything)."""
    await session.execute(_SETTLE, {"id": reservation.id, "actual": 0, "status": "released"})


async def release_expired(session: AsyncSession, batch: int = 1000) -> int:
    """Release held reservations past their expiry; the credits they gave back."""
    rows = (await session.execute(_RELEASE_EXPIRED, {"batch": batch})).all()
    return sum(int(r.amount) for r in rows)


# What one ledger row's credits may be: ``usage_records.credits_used`` is an int4.
MAX_RECORD_CREDITS: Final = 2**31 - 1


async def calls_are_free(session: AsyncSession, settings: Settings) -> bool:
    """Whether neither model calls (``ROOST_LLM_CREDITS_PER_1K_TOKENS``) nor tool calls
    (the runtime ``billing_tool_call_credits``) cost credits: nothing a run does is then
    charged, and a balance of 0 refuses none of it."""
    if settings.llm_credits_per_1k_tokens > 0:
        return False
    price = await runtime.get(session, runtime_settings.TOOL_CALL_CREDITS,
                              settings.billing_tool_call_credits)
    return not price


def credits_for_tokens(settings: Settings, tokens: int, *, capped: bool = True) -> int:
    """Credits for ``tokens`` model tokens (ROOST_LLM_CREDITS_PER_1K_TOKENS, rounded up),
    at most MAX_RECORD_CREDITS: a model call's tokens at the highest rate (10^6 per 1000)
    come to more, and its usage row must not fail (the call is billed that much).
    ``capped=False``: the exact amount, for a caller that refuses more (the ingest)."""
    rate = settings.llm_credits_per_1k_tokens
    exact = math.ceil(tokens * rate / 1000) if tokens > 0 and rate > 0 else 0
    return min(exact, MAX_RECORD_CREDITS) if capped else exact


def estimate_tokens(settings: Settings, texts: list[str], max_output_tokens: int | None) -> int:
    """What a model call may use: its prompt (4 characters a token, rounded up: an
    over-estimate for most text) and its output cap (``max_tokens``, else
    ``ROOST_BILLING_ESTIMATE_OUTPUT_TOKENS``)."""
    prompt = sum(math.ceil(len(t) / 4) for t in texts)
    output = max_output_tokens or settings.billing_estimate_output_tokens
    return prompt + output

