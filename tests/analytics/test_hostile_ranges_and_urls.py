"""Analytics reports over ranges outside the years ClickHouse holds, and a ClickHouse URL
that does not parse: answered (empty, or 503 naming the cause), never a 500; the setting
itself refused at start."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from roost.config import Settings

AN = "/api/v1/analytics"


@pytest.mark.parametrize("params", [
    {"until": "1850-01-01T00:00:00Z"},
    {"since": "1800-01-01T00:00:00Z", "until": "1850-01-01T00:00:00Z"},
    {"since": "2299-12-31T00:00:00Z", "until": "2400-01-01T00:00:00Z"},
    {"since": "1899-12-31T00:00:00Z", "until": "1900-01-01T00:00:00Z"},
])
async def test_events_valid_range_outside_clickhouse_years_is_answered(
        client: httpx.AsyncClient, admin_headers: dict[str, str],
        params: dict[str, str]) -> None:
    """A valid range (until after since) is answered, not 422 'until must be after since'."""
    r = await client.get(f"{AN}/events", params=params, headers=admin_headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("until", "status"), [
    ("0001-01-01T00:00:30Z", 200), ("0001-01-07T23:59:59Z", 200),
    # The default range starts at the first moment there is: empty, so refused.
    ("0001-01-01T00:00:00+00:00", 422),
])
async def test_events_until_in_the_first_week_of_year_1_is_not_a_500(
        client: httpx.AsyncClient, admin_headers: dict[str, str], until: str,
        status: int) -> None:
    """No since: the default 7 days before until would start before year 1; the range
    starts at year 1 instead (and lies outside ClickHouse's years: empty)."""
    r = await client.get(f"{AN}/events", params={"until": until}, headers=admin_headers)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["items"] == [] and r.json()["since"].startswith("0001-01-01T00:00:00")


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/db", "http://[::1/db"])
@pytest.mark.parametrize("method,path,expected", [
    ("GET", "/export", {200}), ("POST", "/export", {200, 503}), ("GET", "/events", {503})])
async def test_malformed_clickhouse_url_is_never_a_500(
        client: httpx.AsyncClient, app: FastAPI, admin_headers: dict[str, str],
        test_settings: Settings, url: str, method: str, path: str, expected: set[int]) -> None:
    """A malformed ROOST_ANALYTICS_CLICKHOUSE_URL (set behind the settings' check): the
    status answers, a pass with nothing to ship is done, a query is a 503."""
    app.state.settings = test_settings.model_copy(update={"analytics_clickhouse_url": url})
    r = await client.request(method, f"{AN}{path}", headers=admin_headers)
    assert r.status_code in expected, r.text


def test_settings_refuse_a_malformed_clickhouse_url() -> None:
    """Settings refuse a ClickHouse URL that does not parse, as they do for other URLs."""
    with pytest.raises(ValueError):
        Settings(analytics_clickhouse_url="http://127.0.0.1:99999/db")
