"""Usage reports: ``usage_records`` (the ledger) summed per UTC day, user, model,
provider, agent, API key or request type over a time range, with tokens, credits and cost.
Administrators see everyone's events (or one user's, ``user_id``); anyone else only their
own (row-level security says so too; the explicit filter keeps the answer right under any
role)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic_core import PydanticCustomError
from sqlalchemy import Date, Select, cast, column, func, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from roost.analytics.queries import usage_from_clickhouse
from roost.billing.models import UsageRecord
from roost.config import Settings
from roost.db.base import utcnow
from roost.errors import Forbidden, Unprocessable
from roost.identity.models import ApiKey, User
from roost.inputs import in_utc_range
from roost.principal import Principal

GroupBy = Literal["day", "model", "user", "provider", "agent", "api_key", "request_type"]
GROUP_BYS: tuple[GroupBy, ...] = ("day", "model", "user", "provider", "agent", "api_key",
                                  "request_type")
# Tables of higher domains, by name only (this domain imports none of them).
_PROVIDERS = table("llm_providers", column("id"), column("name"))
_AGENTS = table("agents", column("id"), column("name"))
_USERS = User.__table__
_KEYS = ApiKey.__table__
# group_by -> the ledger's column and the table (and its column) naming its ids: the
# PostgreSQL report joins it, the ClickHouse one looks its keys up in it (_names).
_NAMED: dict[str, tuple[Any, Any, Any]] = {
    "user": (UsageRecord.user_id, _USERS, _USERS.c.username),
    "provider": (UsageRecord.provider_id, _PROVIDERS, _PROVIDERS.c.name),
    "agent": (UsageRecord.agent_id, _AGENTS, _AGENTS.c.name),
    "api_key": (UsageRecord.api_key_id, _KEYS, _KEYS.c.name),
}
_ZERO = Decimal("0.000000")  # no usage costs 0 written as every amount is (6 decimals)
DEFAULT_DAYS = 30
MAX_RANGE_DAYS = 366


@dataclass(frozen=True)
class UsageRow:
    key: str | None  # the UTC day (YYYY-MM-DD), the model, or the user's/provider's/... id
    username: str | None
    requests: int
    tokens_input: int
    tokens_output: int
    credits_used: int
    avg_latency_ms: float | None
    failures: int
    cost: Decimal | None = _ZERO  # in ``currency``; None when the costs are in several
    label: str | None = None  # the provider's, agent's or API key's name
    currency: str | None = None  # of ``cost``: None when several (or not known)
    costs: dict[str, Decimal] = field(default_factory=dict)  # per currency, never added


def single_cost(costs: dict[str, Decimal]) -> tuple[Decimal | None, str | None]:
    """``(cost, currency)`` of per-currency amounts: the one amount, or (None, None) when
    there are several (amounts in two currencies do not add); no usage: 0 in none."""
    if len(costs) > 1:
        return None, None
    if not costs:
        return _ZERO, None
    ((currency, cost),) = costs.items()
    return cost, currency


@dataclass(frozen=True)
class UsageReport:
    group_by: GroupBy
    since: datetime
    until: datetime
    rows: list[UsageRow]

    def totals(self) -> dict[str, Any]:
        fields = ("requests", "tokens_input", "tokens_output", "credits_used", "failures")
        sums: dict[str, Any] = {f: sum(getattr(r, f) for r in self.rows) for f in fields}
        costs: dict[str, Decimal] = {}
        unknown = _ZERO  # rows whose currency is not known (the ClickHouse export's)
        for row in self.rows:
            if not row.costs:
                unknown += row.cost or _ZERO
            for currency, amount in row.costs.items():
                costs[currency] = costs.get(currency, _ZERO) + amount
        if costs:
            sums["cost"], sums["currency"] = single_cost(costs)
        else:
            sums["cost"], sums["currency"] = unknown, None
        sums["costs"] = costs
        return sums


# ASCII digits only: \d takes fullwidth and other scripts' digits, which no ISO form has.
_ORDINAL = re.compile(r"([0-9]{4})-?([0-9]{3})")
# A week with no day (2026-W05, 2026W05): fromisoformat reads it as its Monday.
_WEEK_NO_DAY = re.compile(r"[0-9]{4}-?W[0-9]{2}")
# Where a timestamp's time starts: ISO's T, RFC 3339's lower-case t or its space.
_TIME_SEP = re.compile(r"[Tt ]")


def _ordinal_date(text: str) -> date | None:
    """An ISO 8601 ordinal date (``2026-031``, ``2026031``: the year's 31st day), which
    ``date.fromisoformat`` does not read; ValueError past the year's last day."""
    found = _ORDINAL.fullmatch(text)
    if found is None:
        return None
    year, number = int(found[1]), int(found[2])
    first = date(year, 1, 1)
    day = first + timedelta(days=number - 1) if number >= 1 else None
    if day is None or day.year != year:
        raise ValueError(f"{text!r} is no day of {year}")
    return day


def parse_bound(value: str | None, *, name: str, end: bool) -> datetime | None:
    """An ISO timestamp or date (UTC when it names no offset).  A bare date as ``until``
    means the end of that day, so ``since=2026-01-01&until=2026-01-31`` covers January.
    A week with no day (``2026-W05``), like a month (``2026-01``), is a 422, and so is a
    moment outside years 1-9999 in UTC, naming ``name``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _WEEK_NO_DAY.fullmatch(_TIME_SEP.split(text, maxsplit=1)[0]):
        # As `until` it would end on the Monday and drop the rest of the week; refused
        # as the month (2026-01) is.
        raise Unprocessable(f"{name} must name a day: give a week date with its day, "
                            f"YYYY-Www-D (2026-W05-1 is its Monday), got {text[:40]!r}",
                            extra={"field": name})
    try:
        try:  # a date in any ISO form (2026-01-31, 20260131, 2026-031, 2026-W05-6)
            day: date | None = _ordinal_date(text) or date.fromisoformat(text)
        except ValueError:
            day = None
        if day is not None:
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        else:
            # A time on an ordinal date (2026-031T12:00Z, 2026-031t12:00Z, 2026-031
            # 12:00Z), as on a calendar or week date.
            parts = _TIME_SEP.split(text, maxsplit=1)
            ordinal = _ordinal_date(parts[0]) if len(parts) == 2 else None
            if ordinal is not None:
                text = f"{ordinal.isoformat()}T{parts[1]}"
            # RFC 3339 allows a lower-case z (Python 3.11 reads neither "Z" nor "z" here).
            moment = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text))
    except ValueError:
        raise Unprocessable(f"{name} must be an ISO 8601 date or timestamp, got {text[:40]!r}",
                            extra={"field": name}) from None
    except OverflowError:  # the day after 9999-12-31
        raise Unprocessable(f"{name} must be before the year 10000",
                            extra={"field": name}) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:  # 0001-01-01T00:00:00+14:00 is in year 0 in UTC: the database cannot take it
        # In UTC (in_utc_range answers it so): the report echoes its range and `roost
        # usage` titles it "... UTC".
        return in_utc_range(moment)
    except PydanticCustomError:
        raise Unprocessable(f"{name} must be a moment between the years 1 and 9999 in UTC",
                            extra={"field": name}) from None


def resolve_range(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    """``[since, until)``; the last 30 days by default; at most 366 days long."""
    end = parse_bound(until, name="until", end=True) or utcnow()
    start = parse_bound(since, name="since", end=False)
    if start is None:
        try:
            start = end - timedelta(days=DEFAULT_DAYS)
        except OverflowError:
            raise Unprocessable(f"until is too early for the default {DEFAULT_DAYS} days "
                                "before it: give since") from None
    if end <= start:
        raise Unprocessable("until must be after since")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise Unprocessable(f"the range may span at most {MAX_RANGE_DAYS} days")
    return start, end


def _sums() -> list[Any]:
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(UsageRecord.tokens_input), 0).label("tokens_input"),
        func.coalesce(func.sum(UsageRecord.tokens_output), 0).label("tokens_output"),
        func.coalesce(func.sum(UsageRecord.credits_used), 0).label("credits_used"),
        # Summed and counted, not averaged: a key's rows per currency are merged after.
        func.coalesce(func.sum(UsageRecord.latency_ms), 0).label("latency_sum"),
        func.count(UsageRecord.latency_ms).label("latency_n"),
        func.count().filter(UsageRecord.success.is_(False)).label("failures"),
        func.coalesce(func.sum(UsageRecord.cost), 0).label("cost"),
        UsageRecord.currency.label("currency"),
    ]


def _grouped(group_by: GroupBy) -> Select[Any]:
    """One row per key and currency (merged per key by ``_merged``)."""
    currency = UsageRecord.currency
    if group_by == "day":
        # The day in UTC whatever the session's time zone.
        day = cast(func.timezone("UTC", UsageRecord.created_at), Date).label("key")
        return select(day, *_sums()).group_by(day, currency)
    if group_by in ("model", "request_type"):
        col = UsageRecord.model if group_by == "model" else UsageRecord.request_type
        return select(col.label("key"), *_sums()).group_by(col, currency)
    ref, named, name = _NAMED[group_by]  # user, provider, agent, api_key
    shown = name.label("username" if group_by == "user" else "label")
    return (select(ref.label("key"), shown, *_sums())
            .outerjoin(named, named.c.id == ref)
            .group_by(ref, name, currency))


def _merged(group_by: GroupBy, found: Iterable[Any]) -> list[UsageRow]:
    """The rows per key and currency as one row per key, each currency's cost kept apart,
    in the report's order: days oldest first, anything else most requests first."""
    merged: dict[Any, dict[str, Any]] = {}
    for r in found:
        row = merged.setdefault(r["key"], {
            "username": r.get("username"), "label": r.get("label"), "requests": 0,
            "tokens_input": 0, "tokens_output": 0, "credits_used": 0, "failures": 0,
            "latency_sum": 0, "latency_n": 0, "costs": {}})
        for name in ("requests", "tokens_input", "tokens_output", "credits_used", "failures",
                     "latency_sum", "latency_n"):
            row[name] += int(r[name])
        costs = row["costs"]
        costs[r["currency"]] = costs.get(r["currency"], _ZERO) + Decimal(r["cost"])
    rows = []
    for key, row in merged.items():
        cost, currency = single_cost(row["costs"])
        n = row["latency_n"]
        rows.append(UsageRow(
            key=key.isoformat() if isinstance(key, date) else str(key) if key is not None else None,
            username=row["username"], requests=row["requests"],
            tokens_input=row["tokens_input"], tokens_output=row["tokens_output"],
            credits_used=row["credits_used"],
            avg_latency_ms=round(row["latency_sum"] / n, 1) if n else None,
            failures=row["failures"], cost=cost, label=row["label"], currency=currency,
            costs=row["costs"]))
    return _in_report_order(group_by, rows)


def _in_report_order(group_by: GroupBy, rows: list[UsageRow]) -> list[UsageRow]:
    """Days oldest first, anything else most requests first (then by name): the order of
    both sources, PostgreSQL's and ClickHouse's."""
    if group_by == "day":
        rows.sort(key=lambda r: r.key or "")
    else:
        rows.sort(key=lambda r: (-r.requests, r.username or r.label or r.key or ""))
    return rows


async def _names(session: AsyncSession, group_by: GroupBy,
                 keys: Iterable[str | None]) -> dict[str, str]:
    """The username or name of each key that is an id of ``group_by``'s table (as the
    PostgreSQL report joins it), for keys found elsewhere (ClickHouse)."""
    if group_by not in _NAMED:
        return {}
    _, named, name = _NAMED[group_by]
    ids: set[uuid.UUID] = set()
    for key in keys:
        try:
            if key is not None:
                ids.add(uuid.UUID(key))
        except ValueError:  # not an id (an event written by hand): stays unnamed
            continue
    if not ids:
        return {}
    found = await session.execute(select(named.c.id, name).where(named.c.id.in_(ids)))
    return {str(i): n for i, n in found.tuples()}


def _reader_scope(actor: Principal, user_id: uuid.UUID | None) -> tuple[bool, uuid.UUID | None]:
    """(whether ``actor`` may read any usage, whose): an administrator reads ``user_id``'s
    (None: everyone's), anyone else only their own, and naming another user is a 403."""
    if actor.is_admin:
        return True, user_id
    if user_id is not None and user_id != actor.user_id:
        raise Forbidden("only administrators may read another user's usage")
    return actor.user_id is not None, actor.user_id


async def usage_report(
    session: AsyncSession, actor: Principal, *, group_by: GroupBy = "day",
    since: str | None = None, until: str | None = None, user_id: uuid.UUID | None = None,
) -> UsageReport:
    if group_by not in GROUP_BYS:
        raise Unprocessable(f"group_by must be one of {', '.join(GROUP_BYS)}")
    start, end = resolve_range(since, until)
    stmt = _grouped(group_by).where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
    allowed, whose = _reader_scope(actor, user_id)
    if not allowed:
        return UsageReport(group_by, start, end, [])
    if whose is not None:
        stmt = stmt.where(UsageRecord.user_id == whose)
    return UsageReport(group_by, start, end,
                       _merged(group_by, (await session.execute(stmt)).mappings()))


async def clickhouse_report(
    session: AsyncSession, settings: Settings, actor: Principal, *,
    group_by: GroupBy = "day", since: str | None = None, until: str | None = None,
    user_id: uuid.UUID | None = None,
) -> UsageReport:
    """The same report from the analytics export (``llm.call`` events in ClickHouse or
    chDB): what has been shipped so far; only the names of users, providers, agents and
    API keys are read from PostgreSQL (``session``)."""
    if group_by not in GROUP_BYS or group_by == "request_type":
        choices = ", ".join(g for g in GROUP_BYS if g != "request_type")
        raise Unprocessable(f"with source=clickhouse, group_by must be one of {choices}")
    start, end = resolve_range(since, until)
    allowed, whose = _reader_scope(actor, user_id)
    if not allowed:
        return UsageReport(group_by, start, end, [])
    found = await usage_from_clickhouse(settings, group_by, start, end, whose)
    names = await _names(session, group_by, (r["key"] for r in found))
    rows = []
    for r in found:
        key = None if r["key"] is None else str(r["key"])
        # The name in PostgreSQL, as the ledger's report joins it; else the provider's
        # name an event written before llm.call carried provider_id gave.
        name = names.get(key) if key is not None else None
        rows.append(UsageRow(
            key=key, username=name if group_by == "user" else None,
            requests=int(r["requests"]), tokens_input=int(r["tokens_input"]),
            tokens_output=int(r["tokens_output"]), credits_used=int(r["credits"]),
            avg_latency_ms=None, failures=int(r["failures"]), cost=Decimal(r["cost"]),
            label=None if group_by == "user" else name or r.get("name")))
    return UsageReport(group_by, start, end, _in_report_order(group_by, rows))


__all__ = ["GROUP_BYS", "GroupBy", "UsageReport", "UsageRow", "clickhouse_report", "usage_report"]
