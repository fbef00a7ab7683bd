"""Model prices: administrators edit the table, everyone reads it; cost_for prices a call
in Decimal from the most specific matching price (exact name, then the longest glob)."""

from __future__ import annotations

import unicodedata
import uuid
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import delete

from roost.billing import prices
from roost.billing.models import ModelPrice
from roost.db.engine import Database
from tests.agents.conftest import user  # noqa: F401 - fixtures

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
PRICES = "/api/v1/billing/prices"


async def add_price(client: httpx.AsyncClient, headers: Headers, pattern: str, inp: str,
                    out: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post(PRICES, headers=headers, json={
        "model_pattern": pattern, "input_per_million": inp, "output_per_million": out,
        **extra})
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def test_cost_arithmetic_is_decimal_and_rounds_half_up() -> None:
    rate = prices.Rate("m", Decimal("2.50"), Decimal("10.00"), "USD")
    assert prices.compute_cost(rate, 1_000_000, 1_000_000) == Decimal("12.500000")
    assert prices.compute_cost(rate, 1234, 567) == Decimal("0.008755")  # 0.003085 + 0.00567
    # 0.0000005 rounds up to 0.000001 (half up), 0.0000004 down to 0.
    tiny = prices.Rate("m", Decimal("0.5"), Decimal("0.4"), "USD")
    assert prices.compute_cost(tiny, 1, 0) == Decimal("0.000001")
    assert prices.compute_cost(tiny, 0, 1) == Decimal("0.000000")
    # No float error: 3 x 0.1 per million on a million tokens is exactly 0.3.
    dime = prices.Rate("m", Decimal("0.1"), Decimal("0.1"), "USD")
    assert sum((prices.compute_cost(dime, 1_000_000, 0) for _ in range(3)),
               Decimal(0)) == Decimal("0.3")
    big = prices.Rate("m", Decimal("999999999.999999"), Decimal("0"), "USD")
    assert prices.compute_cost(big, 2**31, 0) == Decimal("2147483647999.997853")


async def test_cost_for_picks_the_most_specific_price(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(delete(ModelPrice))
        for pattern, inp, out, currency in (
                ("gpt-4o", "2.00", "8.00", "USD"), ("gpt-4o*", "2.50", "10.00", "USD"),
                ("gpt-4o-mini*", "0.15", "0.60", "USD"), ("gpt-*", "9", "9", "USD"),
                ("mistral-*", "1", "3", "EUR")):
            session.add(ModelPrice(model_pattern=pattern, input_per_million=Decimal(inp),
                                   output_per_million=Decimal(out), currency=currency))
    prices.invalidate()
    async with database.transaction() as session:
        async def cost(model: str | None, i: int = 1_000_000, o: int = 1_000_000
                       ) -> tuple[Decimal, str]:
            return await prices.cost_for(session, model, i, o)

        assert await cost("gpt-4o") == (Decimal("10.000000"), "USD")  # exact beats globs
        assert await cost("gpt-4o-2024-08-06") == (Decimal("12.5"), "USD")
        assert await cost("gpt-4o-mini-2024") == (Decimal("0.75"), "USD")  # longest glob
        assert await cost("GPT-4O-MINI") == (Decimal("0.75"), "USD")  # case-insensitive
        assert await cost("gpt-5") == (Decimal("18"), "USD")
        assert await cost("mistral-large", 500_000, 0) == (Decimal("0.5"), "EUR")
        assert await cost("llama3.2:1b") == (Decimal(0), "USD")  # local model: free
        assert await cost(None) == (Decimal(0), "USD")
        assert await cost("gpt-4o", 0, 0) == (Decimal(0), "USD")


async def test_a_price_matches_its_model_composed_or_decomposed(database: Database) -> None:
    """A price written with a decomposed "é" (NFD) prices the composed name the ledger
    stores (NFC), exactly or by a glob, and the other way round (it matched neither)."""
    nfd = unicodedata.normalize("NFD", "café")
    async with database.transaction() as session:
        await session.execute(delete(ModelPrice))
        for pattern, inp in ((f"{nfd}-large", "1"), (f"{nfd}-*", "2"), ("thé-*", "3")):
            session.add(ModelPrice(model_pattern=pattern, input_per_million=Decimal(inp),
                                   output_per_million=Decimal(0), currency="USD"))
    prices.invalidate()
    async with database.transaction() as session:
        for model, cost in (("café-large", "1"), ("Café-small", "2"),
                            (unicodedata.normalize("NFD", "thé-vert"), "3")):
            assert await prices.cost_for(session, model, 1_000_000, 0) == \
                (Decimal(cost), "USD"), model


async def test_the_seeded_prices_and_the_admin_api(client: httpx.AsyncClient,
                                                   admin_headers: Headers, user: User,  # noqa: F811
                                                   database: Database) -> None:
    _, headers = user
    listed = (await client.get(PRICES, headers=headers)).json()["items"]
    seeded = {p["model_pattern"]: p for p in listed}
    assert seeded["gpt-4o*"]["input_per_million"] == "2.500000"
    async with database.transaction() as session:
        assert await prices.cost_for(session, "gpt-4o-2024-11-20", 1000, 1000) == \
            (Decimal("0.012500"), "USD")

    created = await add_price(client, admin_headers, "gpt-4o-2024-11-20", "1.25", "5",
                              note="batch discount")
    async with database.transaction() as session:  # the cache follows the change at once
        assert await prices.cost_for(session, "gpt-4o-2024-11-20", 1000, 1000) == \
            (Decimal("0.006250"), "USD")
    resp = await client.patch(f"{PRICES}/{created['id']}", json={"output_per_million": "0.000001"},
                              headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["output_per_million"] == "0.000001"
    async with database.transaction() as session:
        assert await prices.cost_for(session, "gpt-4o-2024-11-20", 0, 2_000_000) == \
            (Decimal("2E-6"), "USD")
    assert (await client.delete(f"{PRICES}/{created['id']}",
                                headers=admin_headers)).status_code == 204
    async with database.transaction() as session:
        assert (await prices.cost_for(session, "gpt-4o-2024-11-20", 1000, 1000))[0] == \
            Decimal("0.0125")
    assert (await client.get(f"{PRICES}/{created['id']}", headers=headers)).status_code == 404

    # Users read, never write.
    assert (await client.post(PRICES, headers=headers, json={
        "model_pattern": "x", "input_per_million": 1, "output_per_million": 1})
    ).status_code == 403
    some = seeded["gpt-4o*"]["id"]
    assert (await client.patch(f"{PRICES}/{some}", json={"input_per_million": 0},
                               headers=headers)).status_code == 403
    assert (await client.delete(f"{PRICES}/{some}", headers=headers)).status_code == 403

    # Bad input: 422 naming the field; a duplicate pattern 409.
    base = {"model_pattern": "new-model", "input_per_million": "1", "output_per_million": "2"}
    for change, field in (({"input_per_million": "-0.01"}, "input_per_million"),
                          ({"output_per_million": "1e12"}, "output_per_million"),
                          ({"input_per_million": "0.0000001"}, "input_per_million"),
                          ({"input_per_million": "free"}, "input_per_million"),
                          ({"currency": "dollars"}, "currency"),
                          ({"model_pattern": ""}, "model_pattern"),
                          ({"model_pattern": "gpt 4o"}, "model_pattern"),
                          ({"cost": 1}, "cost")):
        resp = await client.post(PRICES, json={**base, **change}, headers=admin_headers)
        assert resp.status_code == 422, (change, resp.text)
        assert field in resp.text
    resp = await client.post(PRICES, json={**base, "model_pattern": "gpt-4o*"},
                             headers=admin_headers)
    assert resp.status_code == 409 and "gpt-4o*" in resp.json()["detail"]
    resp = await client.patch(f"{PRICES}/{some}", json={"currency": None}, headers=admin_headers)
    assert resp.status_code == 422
    resp = await client.patch(f"{PRICES}/{uuid.uuid4()}", json={"note": "x"},
                              headers=admin_headers)
    assert resp.status_code == 404
