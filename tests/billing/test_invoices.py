"""Invoices: a pure function of the ledger and the plan (hypothesis), gapless numbers under
concurrency and rollbacks, the PDF (parsed back with pypdf) and the routes."""

from __future__ import annotations

import asyncio
import io
import random
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader
from sqlalchemy import func, select, text

from roost.audit.models import AuditLog
from roost.billing.invoice_pdf import InvoiceDocument, invoice_document, render_invoice_pdf
from roost.billing.invoices import (
    BillTo,
    InvoiceConfig,
    Period,
    compute_invoice,
    issue_invoice,
    ledger_totals,
)
from roost.billing.models import Invoice, Plan, Subscription, UsageRecord
from roost.db.base import uuid7
from roost.db.engine import Database
from roost.errors import Unprocessable
from tests.agents.conftest import other_user, test_settings, user  # noqa: F401 - fixtures
from tests.support.identity import make_user

Headers = dict[str, str]
API = "/api/v1/billing"
JAN = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


# --------------------------------------------------------------------------- helpers


def plan_of(price: str = "20.00", currency: str = "USD", period: str = "month") -> Plan:
    return Plan(id=uuid7(), key=f"p-{uuid.uuid4().hex[:8]}", name="Pro", price=Decimal(price),
                currency=currency, billing_period=period, included_credits=1000, limits={},
                trial_days=0, active=True)


def subscription_of(plan: Plan, user_id: uuid.UUID | None = None, *,
                    period: Period = JAN, status: str = "active",
                    trial_end: datetime | None = None) -> Subscription:
    return Subscription(id=uuid7(), user_id=user_id or uuid7(), plan_id=plan.id, status=status,
                        current_period_start=period.start, current_period_end=period.end,
                        trial_end=trial_end, credits_used=0, credits_limit=1000,
                        credits_reserved=0, created_at=period.start - timedelta(days=40),
                        price=plan.price, currency=plan.currency,
                        billing_period=plan.billing_period)


@dataclass(frozen=True)
class Row:
    """A ledger row as the invoice reads it."""

    subscription_id: uuid.UUID | None
    created_at: datetime
    model: str | None
    request_type: str
    tokens_input: int
    tokens_output: int
    credits_used: int
    cost: Decimal
    currency: str = "USD"
    idempotency_key: str = ""


async def add_plan(database: Database, **kwargs: Any) -> Plan:
    plan = plan_of(**kwargs)
    async with database.transaction() as session:
        session.add(plan)
    return plan


async def add_subscription(database: Database, plan: Plan, user_id: uuid.UUID,
                           **kwargs: Any) -> Subscription:
    sub = subscription_of(plan, user_id, **kwargs)
    async with database.transaction() as session:
        session.add(sub)
    return sub


async def ingest(database: Database, rows: list[Row], user_id: uuid.UUID | None = None) -> int:
    """Insert ledger rows as the ledger does: a row whose idempotency key exists is a
    no-op.  Returns how many rows were new."""
    added = 0
    async with database.transaction() as session:
        for r in rows:
            result = await session.execute(text(
                "INSERT INTO usage_records (id, user_id, request_type, model, tokens_input, "
                "tokens_output, credits_used, success, idempotency_key, cost, currency, "
                "subscription_id, created_at) VALUES (:id, :user_id, :rt, :model, :ti, :to, "
                ":cr, true, :key, :cost, :cur, :sub, :at) "
                "ON CONFLICT (idempotency_key) DO NOTHING"),
                {"id": uuid7(), "user_id": user_id, "rt": r.request_type, "model": r.model,
                 "ti": r.tokens_input, "to": r.tokens_output, "cr": r.credits_used,
                 "key": r.idempotency_key or f"t:{uuid.uuid4()}", "cost": r.cost,
                 "cur": r.currency, "sub": r.subscription_id, "at": r.created_at})
            added += result.rowcount  # type: ignore[attr-defined]
    return added


def usage(sub: Subscription, model: str | None, rtype: str, cost: str, *, day: int = 3,
          tokens: tuple[int, int] = (100, 50), credits: int = 1, currency: str = "USD",
          key: str = "") -> Row:
    return Row(sub.id, datetime(2026, 1, day, 12, tzinfo=UTC), model, rtype, tokens[0],
               tokens[1], credits, Decimal(cost), currency, key or f"t:{uuid.uuid4()}")


# --------------------------------------------------------------------------- pure function


def test_lines_group_by_model_and_feature_and_round_once_per_line() -> None:
    plan = plan_of("19.99")
    sub = subscription_of(plan)
    rows = [
        usage(sub, "gpt-4o", "chat", "0.004999"),
        usage(sub, "gpt-4o", "chat", "0.000001"),  # the line sums to 0.005: one cent
        usage(sub, "gpt-4o", "chat_stream", "1.234567", tokens=(1000, 2000), credits=3),
        usage(sub, "claude-3", "chat", "0.333333"),
        usage(sub, "claude-3", "chat", "0.333333"),
        usage(sub, "claude-3", "chat", "0.333333"),  # 0.999999 -> 1.00
        usage(sub, None, "tool", "0"),
        usage(sub, "gpt-4o", "chat", "7.00", day=31),
    ]
    outside = [Row(sub.id, JAN.end, "gpt-4o", "chat", 1, 1, 1, Decimal("100")),
               Row(uuid7(), JAN.start, "gpt-4o", "chat", 1, 1, 1, Decimal("100"))]
    draft = compute_invoice(plan, sub, rows + outside, JAN, Decimal("0.2"))

    assert [(line.kind, line.model, line.feature, line.quantity, str(line.amount))
            for line in draft.lines] == [
        ("plan", None, None, 1, "19.99"),
        ("usage", "claude-3", "chat", 3, "1.00"),
        ("usage", "gpt-4o", "chat", 3, "7.01"),
        ("usage", "gpt-4o", "chat_stream", 1, "1.23"),
        ("usage", None, "tool", 1, "0.00"),
    ]
    stream = draft.lines[3]
    assert (stream.tokens_input, stream.tokens_output, stream.credits) == (1000, 2000, 3)
    assert str(draft.subtotal) == "29.23"
    assert str(draft.tax) == "5.85"  # 5.846 rounded half up
    assert str(draft.total) == "35.08"
    as_json = draft.lines_json()
    assert as_json[2]["amount"] == "7.01" and isinstance(as_json[2]["amount"], str)


def test_currencies_are_never_mixed() -> None:
    plan = plan_of(currency="EUR")
    sub = subscription_of(plan)
    with pytest.raises(Unprocessable) as err:
        compute_invoice(plan, sub, [usage(sub, "gpt-4o", "chat", "0.10", currency="USD")],
                        JAN, Decimal(0))
    assert "USD" in err.value.detail and "EUR" in err.value.detail
    # Free (local) usage in another currency is listed, not refused.
    draft = compute_invoice(plan, sub, [usage(sub, "llama", "chat", "0", currency="USD")],
                            JAN, Decimal(0))
    assert draft.currency == "EUR" and draft.lines[1].quantity == 1
    assert str(draft.total) == "20.00"


def test_a_trial_period_bills_no_plan_price() -> None:
    plan = plan_of("50.00")
    sub = subscription_of(plan, status="trialing", trial_end=JAN.end)
    draft = compute_invoice(plan, sub, [usage(sub, "m", "chat", "1.50")], JAN, Decimal(0))
    assert "trial" in draft.lines[0].description
    assert str(draft.lines[0].amount) == "0.00" and str(draft.total) == "1.50"


def test_bad_periods_and_rates_are_refused() -> None:
    plan = plan_of()
    sub = subscription_of(plan)
    with pytest.raises(Unprocessable):
        compute_invoice(plan, sub, [], Period(JAN.end, JAN.start), Decimal(0))
    with pytest.raises(Unprocessable):
        compute_invoice(plan, sub, [], JAN, Decimal("1.5"))


MODELS = st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-3", None])
FEATURES = st.sampled_from(["chat", "chat_stream", "embedding", "tool", "run", "custom"])
COSTS = st.decimals(min_value=0, max_value=Decimal("50"), places=6, allow_nan=False,
                    allow_infinity=False)


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[Plan, Subscription, list[Row], Decimal]:
    plan = plan_of(str(draw(st.decimals(min_value=0, max_value=1000, places=2))))
    sub = subscription_of(plan)
    rows = [Row(sub.id, JAN.start + timedelta(seconds=draw(st.integers(0, 31 * 86400 - 1))),
                draw(MODELS), draw(FEATURES), draw(st.integers(0, 10**6)),
                draw(st.integers(0, 10**6)), draw(st.integers(0, 10**4)), draw(COSTS))
            for _ in range(draw(st.integers(0, 40)))]
    rate = draw(st.decimals(min_value=0, max_value=1, places=4))
    return plan, sub, rows, rate


@settings(max_examples=200, deadline=None)
@given(ledgers(), st.randoms(use_true_random=False))
def test_totals_are_the_sum_of_the_lines_whatever_the_order(
        ledger: tuple[Plan, Subscription, list[Row], Decimal], rnd: random.Random) -> None:
    plan, sub, rows, rate = ledger
    draft = compute_invoice(plan, sub, rows, JAN, rate)
    assert draft.subtotal == sum(line.amount for line in draft.lines)
    assert draft.total == draft.subtotal + draft.tax
    assert draft.tax == (draft.subtotal * rate).quantize(Decimal("0.01"), "ROUND_HALF_UP")
    assert all(line.amount == line.amount.quantize(Decimal("0.01")) for line in draft.lines)
    assert sum(line.quantity for line in draft.lines if line.kind == "usage") == len(rows)
    # Every usage line is its rows' exact cost rounded once.
    for line in draft.lines[1:]:
        exact = sum((r.cost for r in rows if (r.model, r.request_type) ==
                     (line.model, line.feature)), Decimal(0))
        assert line.amount == exact.quantize(Decimal("0.01"), "ROUND_HALF_UP")
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert compute_invoice(plan, sub, shuffled, JAN, rate) == draft


# --------------------------------------------------------------------------- the database


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ledger=ledgers())
async def test_replaying_the_ledger_changes_no_invoice(
        database: Database, ledger: tuple[Plan, Subscription, list[Row], Decimal]) -> None:
    plan, _, rows, rate = ledger
    plan = replace_plan(plan)
    uid, _h = await make_user(database)  # one live subscription per user
    sub = subscription_of(plan, uid)
    rows = [replace(r, subscription_id=sub.id, idempotency_key=f"e:{sub.id}:{i}")
            for i, r in enumerate(rows)]
    async with database.transaction() as session:
        session.add(plan)
        await session.flush()
        session.add(sub)
    assert await ingest(database, rows, uid) == len(rows)
    shuffled = list(reversed(rows))
    assert await ingest(database, shuffled + rows, uid) == 0  # every replay a no-op
    expected = compute_invoice(plan, sub, rows, JAN, rate)
    async with database.transaction() as session:
        totals = await ledger_totals(session, sub.id, JAN)
        assert sum(t.events for t in totals) == len(rows)
        invoice = await issue_invoice(session, sub.id, JAN.start, JAN.end,
                                      config=InvoiceConfig(tax_rate=rate))
    assert invoice.lines == expected.lines_json()
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        expected.subtotal, expected.tax, expected.total)


def replace_plan(plan: Plan) -> Plan:
    """A fresh plan row with ``plan``'s terms (hypothesis reuses examples' objects)."""
    return plan_of(str(plan.price), plan.currency, plan.billing_period)


async def test_issuing_again_changes_nothing_and_is_audited(
        database: Database, user: tuple[uuid.UUID, Headers]) -> None:  # noqa: F811
    plan = await add_plan(database)
    sub = await add_subscription(database, plan, user[0])
    await ingest(database, [usage(sub, "gpt-4o", "chat", "0.5")], user[0])
    async with database.transaction() as session:
        first = await issue_invoice(session, sub.id, JAN.start, JAN.end,
                                    config=InvoiceConfig(prefix="ACME"),
                                    now=datetime(2026, 2, 1, 0, 5, tzinfo=UTC))
    # Usage arriving late for the period does not rewrite an issued invoice.
    await ingest(database, [usage(sub, "gpt-4o", "chat", "9.99")], user[0])
    async with database.transaction() as session:
        again = await issue_invoice(session, sub.id, JAN.start, JAN.end,
                                    config=InvoiceConfig(prefix="ACME"))
        assert again.id == first.id and again.total == first.total == Decimal("20.50")
        assert first.number == "ACME-2026-000001" and first.sequence == 1
        assert await session.scalar(select(func.count()).select_from(Invoice)) == 1
        audits = (await session.scalars(select(AuditLog).where(
            AuditLog.action == "billing.invoice.issue"))).all()
        assert [a.resource_id for a in audits] == [str(first.id)]
        assert audits[0].user_id == user[0]


async def test_the_number_year_and_the_issue_date_are_one_moment(
        database: Database, user: tuple[uuid.UUID, Headers]) -> None:  # noqa: F811
    """An invoice issued as the year turns is numbered in the year its PDF and API say it
    was issued, not in the next one with the date of the last."""
    plan = await add_plan(database)
    sub = await add_subscription(database, plan, user[0])
    new_year = datetime(2027, 1, 1, 0, 0, 0, 200, tzinfo=UTC)
    async with database.transaction() as session:
        invoice = await issue_invoice(session, sub.id, JAN.start, JAN.end, now=new_year)
        number, issued = invoice.number, invoice.created_at
    assert number.split("-")[1] == str(issued.year) == "2027"
    assert issued == new_year


async def test_numbers_have_no_gap_under_concurrency_or_rollback(database: Database) -> None:
    plan = await add_plan(database)
    subs = []
    for _ in range(12):
        uid, _h = await make_user(database)
        subs.append(await add_subscription(database, plan, uid))

    class Boom(Exception):
        pass

    async def issue(sub: Subscription, fail: bool) -> str | None:
        try:
            async with database.transaction() as session:
                invoice = await issue_invoice(session, sub.id, JAN.start, JAN.end)
                if fail:
                    raise Boom  # after taking a number: the rollback gives it back
                return invoice.number
        except Boom:
            return None

    results = await asyncio.gather(*(issue(s, i % 4 == 1) for i, s in enumerate(subs)))
    assert results.count(None) == 3
    # The failed ones again, and the whole batch once more (a no-op for the issued ones).
    results2 = await asyncio.gather(*(issue(s, False) for s in subs))
    year = datetime.now(UTC).year
    numbers = sorted(n for n in results2 if n is not None)
    assert numbers == [f"INV-{year}-{i:06d}" for i in range(1, 13)]
    async with database.transaction() as session:
        seqs = sorted((await session.scalars(select(Invoice.sequence))).all())
        assert seqs == list(range(1, 13))
        assert await session.scalar(text(
            "SELECT last_value FROM invoice_sequences WHERE name = :n"), {"n": f"INV-{year}"}) == 12


# --------------------------------------------------------------------------- PDF


async def test_the_pdf_shows_number_bill_to_and_total_in_latin1(
        database: Database, user: tuple[uuid.UUID, Headers]) -> None:  # noqa: F811
    plan = await add_plan(database, price="12.50")
    sub = await add_subscription(database, plan, user[0])
    async with database.transaction() as session:
        await session.execute(text("UPDATE users SET full_name = :n WHERE id = :id"),
                              {"n": "Zoë Łukasz 李 😀", "id": user[0]})
    await ingest(database, [usage(sub, "mistral-" + "x" * 120, "chat", "1.111111")], user[0])
    async with database.transaction() as session:
        invoice = await issue_invoice(session, sub.id, JAN.start, JAN.end,
                                      config=InvoiceConfig(tax_rate=Decimal("0.2")))
        doc = await invoice_document(session, invoice)
    data = render_invoice_pdf(doc)
    assert data.startswith(b"%PDF") and render_invoice_pdf(doc) == data
    page = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert invoice.number in page
    assert "16.33 USD" in page  # (12.50 + 1.11) * 1.2 = 16.332
    assert "Zo" in page and "2026-01-01" in page


# --------------------------------------------------------------------------- routes


async def test_invoices_over_http(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers,
        user: tuple[uuid.UUID, Headers],  # noqa: F811
        other_user: tuple[uuid.UUID, Headers]) -> None:  # noqa: F811
    uid, headers = user
    plan = await add_plan(database, price="10.00")
    now = datetime.now(UTC).replace(microsecond=0)
    open_period = Period(now - timedelta(days=3), now + timedelta(days=27))
    sub = await add_subscription(database, plan, uid, period=open_period)
    other_plan_sub = await add_subscription(database, plan, other_user[0], period=JAN)
    await ingest(database, [Row(sub.id, now - timedelta(hours=1), "gpt-4o", "chat", 10, 10, 1,
                                Decimal("0.25"))], uid)

    # The current period has not ended: no invoice yet, but a preview.
    resp = await client.post(f"{API}/invoices", json={"subscription_id": str(sub.id)},
                             headers=admin_headers)
    assert resp.status_code == 409 and "invoice-preview" in resp.json()["detail"]
    resp = await client.get(f"{API}/subscriptions/{sub.id}/invoice-preview", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["total"] == "10.25" and "number" not in resp.json()
    assert (await client.get(f"{API}/subscriptions/{sub.id}/invoice-preview",
                             headers=other_user[1])).status_code == 404

    # Users may not issue; bad bodies are 4xx.
    # The period before the current one (the subscription was created 40 days before that).
    body = {"subscription_id": str(sub.id),
            "period_start": (open_period.start - timedelta(days=30)).isoformat(),
            "period_end": open_period.start.isoformat()}
    assert (await client.post(f"{API}/invoices", json=body, headers=headers)).status_code == 403
    for bad in ({"subscription_id": str(sub.id), "period_start": "2026-01-01T00:00:00Z"},
                {**body, "period_start": "2026-01-01T00:00:00"},
                {**body, "period_end": "2025-01-01T00:00:00Z"},
                {**body, "extra": 1}, {"subscription_id": "nope"}):
        resp = await client.post(f"{API}/invoices", json=bad, headers=admin_headers)
        assert resp.status_code == 422, (bad, resp.text)
    resp = await client.post(f"{API}/invoices", json={"subscription_id": str(uuid7())},
                             headers=admin_headers)
    assert resp.status_code == 404

    # An ended period (named) is issued; again returns the same invoice.
    resp = await client.post(f"{API}/invoices", json=body, headers=admin_headers)
    assert resp.status_code == 201, resp.text
    jan = resp.json()
    assert jan["number"].startswith("INV-") and jan["total"] == "10.00"
    again = await client.post(f"{API}/invoices", json=body, headers=admin_headers)
    assert again.json()["id"] == jan["id"] and again.json()["number"] == jan["number"]
    resp = await client.post(f"{API}/invoices",
                             json={"subscription_id": str(other_plan_sub.id)},
                             headers=admin_headers)
    assert resp.status_code == 201
    others = resp.json()

    # Reading: their own for users, all (filtered) for administrators.
    resp = await client.get(f"{API}/invoices", headers=headers)
    assert [i["id"] for i in resp.json()["items"]] == [jan["id"]]
    resp = await client.get(f"{API}/invoices", headers=admin_headers)
    assert {i["id"] for i in resp.json()["items"]} == {jan["id"], others["id"]}
    resp = await client.get(f"{API}/invoices", params={"user_id": str(other_user[0])},
                            headers=admin_headers)
    assert [i["id"] for i in resp.json()["items"]] == [others["id"]]
    resp = await client.get(f"{API}/invoices", params={"status": "paid"}, headers=admin_headers)
    assert resp.json()["items"] == []
    assert (await client.get(f"{API}/invoices", params={"status": "bogus"},
                             headers=admin_headers)).status_code == 422
    resp = await client.get(f"{API}/invoices", params={"limit": 1}, headers=admin_headers)
    page2 = await client.get(f"{API}/invoices", params={"limit": 1,
                                                        "cursor": resp.json()["next_cursor"]},
                             headers=admin_headers)
    assert len({resp.json()["items"][0]["id"], page2.json()["items"][0]["id"]}) == 2

    assert (await client.get(f"{API}/invoices/{jan['id']}", headers=headers)).json() == jan
    assert (await client.get(f"{API}/invoices/{others['id']}",
                             headers=headers)).status_code == 404
    assert (await client.get(f"{API}/invoices/{uuid7()}", headers=headers)).status_code == 404
    assert (await client.get(f"{API}/invoices/{others['id']}.pdf",
                             headers=headers)).status_code == 404

    resp = await client.get(f"{API}/invoices/{jan['id']}.pdf", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/pdf"
    assert resp.headers["content-disposition"] == (
        f'attachment; filename="{jan["number"]}.pdf"; filename*=UTF-8\'\'{jan["number"]}.pdf')
    page = PdfReader(io.BytesIO(resp.content)).pages[0].extract_text()
    assert jan["number"] in page and "10.00 USD" in page

    # A canceled subscription's open period may be issued at once (its final invoice).
    async with database.transaction() as session:
        await session.execute(text("UPDATE subscriptions SET status = 'canceled' WHERE id = :id"),
                              {"id": sub.id})
    resp = await client.post(f"{API}/invoices", json={"subscription_id": str(sub.id)},
                             headers=admin_headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["total"] == "10.25"
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(UsageRecord)) == 1


async def test_a_period_overlapping_an_issued_invoice_is_refused(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers,
        user: tuple[uuid.UUID, Headers]) -> None:  # noqa: F811
    """An invoice for a period that overlaps one already issued for the subscription (here
    starting one second later) is a 409 naming it, not a second bill for the same usage
    and plan fee; the issued period again returns its invoice, the next period is new."""
    uid, _ = user
    plan = await add_plan(database, price="10.00")
    sub = await add_subscription(database, plan, uid)
    await ingest(database, [usage(sub, None, "chat", "5", day=20)], uid)
    jan = {"subscription_id": str(sub.id), "period_start": JAN.start.isoformat(),
           "period_end": JAN.end.isoformat()}
    first = await client.post(f"{API}/invoices", json=jan, headers=admin_headers)
    assert first.status_code == 201, first.text
    assert first.json()["total"] == "15.00"

    for start, end in ((JAN.start + timedelta(seconds=1), JAN.end),
                       (JAN.start - timedelta(days=1), JAN.start + timedelta(days=1)),
                       (JAN.start + timedelta(days=30), JAN.end + timedelta(days=28))):
        resp = await client.post(f"{API}/invoices", headers=admin_headers, json={
            **jan, "period_start": start.isoformat(), "period_end": end.isoformat()})
        assert resp.status_code == 409, (start, end, resp.text)
        assert first.json()["number"] in resp.json()["detail"]

    again = await client.post(f"{API}/invoices", json=jan, headers=admin_headers)
    assert again.json()["id"] == first.json()["id"]
    february = await client.post(f"{API}/invoices", headers=admin_headers, json={
        **jan, "period_start": JAN.end.isoformat(),
        "period_end": (JAN.end + timedelta(days=28)).isoformat()})
    assert february.status_code == 201, february.text
    assert february.json()["total"] == "10.00"
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Invoice)) == 2


@pytest.mark.parametrize("owner", ["user", "group"])
async def test_an_invoiced_user_or_group_can_be_deleted_and_the_invoice_stays(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str], owner: str,
) -> None:
    """The subscription goes with its user or group; its issued invoice stays, with its
    subscription's id as history and the owner cleared (was: 409 for ever)."""
    from tests.knowledge.support import make_group

    user_id, _ = await make_user(database)
    key = f"p{uuid.uuid4().hex[:8]}"
    made = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": key, "name": "Team", "price": "1.00", "included_credits": 100})
    assert made.status_code == 201, made.text
    target: dict[str, str] = {"user_id": str(user_id)}
    if owner == "group":
        target = {"group_id": str(await make_group(database, "team", user_id))}
    sub = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                            json={**target, "plan": key})
    assert sub.status_code == 201, sub.text
    sub_id = sub.json()["id"]
    assert (await client.post(f"/api/v1/billing/subscriptions/{sub_id}/cancel",
                              headers=admin_headers, json={})).status_code == 200
    issued = await client.post("/api/v1/billing/invoices", headers=admin_headers,
                               json={"subscription_id": sub_id})
    assert issued.status_code in (200, 201), issued.text
    url = f"/api/v1/users/{user_id}" if owner == "user" else f"/api/v1/groups/{target['group_id']}"
    deleted = await client.delete(url, headers=admin_headers)
    assert deleted.status_code == 204, deleted.text
    async with database.transaction() as s:
        kept = (await s.execute(select(Invoice.subscription_id, Invoice.user_id, Invoice.group_id)
                                .where(Invoice.id == uuid.UUID(issued.json()["id"])))).one()
    assert (str(kept.subscription_id), kept.user_id, kept.group_id) == (sub_id, None, None)


async def test_a_named_period_outside_the_subscriptions_life_is_refused(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    """A period named for an invoice that starts before the subscription was created (a
    second in 2020 for one created in 2025), or after it was canceled, is a 422 naming
    period_start, not a numbered invoice charging the plan's price; nothing is issued."""
    uid, _ = await make_user(database)
    plan = await add_plan(database, price="10.00")
    sub = await add_subscription(database, plan, uid, period=JAN)  # created 2025-11-22
    resp = await client.post(f"{API}/invoices", headers=admin_headers, json={
        "subscription_id": str(sub.id), "period_start": "2020-01-01T00:00:00Z",
        "period_end": "2020-01-01T00:00:01Z"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "period_start", resp.text
    async with database.transaction() as session:
        await session.execute(text("UPDATE subscriptions SET status = 'canceled', "
                                   "canceled_at = :at WHERE id = :id"),
                              {"at": JAN.end, "id": sub.id})
    resp = await client.post(f"{API}/invoices", headers=admin_headers, json={
        "subscription_id": str(sub.id), "period_start": JAN.end.isoformat(),
        "period_end": (JAN.end + timedelta(days=28)).isoformat()})
    assert resp.status_code == 422, resp.text
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Invoice).where(
            Invoice.subscription_id == sub.id)) == 0
    # The subscription's own period is still issued.
    resp = await client.post(f"{API}/invoices", headers=admin_headers, json={
        "subscription_id": str(sub.id), "period_start": JAN.start.isoformat(),
        "period_end": JAN.end.isoformat()})
    assert resp.status_code == 201 and resp.json()["total"] == "10.00", resp.text


def test_a_decomposed_latin1_name_prints_on_the_pdf() -> None:
    """A full name typed decomposed (NFD, as macOS keyboards send it: "Jose" + U+0301)
    prints "José" on the invoice PDF (it printed "Jose?": the accent alone is not
    latin-1, though "é" is)."""
    name = unicodedata.normalize("NFD", "José Müller")
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    doc = InvoiceDocument(
        number="INV-2026-000001", issued_at=moment, period_start=moment, period_end=moment,
        status="open", currency="EUR", plan="Pro", bill_to=BillTo(name, "jose@example.com"),
        lines=[], subtotal=Decimal("0.00"), tax_rate=Decimal("0"), tax=Decimal("0.00"),
        total=Decimal("0.00"))
    page = PdfReader(io.BytesIO(render_invoice_pdf(doc))).pages[0].extract_text()
    assert "José Müller" in page, page
