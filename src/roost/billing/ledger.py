"""The usage ledger's batch ingest: billable events a client reports (its own metering,
work done outside Roost), written to ``usage_records`` at thousands per second.

Each event carries an idempotency key derived from what caused it; the insert is one
statement over arrays (``INSERT ... SELECT FROM unnest(...) ON CONFLICT
(idempotency_key) DO NOTHING``), so a replayed batch, or a batch replaying itself, adds
nothing and charges nothing twice.  Events are inserted in the order of their keys and
subscriptions charged in the order of their ids, so concurrent replays of one batch (in
any order) queue behind each other instead of deadlocking.  Only the newly written
events are charged to their user's subscription (``credits_used``), in the same
transaction.  Roost's own events
(model calls: ``llm:<request id>``, tool calls: ``tool:<tool run id>``) are written by
the code that makes them, with the same uniqueness.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from sqlalchemy import ColumnElement, Uuid, column, select, table, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.billing import prices
from roost.billing.credits import MAX_RECORD_CREDITS, credits_for_tokens
from roost.billing.usage_schemas import MAX_EVENT_COST, UsageEventIn
from roost.config import Settings
from roost.db.base import utcnow, uuid7
from roost.errors import Forbidden, Unprocessable
from roost.identity.models import User
from roost.principal import Principal

_AGENTS = table("agents", column("id", Uuid))

# Each user's paying subscription (their own first, then a group's, oldest first), for a
# whole batch: two index probes per user (an OR across the two would compare every user
# with every subscription: 1.2 s for 1,000 users, bench/billing).
_PAYERS = text("""
SELECT DISTINCT ON (c.user_id) c.user_id, c.subscription_id, c.period_start, c.currency
FROM (
  SELECT s.user_id, s.id AS subscription_id, false AS via_group, s.created_at,
         s.current_period_start AS period_start, s.currency
  FROM subscriptions s
  WHERE s.status <> 'canceled' AND s.user_id = ANY(CAST(:user_ids AS uuid[]))
  UNION ALL
  SELECT m.user_id, s.id, true, s.created_at, s.current_period_start, s.currency
  FROM user_group_memberships m
  JOIN subscriptions s ON s.group_id = m.group_id AND s.status <> 'canceled'
  WHERE m.user_id = ANY(CAST(:user_ids AS uuid[]))
) c ORDER BY c.user_id, c.via_group, c.created_at
""")

_INSERT = text("""
INSERT INTO usage_records
  (id, idempotency_key, user_id, request_type, model, tokens_input, tokens_output,
   credits_used, cost, currency, latency_ms, success, agent_id, subscription_id, created_at)
SELECT * FROM unnest(
  CAST(:ids AS uuid[]), CAST(:keys AS varchar[]), CAST(:user_ids AS uuid[]),
  CAST(:types AS varchar[]), CAST(:models AS varchar[]), CAST(:tokens_in AS int[]),
  CAST(:tokens_out AS int[]), CAST(:credits AS int[]), CAST(:costs AS numeric[]),
  CAST(:currencies AS varchar[]), CAST(:latencies AS int[]), CAST(:successes AS boolean[]),
  CAST(:agent_ids AS uuid[]), CAST(:subscription_ids AS uuid[]),
  CAST(:created AS timestamptz[]))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, subscription_id, credits_used
""")

# The rows stored under replayed keys, to tell a replay from another event under a used key.
_STORED = text("""
SELECT idempotency_key, user_id, request_type, model, tokens_input, tokens_output, success,
       agent_id, credits_used, cost
FROM usage_records WHERE idempotency_key = ANY(CAST(:keys AS varchar[]))
""")

# The payers' rows are locked in id order first (ORDER BY comes before FOR UPDATE), so
# two batches charging the same subscriptions queue instead of deadlocking.
_CHARGE = text("""
WITH c AS (
  SELECT * FROM unnest(CAST(:subscription_ids AS uuid[]), CAST(:credits AS bigint[]))
    AS c(id, credits)
), locked AS (
  SELECT s.id FROM subscriptions s WHERE s.id IN (SELECT id FROM c) ORDER BY s.id FOR UPDATE
)
UPDATE subscriptions s SET credits_used = s.credits_used + c.credits
FROM c JOIN locked l ON l.id = c.id
WHERE s.id = c.id
""")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    credits_charged: int


async def _unknown(session: AsyncSession, ids: set[uuid.UUID],
                   id_column: ColumnElement[uuid.UUID]) -> set[uuid.UUID]:
    if not ids:
        return set()
    found = set((await session.scalars(select(id_column).where(id_column.in_(ids)))).all())
    return ids - found


CLOCK_SKEW: Final = timedelta(minutes=5)


def _check_occurred_at(event: UsageEventIn, period_start: datetime | None,
                       now: datetime) -> None:
    """An event is charged to its payer's current period and invoiced by its time, so its
    time must lie in that period (not before its start, not in the future beyond a clock's
    skew): one dated elsewhere was charged now but no invoice would ever list it."""
    when = event.occurred_at
    if when is None:
        return
    if when > now + CLOCK_SKEW:
        raise Unprocessable(f"event {event.idempotency_key!r} occurred_at is in the future",
                            extra={"field": "occurred_at",
                                   "idempotency_key": event.idempotency_key})
    if period_start is not None and when < period_start:
        raise Unprocessable(
            f"event {event.idempotency_key!r} occurred_at is before its payer's current "
            f"billing period ({period_start.isoformat()}): that period's usage can no "
            "longer be charged", extra={"field": "occurred_at",
                                        "idempotency_key": event.idempotency_key})


async def _check_replays(session: AsyncSession, events: list[UsageEventIn],
                         written: set[str]) -> None:
    """422 (the batch rolled back) when an event not written under its key, or a key sent
    twice in the batch, is not the event stored under it: another user, type, model,
    agent, outcome, token counts, or credits or cost the event sends.  A client reusing a
    key for a different event (one key per step, for every user) would otherwise lose
    that event silently, counted in ``duplicates``.  Amounts taken from the price table
    are not compared: a replay after a price change is still the same event."""
    seen: set[str] = set()
    suspects: set[str] = set()
    for event in events:
        if event.idempotency_key in seen or event.idempotency_key not in written:
            suspects.add(event.idempotency_key)
        seen.add(event.idempotency_key)
    if not suspects:
        return
    stored = {row.idempotency_key: row for row in (await session.execute(
        _STORED, {"keys": sorted(suspects)})).all()}
    for event in events:
        row = stored.get(event.idempotency_key)
        if row is None:
            continue
        sent_amounts_differ = (
            (event.credits is not None and event.credits != row.credits_used)
            or (event.cost is not None and row.cost is not None
                and Decimal(str(event.cost)) != row.cost))
        if sent_amounts_differ or (row.user_id, row.request_type, row.model, row.tokens_input,
                                   row.tokens_output, row.success, row.agent_id) != (
                event.user_id, event.request_type, event.model, event.tokens_input,
                event.tokens_output, event.success, event.agent_id):
            raise Unprocessable(
                f"event {event.idempotency_key!r} is not the event already stored under its "
                "key (another user, type, model, agent, outcome, token counts, or credits "
                "or cost sent): give each event its own key; nothing of the batch was written",
                extra={"field": "idempotency_key", "idempotency_key": event.idempotency_key})


async def ingest(
    session: AsyncSession, settings: Settings, actor: Principal, events: list[UsageEventIn],
) -> IngestResult:
    """Write ``events`` to the ledger (administrators only); see the module docstring."""
    if not actor.is_admin:
        raise Forbidden("only an administrator may report usage events")
    missing_users = await _unknown(session, {e.user_id for e in events}, User.__table__.c.id)
    if missing_users:
        raise Unprocessable(f"{len(missing_users)} event(s) name no existing user",
                            extra={"unknown_user_ids": sorted(map(str, missing_users))[:20]})
    missing_agents = await _unknown(session, {e.agent_id for e in events if e.agent_id},
                                    _AGENTS.c.id)
    if missing_agents:
        raise Unprocessable(f"{len(missing_agents)} event(s) name no existing agent",
                            extra={"unknown_agent_ids": sorted(map(str, missing_agents))[:20]})
    # In one canonical order (by key): two replays of a batch in different orders would
    # otherwise each wait for a key the other inserted first (a deadlock, 503).
    events = sorted(events, key=lambda e: e.idempotency_key)
    users = sorted({e.user_id for e in events})
    found = (await session.execute(_PAYERS, {"user_ids": users})).all()
    payers = {row.user_id: row.subscription_id for row in found}
    period_starts = {row.user_id: row.period_start for row in found}
    payer_currencies: dict[uuid.UUID, str] = {row.user_id: row.currency for row in found}
    now = utcnow()
    columns: dict[str, list[object]] = defaultdict(list)
    for event in events:
        _check_occurred_at(event, period_starts.get(event.user_id), now)
        cost, currency = event.cost, event.currency
        payer_currency = payer_currencies.get(event.user_id)
        if cost is not None and currency is None:
            # A sent amount without its currency is in the payer's (what the event is
            # invoiced in), else the model's price's, never USD by default alone.
            currency = payer_currency or (await prices.cost_for(
                session, event.model, event.tokens_input, event.tokens_output))[1]
        if cost is None:
            cost, priced_in = await prices.cost_for(session, event.model, event.tokens_input,
                                                    event.tokens_output)
            if currency is not None and currency != priced_in and cost:
                raise Unprocessable(
                    f"event {event.idempotency_key!r} says {currency} but its model is priced "
                    f"in {priced_in}: send its cost, or the price table's currency")
            currency = currency or priced_in
            # The cap a sent cost has: a bigger one would not fit the ledger's numeric
            # (an anonymous 400) or would make an invoice no amount can hold.
            if cost > MAX_EVENT_COST:
                raise Unprocessable(
                    f"event {event.idempotency_key!r} would cost {cost} {currency} by the "
                    f"price table: more than one event may cost ({MAX_EVENT_COST})", extra={"field": "cost",
                                                     "idempotency_key": event.idempotency_key})
        if cost and payer_currency is not None and currency != payer_currency:
            # Stored, it would block its payer's invoice for the whole period (an invoice
            # never mixes currencies, and the ledger is append-only).
            raise Unprocessable(
                f"event {event.idempotency_key!r} costs {cost} {currency} but its user's "
                f"subscription is billed in {payer_currency}: send its cost in "
                f"{payer_currency} (or price its model in {payer_currency})",
                extra={"field": "currency", "idempotency_key": event.idempotency_key})
        credits = event.credits if event.credits is not None else credits_for_tokens(
            settings, event.tokens_input + event.tokens_output, capped=False)
        # Credits from the tokens at a high rate: more than a ledger row holds would be
        # an anonymous 400 (int4 out of range) instead of naming the event.
        if credits > MAX_RECORD_CREDITS:
            raise Unprocessable(
                f"event {event.idempotency_key!r} would use {credits} credits by its tokens "
                f"(ROOST_LLM_CREDITS_PER_1K_TOKENS): more than one event may use "
                f"({MAX_RECORD_CREDITS}); send its credits",
                extra={"field": "credits", "idempotency_key": event.idempotency_key})
        columns["ids"].append(uuid7())
        columns["keys"].append(event.idempotency_key)
        columns["user_ids"].append(event.user_id)
        columns["types"].append(event.request_type)
        columns["models"].append(event.model)
        columns["tokens_in"].append(event.tokens_input)
        columns["tokens_out"].append(event.tokens_output)
        columns["credits"].append(credits)
        columns["costs"].append(Decimal(cost))
        columns["currencies"].append(currency or "USD")
        columns["latencies"].append(event.latency_ms)
        columns["successes"].append(event.success)
        columns["agent_ids"].append(event.agent_id)
        columns["subscription_ids"].append(payers.get(event.user_id))
        columns["created"].append(event.occurred_at or now)
    written = (await session.execute(_INSERT, dict(columns))).all()
    await _check_replays(session, events, {row.idempotency_key for row in written})
    per_subscription: dict[uuid.UUID, int] = defaultdict(int)
    for row in written:
        if row.subscription_id is not None and row.credits_used:
            per_subscription[row.subscription_id] += int(row.credits_used)
    if per_subscription:
        payers_in_order = sorted(per_subscription)
        await session.execute(_CHARGE, {
            "subscription_ids": payers_in_order,
            "credits": [per_subscription[p] for p in payers_in_order]})
    result = IngestResult(accepted=len(written), duplicates=len(events) - len(written),
                          credits_charged=sum(per_subscription.values()))
    await audit.record(session, "billing.usage.ingest", user_id=actor.user_id,
                       resource_type="usage_records",
                       metadata={"accepted": result.accepted, "duplicates": result.duplicates,
                                 "credits": result.credits_charged})
    return result
