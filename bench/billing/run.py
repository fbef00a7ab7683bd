"""Billing benchmark (issue 17): the usage ledger's ingest rate, credit reservation latency
under 64 concurrent requesters, and cost by user by day over 10M usage events in
PostgreSQL against chDB, in one script with three parts.

    .venv/bin/python bench/billing/run.py [--parts ingest reservations analytics]
        [--users 1000] [--ingest-events 100000] [--batches 1000 5000]
        [--requesters 64] [--ops 30] [--call-ms 1000] [--events 10000000] [--days 30]
        [--repeats 5]

One embedded PostgreSQL (temporary directory), one database per part, migrated to head.

* **ingest**: ``--users`` users, each with an active subscription; ``--ingest-events``
  fresh events per mode (``UsageEventIn``: four priced models, random tokens, cost from
  the price table, credits from the tokens), the table emptied between modes:
  ``roost.billing.ledger.ingest`` in one transaction per batch (scoped to the operator as
  a request is) for each of ``--batches``; a replay of an ingested batch (adds nothing);
  the same events through ``POST /api/v1/billing/usage-events`` (in-process ASGI client,
  the app's lifespan run, admin bearer token; bodies serialised before the clock starts);
  and what a naive ledger does: ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING``
  row by row through asyncpg ``executemany`` (one transaction per batch of 1,000; cost
  from a dict of rates; no credits charged, no audit record).
* **reservations**: ``--requesters`` coroutines, each with a pooled connection, each
  doing ``--ops`` times: a transaction scoped to its user (``apply_principal``, as
  ``LLMGateway.transaction`` does) that calls ``credits.reserve(..., 1, kind="llm")``
  and commits, then a second one that calls ``credits.settle`` with an actual of 0, 1 or
  2 credits.  Against one group subscription shared by all requesters (the hot row),
  against one subscription each, with one requester (no contention), with a limit that
  covers half the attempts (refusals counted), and a naive hot-row reservation (``SELECT
  ... FOR UPDATE``, check in Python, ``UPDATE``, ``INSERT``: the lock held across three
  round trips).  Back to back, 64 requesters measure the saturated system (latency =
  64 / throughput); with ``--call-ms`` (default 1000) each requester also waits a
  simulated model call between reserve and settle, so 64 calls are in flight and the
  reservation rate is what 64 concurrent calls produce; those two scenarios run again
  with the hold in one round trip of its own (``credits.reserve_alone``, what a warm
  metered tool call does: ``*_with_calls_alone``) and as a model call holds (the same
  statement on the side pool while the request's transaction is open:
  ``*_with_calls_model_hold``; ``reserve_call`` is the hold).  The counters are checked
  in SQL at the end of each scenario.
* **analytics**: ``--events`` usage events over ``--users`` users and ``--days`` days,
  generated in SQL (``generate_series``) into ``usage_records`` with every index of the
  migration, and the same rows (the same integer formulas) into a chDB ``MergeTree``
  (``INSERT ... SELECT FROM numbers(N)``); then cost by user by day (count, tokens,
  credits, cost grouped by user and UTC day over the range), fetched into Python, the
  median of ``--repeats`` runs each, and the two answers compared row by row.  Also
  Roost's own reports (``usage_report`` by day and by user) over the same table.

Results are appended to bench/results/billing.json (one entry per run and part).
"""

# ruff: noqa: E402 - sys.path is fixed before the imports

from __future__ import annotations

import os
import sys

# Run as a file, this folder would come first on sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(__file__)]
sys.path.insert(0, str(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))

import argparse
import asyncio
import base64
import json
import math
import platform
import random
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

RESULTS = Path(__file__).resolve().parents[1] / "results" / "billing.json"
# Four models the migration's default price table covers (per million tokens).
MODELS: dict[str, tuple[Decimal, Decimal]] = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "claude-3-5-haiku": (Decimal("0.80"), Decimal("4.00")),
    "claude-sonnet-4": (Decimal("3.00"), Decimal("15.00")),
}
START = datetime(2026, 11, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def summary(seconds: list[float]) -> dict[str, Any]:
    ms = [t * 1000 for t in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.50), 3),
            "p95_ms": round(percentile(ms, 0.95), 3), "p99_ms": round(percentile(ms, 0.99), 3),
            "max_ms": round(max(ms), 3), "mean_ms": round(statistics.fmean(ms), 3)}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_average": load()}


async def open_db(server: Any, name: str, settings: Any) -> Any:
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade

    ensure_database_exists(server, name)
    db = create_database(settings, url=to_async_url(server.libpq_url(name)))
    await upgrade(db.engine)
    return db


async def add_users(db: Any, count: int, prefix: str) -> list[uuid.UUID]:
    users = [uuid.uuid4() for _ in range(count)]
    async with db.transaction() as s:
        await s.execute(text(
            "INSERT INTO users (id, username, email, role, status, is_active) "
            "VALUES (:id, :name, :email, 'user', 'active', true)"),
            [{"id": u, "name": f"{prefix}{i}", "email": f"{prefix}{i}@example.test"}
             for i, u in enumerate(users)])
    return users


async def add_plan(db: Any, key: str, credits: int) -> uuid.UUID:
    plan_id = uuid.uuid4()
    async with db.transaction() as s:
        await s.execute(text(
            "INSERT INTO plans (id, key, name, price, included_credits) "
            "VALUES (:id, :key, :key, 9.00, :credits)"),
            {"id": plan_id, "key": key, "credits": credits})
    return plan_id


async def subscribe(db: Any, plan_id: uuid.UUID, credits_limit: int, *,
                    users: list[uuid.UUID] | None = None,
                    group: uuid.UUID | None = None) -> list[uuid.UUID]:
    owners = [(u, None) for u in users or []] + ([(None, group)] if group else [])
    ids = [uuid.uuid4() for _ in owners]
    async with db.transaction() as s:
        await s.execute(text(
            "INSERT INTO subscriptions (id, user_id, group_id, plan_id, status, "
            "current_period_start, current_period_end, credits_limit) VALUES "
            "(:id, :user_id, :group_id, :plan_id, 'active', now(), now() + interval '30 days', "
            ":limit)"),
            [{"id": i, "user_id": u, "group_id": g, "plan_id": plan_id, "limit": credits_limit}
             for i, (u, g) in zip(ids, owners, strict=True)])
    return ids


# --------------------------------------------------------------------------- ingest

def make_events(prefix: str, n: int, users: list[uuid.UUID], rng: random.Random) -> list[Any]:
    from roost.billing.usage_schemas import UsageEventIn

    names = list(MODELS)
    return [UsageEventIn(
        idempotency_key=f"{prefix}:{i}", user_id=rng.choice(users), request_type="client.llm",
        model=rng.choice(names), tokens_input=rng.randint(50, 4000),
        tokens_output=rng.randint(10, 800), latency_ms=rng.randint(100, 5000),
        success=rng.random() > 0.02) for i in range(n)]


def as_json(event: Any) -> dict[str, Any]:
    return {"idempotency_key": event.idempotency_key, "user_id": str(event.user_id),
            "request_type": event.request_type, "model": event.model,
            "tokens_input": event.tokens_input, "tokens_output": event.tokens_output,
            "latency_ms": event.latency_ms, "success": event.success}


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def ledger_state(db: Any) -> dict[str, Any]:
    async with db.transaction() as s:
        row = (await s.execute(text(
            "SELECT (SELECT count(*) FROM usage_records) AS events, "
            "(SELECT coalesce(sum(credits_used), 0) FROM usage_records "
            " WHERE subscription_id IS NOT NULL) AS ledger_credits, "
            "(SELECT coalesce(sum(cost), 0) FROM usage_records) AS cost, "
            "(SELECT coalesce(sum(credits_used), 0) FROM subscriptions) AS charged"))).one()
    return {"events": int(row.events), "ledger_credits": int(row.ledger_credits),
            "cost": str(row.cost), "charged": int(row.charged)}


async def empty_ledger(db: Any) -> None:
    async with db.transaction() as s:
        await s.execute(text("TRUNCATE usage_records"))
        await s.execute(text("UPDATE subscriptions SET credits_used = 0, credits_reserved = 0"))
    async with db.engine.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text("VACUUM ANALYZE usage_records"))


async def timed_batches(batches: list[Any], call: Callable[[Any], Awaitable[None]],
                        events: int) -> dict[str, Any]:
    per_batch: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        await call(batch)
        per_batch.append(time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    return {"events": events, "batches": len(batches), "seconds": round(wall, 3),
            "events_per_s": round(events / wall), "process_cpu_s":
            round(time.process_time() - cpu0, 3), "batch": summary(per_batch),
            "load_average": load()}


async def part_ingest(server: Any, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    import httpx
    from cryptography.fernet import Fernet

    from roost.app import create_app
    from roost.billing import ledger
    from roost.config import Settings
    from roost.identity.tenancy import apply_principal
    from roost.keyfiles import KeyMaterial
    from roost.principal import OPERATOR
    from roost.tasks.worker import asyncpg_dsn

    rng = random.Random(args.seed)
    settings = Settings(data_dir=tmp / "data", llm_local_model=False, log_level="warning",
                        llm_credits_per_1k_tokens=1.0)
    db = await open_db(server, "bench_billing_ingest", settings)
    results: dict[str, Any] = {"users": args.users, "events_per_mode": args.ingest_events}
    try:
        users = await add_users(db, args.users, "ing")
        plan = await add_plan(db, "bench-ingest", 10**12)
        await subscribe(db, plan, 10**12, users=users)

        async def roost_batch(batch: list[Any]) -> None:
            async with db.transaction() as s:
                await apply_principal(s, OPERATOR)
                await ledger.ingest(s, settings, OPERATOR, batch)

        # Warm-up (plans, the price table, the pool), then emptied.
        await roost_batch(make_events("warm", 1000, users, rng))
        modes: dict[str, Any] = {}
        for size in args.batches:
            await empty_ledger(db)
            name = f"roost_ledger_batch_{size}"
            events = make_events(f"roost{size}", args.ingest_events, users, rng)
            print(f"ingest: {name}", flush=True)
            modes[name] = await timed_batches(chunks(events, size), roost_batch, len(events))
            state = await ledger_state(db)
            modes[name]["state"] = state
            assert state["events"] == len(events), state
            assert state["charged"] == state["ledger_credits"], state
            # Replay the first batch: nothing added, nothing charged.
            replay = events[:size]
            t0 = time.perf_counter()
            async with db.transaction() as s:
                await apply_principal(s, OPERATOR)
                replayed = await ledger.ingest(s, settings, OPERATOR, replay)
            took = time.perf_counter() - t0
            after = await ledger_state(db)
            modes[name]["replay"] = {
                "events": len(replay), "accepted": replayed.accepted,
                "duplicates": replayed.duplicates, "credits_charged": replayed.credits_charged,
                "ms": round(took * 1000, 1), "state_unchanged": after == state}
            assert replayed.accepted == 0 and after == state, (replayed, after, state)

        # Through the HTTP API.
        keys = KeyMaterial(
            secret_key=secrets.token_urlsafe(48),
            message_keys=(Fernet.generate_key().decode(),),
            secrets_key=base64.b64decode(base64.b64encode(secrets.token_bytes(32))),
            admin_token="rst_admin_" + secrets.token_urlsafe(24))
        app = create_app(settings, database=db, keys=keys, configure_logs=True)
        admin = {"Authorization": f"Bearer {keys.admin_token}",
                 "Content-Type": "application/json"}
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50003))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=transport, base_url="http://roost.test", timeout=120) as client:
            warm = json.dumps({"events": [as_json(e) for e in make_events(
                "httpwarm", 1000, users, rng)]}).encode()
            assert (await client.post("/api/v1/billing/usage-events", headers=admin,
                                      content=warm)).status_code == 200
            for size in args.batches:
                await empty_ledger(db)
                name = f"http_batch_{size}"
                events = make_events(f"http{size}", args.ingest_events, users, rng)
                bodies = [json.dumps({"events": [as_json(e) for e in b]}).encode()
                          for b in chunks(events, size)]
                answers: list[dict[str, Any]] = []

                async def post(body: bytes, answers: list[dict[str, Any]] = answers) -> None:
                    resp = await client.post("/api/v1/billing/usage-events", headers=admin,
                                             content=body)
                    assert resp.status_code == 200, resp.text[:500]
                    answers.append(resp.json())

                print(f"ingest: {name}", flush=True)
                modes[name] = await timed_batches(bodies, post, len(events))
                state = await ledger_state(db)
                modes[name]["state"] = state
                assert state["events"] == len(events) == sum(a["accepted"] for a in answers)
                resp = await client.post("/api/v1/billing/usage-events", headers=admin,
                                         content=bodies[0])
                modes[name]["replay"] = resp.json()
                assert resp.json()["accepted"] == 0 and await ledger_state(db) == state

        # The naive ledger: INSERT ... ON CONFLICT DO NOTHING, row by row (executemany).
        await empty_ledger(db)
        naive_sql = (
            "INSERT INTO usage_records (id, idempotency_key, user_id, request_type, model, "
            "tokens_input, tokens_output, credits_used, cost, currency, latency_ms, success, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'USD', $10, $11, now()) "
            "ON CONFLICT (idempotency_key) DO NOTHING")
        conn = await asyncpg.connect(asyncpg_dsn(db))
        try:
            from roost.db.base import uuid7

            async def naive_batch(batch: list[Any]) -> None:
                rows = []
                for e in batch:
                    rate_in, rate_out = MODELS[e.model]
                    cost = ((e.tokens_input * rate_in + e.tokens_output * rate_out)
                            / 1_000_000).quantize(Decimal("0.000001"))
                    rows.append((uuid7(), e.idempotency_key, e.user_id, e.request_type,
                                 e.model, e.tokens_input, e.tokens_output,
                                 math.ceil((e.tokens_input + e.tokens_output) / 1000), cost,
                                 e.latency_ms, e.success))
                async with conn.transaction():
                    await conn.executemany(naive_sql, rows)

            events = make_events("naive", args.ingest_events, users, rng)
            print("ingest: naive executemany, batches of 1000", flush=True)
            modes["naive_executemany_batch_1000"] = await timed_batches(
                chunks(events, 1000), naive_batch, len(events))
            count = await conn.fetchval("SELECT count(*) FROM usage_records")
            await naive_batch(events[:1000])
            assert await conn.fetchval("SELECT count(*) FROM usage_records") == count
            modes["naive_executemany_batch_1000"]["replay_added"] = 0
        finally:
            await conn.close()
        results["modes"] = modes
    finally:
        await db.dispose()
    return results


# --------------------------------------------------------------------------- reservations


async def part_reservations(server: Any, tmp: Path, args: argparse.Namespace
                            ) -> dict[str, Any]:
    from roost.billing import credits
    from roost.config import Settings
    from roost.errors import PaymentRequired
    from roost.identity.tenancy import apply_principal, scope_settings
    from roost.principal import Principal
    from roost.process import freeze_startup_heap

    n = args.requesters
    settings = Settings(data_dir=tmp / "data", llm_local_model=False, log_level="warning",
                        db_pool_size=n + 4, db_max_overflow=8)
    db = await open_db(server, "bench_billing_reservations", settings)
    scenarios: dict[str, Any] = {}
    try:
        plan = await add_plan(db, "bench-res", 10**9)
        # What `roost serve` does once started (roost.process): a full collection no longer
        # walks the start-up heap (modules, the ORM's and pydantic's schemas) in the middle
        # of a timed transaction.
        freeze_startup_heap()

        async def new_group(users: list[uuid.UUID]) -> uuid.UUID:
            group = uuid.uuid4()
            async with db.transaction() as s:
                await s.execute(text("INSERT INTO groups (id, name) VALUES (:id, :name)"),
                                {"id": group, "name": f"team-{group.hex[:8]}"})
                await s.execute(text(
                    "INSERT INTO user_group_memberships (id, user_id, group_id, role, "
                    "joined_at) VALUES (:id, :u, :g, 'member', now())"),
                    [{"id": uuid.uuid4(), "u": u, "g": group} for u in users])
            return group

        async def run(name: str, principals: list[Principal], subscriptions: list[uuid.UUID],
                      ops: int, *, naive: bool = False,
                      actuals: tuple[int, ...] = (0, 1, 2), sync_off: bool = False,
                      call_s: float = 0.0, alone: str | None = None) -> dict[str, Any]:
            rng = random.Random(args.seed)
            reserve_txn: list[float] = []
            reserve_call: list[float] = []
            settle_txn: list[float] = []
            total: list[float] = []
            settled = 0
            refused = 0
            go = asyncio.Event()

            async def naive_reserve(s: Any, sub: uuid.UUID, who: Principal) -> Any:
                row = (await s.execute(text(
                    "SELECT credits_limit - credits_used - credits_reserved AS balance "
                    "FROM subscriptions WHERE id = :id FOR UPDATE"), {"id": sub})).one()
                if row.balance < 1:
                    raise PaymentRequired("not enough credits")
                await s.execute(text("UPDATE subscriptions SET credits_reserved = "
                                     "credits_reserved + 1 WHERE id = :id"), {"id": sub})
                rid = uuid.uuid4()
                await s.execute(text(
                    "INSERT INTO credit_reservations (id, subscription_id, user_id, kind, amount, "
                    "status, expires_at, created_at) VALUES (:id, :sub, :u, 'llm', 1, 'held', "
                    "now() + interval '10 minutes', now())"),
                    {"id": rid, "sub": sub, "u": who.user_id})
                return credits.Reservation(id=rid, subscription_id=sub, amount=1, kind="llm",
                                           user_id=who.user_id)

            async def one(who: Principal, sub: uuid.UUID, keep: bool) -> None:
                nonlocal settled, refused
                actual = rng.choice(actuals)
                t0 = time.perf_counter()
                try:
                    if alone == "tool":  # the hold in one round trip, nothing else open
                        c0 = t0
                        reservation = await credits.reserve_alone(
                            db, settings, scope_settings(who), who.user_id, 1, kind="tool")
                        c1 = time.perf_counter()
                    elif alone == "model":  # as llm.calls.add_request: the request's
                        # transaction open, the hold alone on the side pool within it
                        async with db.transaction() as s:
                            await apply_principal(s, who)
                            c0 = time.perf_counter()
                            reservation = await credits.reserve_alone(
                                db, settings, scope_settings(who), who.user_id, 1,
                                kind="llm", side=True)
                            c1 = time.perf_counter()
                    else:
                        async with db.transaction() as s:
                            await apply_principal(s, who)
                            if sync_off:
                                await s.execute(text("SET LOCAL synchronous_commit = off"))
                            c0 = time.perf_counter()
                            if naive:
                                reservation = await naive_reserve(s, sub, who)
                            else:
                                reservation = await credits.reserve(s, settings, who.user_id,
                                                                    1, kind="llm")
                            c1 = time.perf_counter()
                except PaymentRequired:
                    refused += keep
                    return
                t1 = time.perf_counter()
                assert reservation is not None
                if call_s:  # the model call the credits were held for
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * call_s)
                t1b = time.perf_counter()
                async with db.transaction() as s:
                    await apply_principal(s, who)
                    if sync_off:
                        await s.execute(text("SET LOCAL synchronous_commit = off"))
                    await credits.settle(s, reservation, actual)
                t2 = time.perf_counter()
                settled += actual
                if keep:
                    reserve_txn.append(t1 - t0)
                    reserve_call.append(c1 - c0)
                    settle_txn.append(t2 - t1b)
                    total.append(t1 - t0 + t2 - t1b)

            async def requester(i: int) -> None:
                who, sub = principals[i], subscriptions[i % len(subscriptions)]
                await one(who, sub, keep=False)  # warm-up: a connection of the pool each
                await go.wait()
                if call_s:  # spread the starts over one call's length
                    await asyncio.sleep(rng.uniform(0, call_s))
                for _ in range(ops):
                    await one(who, sub, keep=True)

            before = await counters(subscriptions)
            tasks = [asyncio.create_task(requester(i)) for i in range(len(principals))]
            await asyncio.sleep(0.5)
            cpu0, wall0, load0 = time.process_time(), time.perf_counter(), load()
            go.set()
            await asyncio.gather(*tasks)
            wall = time.perf_counter() - wall0
            after = await counters(subscriptions)
            attempts = ops * len(principals)
            result: dict[str, Any] = {
                "requesters": len(principals), "subscriptions": len(subscriptions),
                "attempts": attempts, "reserved": len(reserve_txn), "refused": refused,
                "seconds": round(wall, 3),
                "reservations_per_s": round(len(reserve_txn) / wall),
                "process_cpu_s": round(time.process_time() - cpu0, 3),
                "reserve_transaction": summary(reserve_txn) if reserve_txn else None,
                "reserve_call": summary(reserve_call) if reserve_call else None,
                "settle_transaction": summary(settle_txn) if settle_txn else None,
                "reserve_plus_settle": summary(total) if total else None,
                "check": {**after, "settled_sum_client": settled + before["credits_used"]},
                "load_average": [load0, load()],
            }
            ok = (after["credits_reserved"] == 0 and after["held"] == 0
                  and after["credits_used"] == after["settled_sum_sql"]
                  == settled + before["credits_used"]
                  and after["credits_used"] <= after["credits_limit"])
            result["check"]["ok"] = ok
            print(f"reservations: {name}: {json.dumps(result['reserve_transaction'])} "
                  f"refused={refused} ok={ok}", flush=True)
            assert ok, result
            return result

        async def counters(subscriptions: list[uuid.UUID]) -> dict[str, int]:
            async with db.transaction() as s:
                row = (await s.execute(text(
                    "SELECT sum(credits_used) AS used, sum(credits_reserved) AS reserved, "
                    "sum(credits_limit) AS lim, "
                    "(SELECT coalesce(sum(actual), 0) FROM credit_reservations "
                    " WHERE subscription_id = ANY(:ids) AND status = 'settled') AS settled, "
                    "(SELECT count(*) FROM credit_reservations "
                    " WHERE subscription_id = ANY(:ids) AND status = 'held') AS held "
                    "FROM subscriptions WHERE id = ANY(:ids)"), {"ids": subscriptions})).one()
            return {"credits_used": int(row.used), "credits_reserved": int(row.reserved),
                    "credits_limit": int(row.lim), "settled_sum_sql": int(row.settled),
                    "held": int(row.held)}

        def principal(user: uuid.UUID, group: uuid.UUID | None = None) -> Principal:
            return Principal(user_id=user, is_admin=False, kind="api_key",
                             group_ids=frozenset([group]) if group else frozenset())

        # One requester, its own subscription: the uncontended latency.
        solo = await add_users(db, 1, "solo")
        solo_sub = await subscribe(db, plan, 10**9, users=solo)
        scenarios["one_requester"] = await run("one_requester", [principal(solo[0])],
                                               solo_sub, args.ops * 10)
        # 64 requesters, one subscription each.
        own = await add_users(db, n, "own")
        own_subs = await subscribe(db, plan, 10**9, users=own)
        scenarios["separate_subscriptions"] = await run(
            "separate_subscriptions", [principal(u) for u in own], own_subs, args.ops)
        # 64 requesters, members of one group, its one subscription (the hot row).
        team = await add_users(db, n, "team")
        group = await new_group(team)
        hot = await subscribe(db, plan, 10**9, group=group)
        scenarios["one_shared_subscription"] = await run(
            "one_shared_subscription", [principal(u, group) for u in team], hot, args.ops)
        # The same two without waiting for the WAL flush at commit (what the disk costs).
        scenarios["separate_subscriptions_sync_commit_off"] = await run(
            "separate_subscriptions_sync_commit_off", [principal(u) for u in own], own_subs,
            args.ops, sync_off=True)
        scenarios["one_shared_subscription_sync_commit_off"] = await run(
            "one_shared_subscription_sync_commit_off", [principal(u, group) for u in team], hot,
            args.ops, sync_off=True)
        # 64 calls in flight: each requester holds its credits over a model call of
        # --call-ms (0.5-1.5x, uniformly) before settling, as a chat reply does.
        if args.call_ms:
            call_s = args.call_ms / 1000
            ops = max(args.ops // 2, 5)
            scenarios["separate_subscriptions_with_calls"] = await run(
                "separate_subscriptions_with_calls", [principal(u) for u in own], own_subs,
                ops, call_s=call_s)
            scenarios["one_shared_subscription_with_calls"] = await run(
                "one_shared_subscription_with_calls", [principal(u, group) for u in team], hot,
                ops, call_s=call_s)
            # The same two with the hold in one round trip (credits.reserve_alone: what a
            # warm metered tool call does), the payer's row locked for one statement.
            scenarios["separate_subscriptions_with_calls_alone"] = await run(
                "separate_subscriptions_with_calls_alone", [principal(u) for u in own],
                own_subs, ops, call_s=call_s, alone="tool")
            scenarios["one_shared_subscription_with_calls_alone"] = await run(
                "one_shared_subscription_with_calls_alone", [principal(u, group) for u in team],
                hot, ops, call_s=call_s, alone="tool")
            # And as a model call holds: alone, on the side pool, while the request's
            # transaction is open (roost.llm.calls.add_request).
            scenarios["separate_subscriptions_with_calls_model_hold"] = await run(
                "separate_subscriptions_with_calls_model_hold", [principal(u) for u in own],
                own_subs, ops, call_s=call_s, alone="model")
            scenarios["one_shared_subscription_with_calls_model_hold"] = await run(
                "one_shared_subscription_with_calls_model_hold",
                [principal(u, group) for u in team], hot, ops, call_s=call_s, alone="model")
        # The same hot row, the naive way: SELECT ... FOR UPDATE, check, UPDATE, INSERT.
        team2 = await add_users(db, n, "naive")
        group2 = await new_group(team2)
        hot2 = await subscribe(db, plan, 10**9, group=group2)
        scenarios["naive_select_for_update_shared"] = await run(
            "naive_select_for_update_shared", [principal(u, group2) for u in team2], hot2,
            args.ops, naive=True)
        # A limit that covers about half the attempts: refusals, never past the limit.
        team3 = await add_users(db, n, "limit")
        group3 = await new_group(team3)
        limit = n * args.ops // 2
        capped = await subscribe(db, plan, limit, group=group3)
        # (Settled at the estimate: an actual above it may pass the limit by design.)
        capped_run = await run("shared_limit_half", [principal(u, group3) for u in team3],
                               capped, args.ops, actuals=(1,))
        capped_run["credits_limit"] = limit
        assert capped_run["check"]["credits_used"] == limit, capped_run
        scenarios["shared_limit_half"] = capped_run
    finally:
        await db.dispose()
    return {"requesters": n, "ops_per_requester": args.ops, "scenarios": scenarios}


# --------------------------------------------------------------------------- analytics

# The same rows in both stores: event i (0..N-1) belongs to user (i * 2654435761 mod 2^32)
# mod U, happens at START + floor(i * days * 86400 / N) seconds, calls model
# (i * 40503 mod 65536) mod 4, and its token counts, credits, latency, success and cost
# (integer micro-dollars from rates in thousandths of a dollar per million) follow from i.
WORK_MEM = "256MB"
RATES_MILLI = [(150, 600), (2500, 10000), (800, 4000), (3000, 15000)]


def pg_generate_sql() -> str:
    names = ", ".join(f"'{m}'" for m in MODELS)
    rin = ", ".join(str(r[0]) for r in RATES_MILLI)
    rout = ", ".join(str(r[1]) for r in RATES_MILLI)
    return f"""
INSERT INTO usage_records (id, idempotency_key, user_id, request_type, model, tokens_input,
  tokens_output, credits_used, cost, currency, latency_ms, success, created_at)
SELECT id, 'llm:' || id::text, md5('bench-user-' || (i * 2654435761 % 4294967296 % :users))::uuid,
  'llm', (ARRAY[{names}])[m + 1], tin, tout, (tin + tout + 999) / 1000,
  (((tin * (ARRAY[{rin}])[m + 1] + tout * (ARRAY[{rout}])[m + 1]) / 1000)::numeric
   / 1000000)::numeric(18, 6),
  'USD', 100 + (i * 31 % 5000)::int, i % 53 <> 0,
  timestamptz '2026-11-01 00:00:00+00' + (i * :span / :n) * interval '1 second'
FROM (SELECT i, uuidv7() AS id, (i * 40503 % 65536 % 4)::int AS m,
             (50 + i * 7907 % 4000)::int AS tin, (10 + i * 104729 % 800)::int AS tout
      FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i) g
"""


CH_TABLE = """
CREATE TABLE usage_records (
    id UUID, idempotency_key String, user_id UUID, request_type LowCardinality(String),
    model LowCardinality(String), tokens_input UInt32, tokens_output UInt32,
    credits_used UInt32, cost Decimal(18, 6), currency LowCardinality(String),
    latency_ms UInt32, success Bool, created_at DateTime64(6, 'UTC')
) ENGINE = MergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (toDate(created_at), user_id)
"""


def ch_generate_sql(n: int, users: int, span: int) -> str:
    names = ", ".join(f"'{m}'" for m in MODELS)
    rin = ", ".join(str(r[0]) for r in RATES_MILLI)
    rout = ", ".join(str(r[1]) for r in RATES_MILLI)
    h = f"lower(hex(MD5(concat('bench-user-', toString(number * 2654435761 % 4294967296 % {users})))))"
    uid = (f"toUUID(concat(substring({h}, 1, 8), '-', substring({h}, 9, 4), '-', "
           f"substring({h}, 13, 4), '-', substring({h}, 17, 4), '-', substring({h}, 21, 12)))")
    return f"""
INSERT INTO usage_records
SELECT id, concat('llm:', toString(id)), {uid}, 'llm', [{names}][m + 1], tin, tout,
  intDiv(tin + tout + 999, 1000),
  toDecimal64(intDiv(tin * [{rin}][m + 1] + tout * [{rout}][m + 1], 1000), 6) / 1000000,
  'USD', 100 + number * 31 % 5000, number % 53 != 0,
  toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + toIntervalSecond(intDiv(number * {span}, {n}))
FROM (SELECT number, generateUUIDv7(number) AS id, toUInt32(number * 40503 % 65536 % 4) AS m,
             toUInt64(50 + number * 7907 % 4000) AS tin, toUInt64(10 + number * 104729 % 800) AS tout
      FROM numbers({n}))
"""


PG_QUERY = text("""
SELECT user_id, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS requests,
       sum(tokens_input) AS tokens_input, sum(tokens_output) AS tokens_output,
       sum(credits_used) AS credits, sum(cost) AS cost
FROM usage_records WHERE created_at >= :since AND created_at < :until
GROUP BY user_id, day ORDER BY user_id, day
""")

CH_QUERY = """
SELECT toString(user_id) AS user_id, toString(toDate(created_at)) AS day, count() AS requests,
       sum(tokens_input) AS tokens_input, sum(tokens_output) AS tokens_output,
       sum(credits_used) AS credits, sum(cost) AS cost
FROM usage_records
WHERE created_at >= toDateTime64('{since}', 6, 'UTC') AND created_at < toDateTime64('{until}', 6, 'UTC')
GROUP BY user_id, day ORDER BY user_id, day
"""


def median_of(times: list[float]) -> dict[str, Any]:
    return {"median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times]}


async def part_analytics(server: Any, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    import chdb.session as chs

    from roost.billing.usage import usage_report
    from roost.config import Settings
    from roost.principal import OPERATOR

    n, users, span = args.events, args.users, args.days * 86400
    since, until = START, START + timedelta(days=args.days)
    settings = Settings(data_dir=tmp / "data", llm_local_model=False, log_level="warning",
                        db_statement_timeout_ms=0)  # a 1M-row step takes minutes here
    db = await open_db(server, "bench_billing_analytics", settings)
    out: dict[str, Any] = {"events": n, "users": users, "days": args.days}
    try:
        async with db.transaction() as s:
            await s.execute(text(
                "INSERT INTO users (id, username, email, role, status, is_active) "
                "SELECT md5('bench-user-' || k)::uuid, 'an' || k, 'an' || k || '@example.test', "
                "'user', 'active', true FROM generate_series(0, :u - 1) k"), {"u": users})
            out["postgres_version"] = (await s.execute(text("SHOW server_version"))).scalar()
        # A bulk-load setting (fewer checkpoints while ~10 GB of WAL is written); the
        # rest of the server's configuration is the embedded server's default.
        async with db.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text("ALTER SYSTEM SET max_wal_size = '4GB'"))
            await auto.execute(text("SELECT pg_reload_conf()"))
        # PostgreSQL: in steps of 1M rows (one transaction each), every index in place.
        print(f"analytics: loading {n:,} rows into PostgreSQL", flush=True)
        step = 1_000_000
        load0, t0 = load(), time.perf_counter()
        for lo in range(0, n, step):
            hi = min(n, lo + step) - 1
            async with db.transaction() as s:
                await s.execute(text(pg_generate_sql()),
                                {"users": users, "span": span, "n": n, "lo": lo, "hi": hi})
            print(f"  {hi + 1:,} rows, {time.perf_counter() - t0:.0f} s", flush=True)
        insert_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        async with db.engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
                text("VACUUM ANALYZE usage_records"))
        vacuum_s = time.perf_counter() - t1
        async with db.transaction() as s:
            size = (await s.execute(text(
                "SELECT pg_total_relation_size('usage_records'), "
                "pg_relation_size('usage_records')"))).one()
        out["postgres_load"] = {"insert_s": round(insert_s, 1),
                                "vacuum_analyze_s": round(vacuum_s, 1),
                                "total_bytes": int(size[0]), "heap_bytes": int(size[1]),
                                "load_average": [load0, load()]}
        print(f"analytics: PostgreSQL loaded: {out['postgres_load']}", flush=True)

        # chDB: the same rows.
        chdir = tmp / "chdb"
        sess: Any = chs.Session(str(chdir))  # type: ignore[no-untyped-call]
        try:
            sess.query("CREATE DATABASE IF NOT EXISTS bench")
            sess.query("USE bench")
            sess.query(CH_TABLE)
            load0, t0 = load(), time.perf_counter()
            sess.query(ch_generate_sql(n, users, span))
            ch_insert = time.perf_counter() - t0
            ch_bytes = json.loads(str(sess.query(
                "SELECT sum(bytes_on_disk) AS b, sum(rows) AS r FROM system.parts "
                "WHERE database = 'bench' AND table = 'usage_records' AND active",
                "JSONEachRow")))
            out["chdb_load"] = {"insert_s": round(ch_insert, 1), "bytes_on_disk": int(ch_bytes["b"]),
                                "rows": int(ch_bytes["r"]), "load_average": [load0, load()]}
            print(f"analytics: chDB loaded: {out['chdb_load']}", flush=True)

            # The query, alternately, --repeats times each (first run of each not kept: warm).
            pg_times: list[float] = []
            pg_mem_times: list[float] = []
            ch_times: list[float] = []
            pg_rows: dict[tuple[str, str], tuple[int, int, int, int, Decimal]] = {}
            ch_rows: dict[tuple[str, str], tuple[int, int, int, int, Decimal]] = {}
            ch_sql = CH_QUERY.format(since=since.strftime("%Y-%m-%d %H:%M:%S"),
                                     until=until.strftime("%Y-%m-%d %H:%M:%S"))
            load0 = load()
            for r in range(args.repeats + 1):
                t0 = time.perf_counter()
                async with db.transaction() as s:
                    found = (await s.execute(PG_QUERY, {"since": since, "until": until})).all()
                took = time.perf_counter() - t0
                pg_rows = {(str(f.user_id), f.day.isoformat()): (
                    int(f.requests), int(f.tokens_input), int(f.tokens_output), int(f.credits),
                    Decimal(f.cost)) for f in found}
                if r:
                    pg_times.append(took)
                t0 = time.perf_counter()
                async with db.transaction() as s:
                    await s.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
                    again = (await s.execute(PG_QUERY, {"since": since, "until": until})).all()
                if r:
                    pg_mem_times.append(time.perf_counter() - t0)
                assert len(again) == len(found)
                t0 = time.perf_counter()
                res = sess.query(ch_sql, "JSONCompact")
                rows = json.loads(str(res), parse_float=Decimal)["data"]
                took = time.perf_counter() - t0
                ch_rows = {(row[0], row[1]): (int(row[2]), int(row[3]), int(row[4]),
                                             int(row[5]), Decimal(str(row[6])))
                           for row in rows}
                if r:
                    ch_times.append(took)
                if r:
                    print(f"  round {r}: postgres {pg_times[-1]:.3f} s, work_mem "
                          f"{pg_mem_times[-1]:.3f} s, chdb {ch_times[-1]:.3f} s", flush=True)
            mismatched = sum(1 for k in pg_rows.keys() | ch_rows.keys()
                             if pg_rows.get(k) != ch_rows.get(k))
            out["query"] = {
                "groups": len(pg_rows), "mismatched_groups": mismatched,
                "total_cost": str(sum((v[4] for v in pg_rows.values()), Decimal(0))),
                "total_requests": sum(v[0] for v in pg_rows.values()),
                "postgres": median_of(pg_times),
                f"postgres_work_mem_{WORK_MEM}": median_of(pg_mem_times),
                "chdb": median_of(ch_times),
                "load_average": [load0, load()]}
            async with db.transaction() as s:
                plan = (await s.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + str(PG_QUERY)),
                                        {"since": since, "until": until})).scalars().all()
            out["postgres_plan"] = "\n".join(plan)
            async with db.transaction() as s:
                await s.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
                plan = (await s.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + str(PG_QUERY)),
                                        {"since": since, "until": until})).scalars().all()
            out[f"postgres_plan_work_mem_{WORK_MEM}"] = "\n".join(plan)
            # Roost's own reports over the same table (one group key each).
            reports: dict[str, Any] = {}
            for group_by in ("day", "user"):
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    async with db.transaction() as s:
                        rep = await usage_report(s, OPERATOR, group_by=group_by,  # type: ignore[arg-type]
                                                 since=since.isoformat(),
                                                 until=until.isoformat())
                    times.append(time.perf_counter() - t0)
                reports[group_by] = {**median_of(times), "rows": len(rep.rows),
                                     "cost": str(rep.totals()["cost"])}
            out["roost_usage_report"] = reports
        finally:
            sess.close()
    finally:
        await db.dispose()
    return out


# --------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from roost.db.embedded import start_embedded

    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "args": {k: v for k, v in vars(args).items() if k != "out"},
                              "machine": machine(), "parts": {}}
    parts = {"ingest": part_ingest, "reservations": part_reservations,
             "analytics": part_analytics}
    with tempfile.TemporaryDirectory(prefix="roost-bench-billing-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        try:
            for name in args.parts:
                t0 = time.perf_counter()
                report["parts"][name] = await parts[name](server, tmp, args)
                report["parts"][name]["part_seconds"] = round(time.perf_counter() - t0, 1)
        finally:
            server.stop()
    report["machine"]["load_average_end"] = load()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["ingest", "reservations", "analytics"],
                        choices=["ingest", "reservations", "analytics"])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--ingest-events", type=int, default=100_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--requesters", type=int, default=64)
    parser.add_argument("--ops", type=int, default=30)
    parser.add_argument("--call-ms", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result, indent=2, default=str)[:6000])
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = existing.get("runs", []) if isinstance(existing.get("runs"), list) else []
    runs.append(result)
    args.out.write_text(json.dumps({"runs": runs[-50:]}, indent=2, default=str) + "\n")
