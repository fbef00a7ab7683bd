"""Credits gate model calls: reserved before the call, settled after, never past the limit
under concurrency; a refused call is a 402 and reaches no provider."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.billing import credits
from roost.config import Settings
from roost.db.engine import Database, create_database
from roost.errors import PaymentRequired
from roost.identity.tenancy import apply_principal, scope_settings
from roost.keyfiles import KeyMaterial
from roost.llm import calls
from roost.llm.gateway import LLMGateway
from roost.llm.routing import resolve_route
from roost.llm.types import ChatMessage as LLMMessage
from roost.llm.types import ChatRequest
from roost.principal import Principal
from tests.prompts.conftest import make_group
from tests.support.identity import make_user
from tests.support.listening import statements as sent_statements
from tests.support.openai_stub import Fail, StubServer

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=5, llm_local_model=False,
                    llm_credits_per_1k_tokens=1.0)


async def _setup(client: httpx.AsyncClient, admin: Headers, stub: StubServer, user_id: uuid.UUID,
                 credits_: int, **plan: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/llm/providers", headers=admin, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
    assert resp.status_code == 201, resp.text
    key = f"p{uuid.uuid4().hex[:8]}"
    resp = await client.post("/api/v1/billing/plans", headers=admin, json={
        "key": key, "name": "Small", "price": "9.00", "included_credits": credits_, **plan})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/api/v1/billing/subscriptions", headers=admin,
                             json={"user_id": str(user_id), "plan": key})
    assert resp.status_code == 201, resp.text
    sub: dict[str, Any] = resp.json()
    return sub


async def _chat(client: httpx.AsyncClient, headers: Headers, content: str = "hi",
                model: str = "stub-model") -> httpx.Response:
    # max_tokens 500 and a two-character prompt: an estimate of one credit per call.
    return await client.post("/v1/chat/completions", headers=headers, json={
        "model": model, "max_tokens": 500, "messages": [{"role": "user", "content": content}]})


async def _counters(database: Database, subscription_id: str) -> Any:
    async with database.transaction() as s:
        return (await s.execute(text(
            "SELECT credits_used, credits_reserved, credits_limit, "
            "(SELECT count(*) FROM credit_reservations r WHERE r.subscription_id = s.id "
            " AND r.status = 'held') AS held, "
            "(SELECT count(*) FROM usage_records u WHERE u.subscription_id = s.id "
            " AND u.success) AS billed, "
            "(SELECT count(*) FROM llm_requests) AS requests "
            "FROM subscriptions s WHERE s.id = :id"), {"id": subscription_id})).one()


async def test_64_concurrent_calls_against_a_balance_of_10_let_exactly_10_through(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 10)

    answers = await asyncio.gather(*(_chat(client, headers, f"q{i % 10}") for i in range(64)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(402) == 54, statuses
    refused = next(a for a in answers if a.status_code == 402)
    assert "not enough credits" in refused.text

    row = await _counters(database, sub["id"])
    assert (row.credits_used, row.credits_reserved, row.held) == (10, 0, 0)
    assert row.billed == 10
    assert row.requests == 10  # a refused call stored no request and called no provider
    assert len(stub.requests(path="/v1/chat/completions")) == 10

    balance = await client.get("/api/v1/billing/subscription", headers=headers)
    assert balance.status_code == 200 and balance.json()["balance"] == 0


async def test_a_failed_call_gives_its_hold_back_and_costs_nothing(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 3)
    stub.script(Fail(status=500))
    failed = await _chat(client, headers)
    assert failed.status_code >= 500
    row = await _counters(database, sub["id"])
    assert (row.credits_used, row.credits_reserved, row.held) == (0, 0, 0)
    ok = await _chat(client, headers)
    assert ok.status_code == 200, ok.text
    row = await _counters(database, sub["id"])
    assert (row.credits_used, row.credits_reserved) == (1, 0)


async def test_plan_limits_models_and_paused_subscriptions(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 100,
                       limits={"models_allowed": ["gpt-4o*"]})
    refused = await _chat(client, headers)
    assert refused.status_code == 403
    assert "models_allowed" in refused.text or "does not include the model" in refused.text

    paused = await client.post(f"/api/v1/billing/subscriptions/{sub['id']}/pause",
                               headers=admin_headers, json={})
    assert paused.status_code == 200, paused.text
    answer = await _chat(client, headers)
    assert answer.status_code == 402 and "paused" in answer.text
    row = await _counters(database, sub["id"])
    # The 403 was decided after the payer was found and the hold taken in one statement:
    # the hold was given back before the error was raised.
    assert (row.credits_used, row.credits_reserved, row.held, row.requests) == (0, 0, 0, 0)


async def test_users_without_a_subscription_are_unmetered_unless_required(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    _, headers = await make_user(database)
    await client.post("/api/v1/llm/providers", headers=admin_headers, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
    assert (await _chat(client, headers)).status_code == 200
    resp = await client.put("/api/v1/admin/settings/billing_require_subscription",
                            headers=admin_headers, json={"value": True})
    assert resp.status_code == 200, resp.text
    refused = await _chat(client, headers)
    assert refused.status_code == 402 and "no subscription" in refused.text


async def test_a_dead_holders_credits_come_back_with_the_sweeper(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_settings: Settings,
) -> None:
    user_id, _ = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 5)
    async with database.transaction() as s:
        hold = await credits.reserve(s, test_settings, user_id, 4, kind="llm")
    assert hold is not None
    async with database.transaction() as s:
        with pytest.raises(Exception, match="not enough credits"):
            await credits.reserve(s, test_settings, user_id, 2, kind="llm")
    async with database.transaction() as s:
        assert await credits.release_expired(s) == 0  # not expired yet
        await s.execute(text("UPDATE credit_reservations SET expires_at = now() - interval '1s'"))
    async with database.transaction() as s:
        assert await credits.release_expired(s) == 4
    row = await _counters(database, sub["id"])
    assert (row.credits_used, row.credits_reserved) == (0, 0)
    # The holder comes back late: its call is still billed, once.
    async with database.transaction() as s:
        await credits.settle(s, hold, 3)
        await credits.settle(s, hold, 3)
    row = await _counters(database, sub["id"])
    assert (row.credits_used, row.credits_reserved) == (3, 0)


async def test_a_new_subscription_meters_the_next_calls(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """The process caches "nobody is metered" while it listens; subscribing anyone
    NOTIFYs every process, so the cached answer goes at once."""
    user_id, headers = await make_user(database)
    await client.post("/api/v1/llm/providers", headers=admin_headers, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
    assert (await _chat(client, headers)).status_code == 200  # unmetered (and cached so)
    resp = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": "nothing", "name": "Nothing", "price": "0", "included_credits": 0})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                             json={"user_id": str(user_id), "plan": "nothing"})
    assert resp.status_code == 201, resp.text
    statuses = []
    for _ in range(20):  # the notification is asynchronous: a few milliseconds
        statuses.append((await _chat(client, headers)).status_code)
        if statuses[-1] == 402:
            break
        await asyncio.sleep(0.1)
    assert statuses[-1] == 402, statuses


async def test_a_hold_without_a_known_payer_finds_it_and_holds_in_one_statement(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_settings: Settings,
) -> None:
    """``reserve`` without a payer (tool calls) finds the subscription and holds in one
    statement; each refusal it reads from that statement's answer holds nothing."""
    user_id, _ = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 5)
    async with sent_statements(database) as sent:
        async with database.transaction() as s:
            hold = await credits.reserve(s, test_settings, user_id, 3, kind="tool")
    assert hold is not None and str(hold.subscription_id) == sub["id"] and hold.amount == 3
    billing = [statement for statement in sent if "subscriptions" in statement]
    assert len(billing) == 1 and "credit_reservations" in billing[0], sent
    async with database.transaction() as s:  # 3 of 5 held: 3 more is refused
        with pytest.raises(PaymentRequired, match="needs 3 and the balance is 2") as refused:
            await credits.reserve(s, test_settings, user_id, 3, kind="tool")
    assert refused.value.extra["balance"] == 2
    row = await _counters(database, sub["id"])
    assert (row.credits_reserved, row.held) == (3, 1)

    paused = await client.post(f"/api/v1/billing/subscriptions/{sub['id']}/pause",
                               headers=admin_headers)
    assert paused.status_code == 200, paused.text
    async with database.transaction() as s:
        with pytest.raises(PaymentRequired, match="paused"):
            await credits.reserve(s, test_settings, user_id, 1, kind="tool")
    row = await _counters(database, sub["id"])
    assert (row.credits_reserved, row.held) == (3, 1)

    # A member of a group whose subscription pays: the group's is found and held.
    member, _ = await make_user(database)
    group = await make_group(database, (member, "member"))
    async with database.transaction() as s:
        plan_id = await s.scalar(text("SELECT plan_id FROM subscriptions WHERE id = :id"),
                                 {"id": sub["id"]})
    resp = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                             json={"group_id": str(group), "plan": await _plan_key(database, plan_id)})
    assert resp.status_code == 201, resp.text
    async with database.transaction() as s:
        group_hold = await credits.reserve(s, test_settings, member, 2, kind="tool")
    assert group_hold is not None and str(group_hold.subscription_id) == resp.json()["id"]

    # No subscription at all: not metered (None), unless subscriptions are required.
    loner, _ = await make_user(database)
    async with database.transaction() as s:
        assert await credits.reserve(s, test_settings, loner, 1, kind="tool") is None
    required = test_settings.model_copy(update={"billing_require_subscription": True})
    async with database.transaction() as s:
        with pytest.raises(PaymentRequired, match="no subscription"):
            await credits.reserve(s, required, loner, 1, kind="tool")


async def _plan_key(database: Database, plan_id: uuid.UUID) -> str:
    async with database.transaction() as s:
        return str(await s.scalar(text("SELECT key FROM plans WHERE id = :id"), {"id": plan_id}))


async def test_a_hold_alone_is_one_round_trip_and_as_exact_as_reserve(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_settings: Settings,
) -> None:
    """``reserve_alone`` (a warm metered tool call's hold): scope, payer and hold in one
    statement committed as it ends; exact under concurrency; refusals hold nothing; in
    another user's scope the payer is not found and nothing is held."""
    user_id, _ = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 5)
    scope = scope_settings(Principal(user_id=user_id, is_admin=False, kind="api_key"))
    async with sent_statements(database) as sent:
        hold = await credits.reserve_alone(database, test_settings, scope, user_id, 3,
                                           kind="tool", reference="tool:x")
    assert hold is not None and str(hold.subscription_id) == sub["id"] and hold.amount == 3
    assert sent == ["SELECT * FROM roost_hold_credits($1, $2, $3, $4, $5, $6, $7)"], sent
    with pytest.raises(PaymentRequired, match="needs 3 and the balance is 2") as refused:
        await credits.reserve_alone(database, test_settings, scope, user_id, 3, kind="tool")
    assert refused.value.extra["balance"] == 2
    row = await _counters(database, sub["id"])
    assert (row.credits_reserved, row.held) == (3, 1)

    # Another user's scope: row-level security hides the subscription, nothing is held.
    other, _ = await make_user(database)
    other_scope = scope_settings(Principal(user_id=other, is_admin=False, kind="api_key"))
    assert await credits.reserve_alone(database, test_settings, other_scope, user_id, 1,
                                       kind="tool") is None
    row = await _counters(database, sub["id"])
    assert (row.credits_reserved, row.held) == (3, 1)

    # 20 at once against a balance of 2: exactly 2 held.
    results = await asyncio.gather(*(
        credits.reserve_alone(database, test_settings, scope, user_id, 1, kind="tool")
        for _ in range(20)), return_exceptions=True)
    assert sum(isinstance(r, credits.Reservation) for r in results) == 2, results
    assert sum(isinstance(r, PaymentRequired) for r in results) == 18, results
    row = await _counters(database, sub["id"])
    assert (row.credits_reserved, row.held) == (5, 3)

    paused = await client.post(f"/api/v1/billing/subscriptions/{sub['id']}/pause",
                               headers=admin_headers)
    assert paused.status_code == 200, paused.text
    async with database.transaction() as s:  # give the holds back: only the pause refuses
        await s.execute(text("UPDATE subscriptions SET credits_reserved = 0 WHERE id = :id"),
                        {"id": sub["id"]})
    with pytest.raises(PaymentRequired, match="paused"):
        await credits.reserve_alone(database, test_settings, scope, user_id, 1, kind="tool")
    row = await _counters(database, sub["id"])
    assert row.credits_reserved == 0

    loner, _ = await make_user(database)
    loner_scope = scope_settings(Principal(user_id=loner, is_admin=False, kind="api_key"))
    assert await credits.reserve_alone(database, test_settings, loner_scope, loner, 1,
                                       kind="tool") is None
    required = test_settings.model_copy(update={"billing_require_subscription": True})
    with pytest.raises(PaymentRequired, match="no subscription"):
        await credits.reserve_alone(database, required, loner_scope, loner, 1, kind="tool")


async def test_a_hold_a_database_crash_lost_is_still_charged_at_settlement_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_settings: Settings,
) -> None:
    """A hold alone commits without waiting for the WAL flush (migration 1080), so a crash
    of PostgreSQL right after it can lose it: its row and its credits_reserved are gone
    as if it never ran.  The call it was taken for still happened, so its settlement
    charges the actual amount and records the reservation settled, and a retried
    settlement charges nothing more."""
    user_id, _ = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 10)
    who = Principal(user_id=user_id, is_admin=False, kind="api_key")
    hold = await credits.reserve_alone(database, test_settings, scope_settings(who), user_id,
                                       4, kind="tool", reference="tool:x")
    assert hold is not None and (hold.kind, hold.user_id) == ("tool", user_id)
    async with database.transaction() as s:  # what the crash leaves: no trace of the hold
        await s.execute(text("DELETE FROM credit_reservations WHERE id = :id"), {"id": hold.id})
        await s.execute(text("UPDATE subscriptions SET credits_reserved = credits_reserved - 4 "
                             "WHERE id = :id"), {"id": sub["id"]})
    for _ in range(2):  # the settlement, then the same settlement retried
        async with database.transaction() as s:
            await apply_principal(s, who)
            await credits.settle(s, hold, 3)
        row = await _counters(database, sub["id"])
        assert (row.credits_used, row.credits_reserved, row.held) == (3, 0, 0)
    async with database.transaction() as s:
        kept = (await s.execute(text(
            "SELECT status, amount, actual, kind, user_id FROM credit_reservations "
            "WHERE id = :id"), {"id": hold.id})).one()
    assert tuple(kept) == ("settled", 4, 3, "tool", user_id)
    # The balance it left is exact: 7 more fit, the 8th does not.
    assert await credits.reserve_alone(database, test_settings, scope_settings(who), user_id,
                                       7, kind="tool") is not None
    with pytest.raises(PaymentRequired, match="balance is 0"):
        await credits.reserve_alone(database, test_settings, scope_settings(who), user_id, 1,
                                    kind="tool")


async def test_a_model_calls_hold_commits_alone_and_goes_back_if_its_request_is_not_stored(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_settings: Settings, test_keys: KeyMaterial,
) -> None:
    """A model call's hold is taken while the request's transaction is open, on the side
    pool (the main one here has a single connection, which that transaction holds), and
    commits at once: the payer's row is not locked until the request commits, so another
    hold on the same subscription goes through meanwhile.  If the request's transaction
    rolls back, the hold is given back; if it commits, the hold stays for the call."""
    user_id, _ = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 100)
    who = Principal(user_id=user_id, is_admin=False, kind="api_key")
    settings = test_settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})
    one_connection = create_database(settings, url=database.url)
    gateway = LLMGateway.build(one_connection, settings, test_keys)
    chat = ChatRequest(messages=[LLMMessage(role="user", content="hi")], max_tokens=500)
    try:
        async def store_then_fail() -> uuid.UUID:
            async with gateway.transaction(who) as session:
                route = await resolve_route(session, gateway, "stub-model")
                call = await calls.add_request(session, gateway, who, chat, route,
                                               request_type="chat")
                assert call.reservation is not None
                # The payer's row is free while this transaction is still open.
                other = await asyncio.wait_for(credits.reserve_alone(
                    database, settings, scope_settings(who), user_id, 2, kind="tool"), 10)
                assert other is not None
                row = await _counters(database, sub["id"])
                assert (row.credits_reserved, row.held, row.requests) == (3, 2, 0)
                raise LookupError(call.reservation.id)

        with pytest.raises(LookupError) as failed:
            await asyncio.wait_for(store_then_fail(), 20)
        rolled_back = failed.value.args[0]
        for _ in range(100):  # given back in the background
            row = await _counters(database, sub["id"])
            if row.held == 1:
                break
            await asyncio.sleep(0.05)
        assert (row.credits_reserved, row.held, row.requests) == (2, 1, 0)
        async with database.transaction() as s:
            status = await s.scalar(text("SELECT status FROM credit_reservations WHERE id = :id"),
                                    {"id": rolled_back})
        assert status == "released"

        async with gateway.transaction(who) as session:
            route = await resolve_route(session, gateway, "stub-model")
            kept = await calls.add_request(session, gateway, who, chat, route,
                                           request_type="chat")
        await asyncio.sleep(0.2)  # nothing in the background gives a committed one back
        row = await _counters(database, sub["id"])
        assert (row.credits_reserved, row.held, row.requests) == (3, 2, 1)
        assert kept.reservation is not None
    finally:
        await one_connection.dispose()


async def test_a_call_whose_answer_cannot_be_stored_ends_failed_and_gives_its_hold_back(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_settings: Settings, test_keys: KeyMaterial,
) -> None:
    """The provider answered but the call's final transaction failed (here the caller's
    hook refuses; in production a lock wait past the statement timeout): the request is
    recorded failed in a transaction of its own, not left ``running``, and its credits
    are given back (the caller got no answer), and the error reaches the caller."""
    user_id, _ = await make_user(database)
    sub = await _setup(client, admin_headers, stub, user_id, 100)
    who = Principal(user_id=user_id, is_admin=False, kind="api_key")
    gateway = LLMGateway.build(database, test_settings, test_keys)
    chat = ChatRequest(messages=[LLMMessage(role="user", content="hi")], max_tokens=500)
    async with gateway.transaction(who) as session:
        route = await resolve_route(session, gateway, "stub-model")
        call = await calls.add_request(session, gateway, who, chat, route, request_type="chat")

    async def refuse(session: Any, outcome: Any) -> None:
        raise LookupError("the answer has nowhere to go")

    with pytest.raises(LookupError):
        await calls.run(gateway, call, on_success=refuse)
    row = await _counters(database, sub["id"])
    assert (row.credits_used, row.credits_reserved, row.held, row.billed) == (0, 0, 0, 0)
    async with database.transaction() as s:
        status, error = (await s.execute(text(
            "SELECT status, error_message FROM llm_requests WHERE id = :id"),
            {"id": call.request_id})).one()
    assert status == "failed" and "LookupError" in error
    assert len(stub.requests(path="/v1/chat/completions")) == 1
