"""What comes back from ClickHouse as Roost shows it: error messages with the URL's
password masked and the rest readable, usage costs with six decimals whatever the
server's formatting."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from roost.analytics.clickhouse import Sink, safe_error
from roost.analytics.queries import usage_from_clickhouse
from roost.config import Settings


def test_a_short_password_is_masked_only_where_it_is_the_password() -> None:
    """A password of one character must not turn every such character of the host and
    port into *** (``host='***27.0.0.***', port=8***23`` was shown)."""
    url = "http://roost:1@127.0.0.1:8123/db"
    settings = Settings(analytics_clickhouse_url=url)
    message = safe_error(ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=8123): Max retries exceeded "
        f"connecting to {url} (as http://roost:1@127.0.0.1:8123/)"), settings)
    assert "host='127.0.0.1', port=8123" in message, message
    assert "http://127.0.0.1:8123/db" in message and "roost:***@127.0.0.1" in message, message
    assert ":1@" not in message


@pytest.mark.parametrize("password", ["s3cret-pass", "p%40ss%2Fword1"])
def test_a_long_password_is_masked_anywhere_as_written_and_decoded(password: str) -> None:
    settings = Settings(analytics_clickhouse_url=f"http://roost:{password}@ch.internal:8123/db")
    decoded = password.replace("%40", "@").replace("%2F", "/")
    message = safe_error(RuntimeError(
        f"authentication failed for roost with password {decoded} ({password}) "
        "at ch.internal:8123"), settings)
    assert decoded not in message and password not in message, message
    assert "ch.internal:8123" in message


class _Answers(Sink):
    """A sink answering fixed usage rows, costs formatted as ClickHouse's toString does."""

    kind = "clickhouse"
    location = "http://ch:8123/db"

    async def insert(self, rows: Any) -> None:
        raise AssertionError("not shipped here")

    async def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"key": model, "name": "", "requests": 1, "tokens_input": 0, "tokens_output": 0,
                 "credits": 0, "cost": cost, "failures": 0}
                for model, cost in (("m0", "0"), ("m1", "0.09"), ("m2", "12.345678"))]


async def test_usage_costs_from_clickhouse_have_six_decimals() -> None:
    """As from PostgreSQL (numeric(18, 6)): "0.000000", not ClickHouse's "0" or "0.09"."""
    rows = await usage_from_clickhouse(
        Settings(), "model", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC),
        None, sink=_Answers())
    assert [str(r["cost"]) for r in rows] == ["0.000000", "0.090000", "12.345678"]
