"""Tool analytics: per tool, over a window of time, how often it was called, how often it
failed and how long it took, from ``tool_runs``.

Computed on demand by one grouped query (``percentile_cont`` for p50/p95), not read from
a materialised view: ``bench/tools/analytics.py`` measured both on a million runs
(docs/benchmarks.md, "Tool analytics").  With the covering indexes of migration 0530
the query answers a user in milliseconds and an administrator's busiest window well
within a request, exactly and up to the last run; a view refreshed on the queue would
be minutes stale, could only serve fixed windows (percentiles of two windows do not
combine), and would sit outside row-level security, needing its own filter on every
read.

Scope: a user sees the statistics of their own runs (the service filters on
``user_id`` and row-level security would hide the rest anyway); administrators see
everyone's and may narrow to one user.  A window is ``window`` ("90m", "24h", "7d",
"2w"; default 24 hours) or ``since`` (a timestamp with its UTC offset), at most
``MAX_WINDOW`` long; a run counts when it *started* inside it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from pydantic_core import PydanticCustomError
from sqlalchemy import Float, Select, and_, cast, exists, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import utcnow
from roost.db.lookup import unicode_forms
from roost.errors import Forbidden, NotFound, Unprocessable
from roost.identity.models import User
from roost.inputs import read_as_utc
from roost.principal import Principal
from roost.tools import registry
from roost.tools.models import ToolRun

Sort = Literal["calls", "error_rate", "p95"]
_SORTS: Final[dict[str, Sort]] = {"calls": "calls", "error_rate": "error_rate", "p95": "p95"}
SORTS: Final[tuple[str, ...]] = tuple(_SORTS)
DEFAULT_WINDOW: Final = timedelta(hours=24)
#: Long enough for a month's review; the cost of a query grows with the runs inside it.
MAX_WINDOW: Final = timedelta(days=31)
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 500
#: Windows up to this long are broken down by hour in a tool's detail, longer by day.
HOURLY_UP_TO: Final = timedelta(hours=48)
TOP_ERRORS: Final = 5
ERROR_CHARS: Final = 200

_WINDOW_RE = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
_UNITS: Final = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime


def parse_window(value: str) -> timedelta:
    """``"90m"``, ``"24h"``, ``"7d"``, ``"2w"`` as a duration (422 otherwise)."""
    match = _WINDOW_RE.match(value.strip())
    if match is None:
        raise Unprocessable(
            f"window must be a whole number and a unit, m, h, d or w (e.g. 24h or 7d), "
            f"got {value[:20]!r}"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_since(value: str) -> datetime:
    """An ISO 8601 timestamp (422 otherwise, numbers included); UTC when it names no
    offset."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Unprocessable(
            "since must be an ISO 8601 timestamp, e.g. "
            "2026-12-01T00:00:00Z (in a URL, write + as %2B)"
        ) from None
    return parsed


def resolve_window(
    window: str | None, since: datetime | str | None, *, now: datetime | None = None
) -> Window:
    """The interval ``[since, now)`` that ``window`` or ``since`` names (not both)."""
    until = now or utcnow()
    if window is not None and since is not None:
        raise Unprocessable("give either window or since, not both")
    if isinstance(since, str):
        since = parse_since(since)
    if since is not None:
        try:  # a filter's bound, as on every route (roost.inputs)
            since = read_as_utc(since)
        except PydanticCustomError as exc:  # outside validation nothing makes it a 422
            raise Unprocessable(f"since: {exc.message()}") from None
        if since >= until:
            raise Unprocessable("since must be in the past")
        span = until - since
    else:
        span = parse_window(window) if window is not None else DEFAULT_WINDOW
    # Checked before ``until - span``, which overflows for 999999d (before year 1).
    if span > MAX_WINDOW:
        raise Unprocessable(
            f"the window is too large: at most {MAX_WINDOW.days} days (31d), "
            f"asked for {span.total_seconds() / 86400:.1f} days"
        )
    return Window(since=until - span if since is None else since, until=until)


def check_sort(value: str) -> Sort:
    """``value`` as a sort key (422 naming the choices otherwise)."""
    sort = _SORTS.get(value)
    if sort is None:
        raise Unprocessable(f"sort must be one of {', '.join(SORTS)}")
    return sort


@dataclass(frozen=True)
class ToolStats:
    tool_id: uuid.UUID | None  # as its runs were written (it may name a deleted tool)
    tool_name: str
    calls: int
    successes: int
    errors: int
    timeouts: int
    error_rate: float | None  # (errors + timeouts) / finished calls; None without any
    p50_ms: float | None
    p95_ms: float | None
    last_called_at: datetime | None


@dataclass(frozen=True)
class Bucket:
    start: datetime
    calls: int
    failures: int  # errors and timeouts
    p95_ms: float | None


@dataclass(frozen=True)
class ToolDetail:
    stats: ToolStats
    p99_ms: float | None
    mean_ms: float | None
    max_ms: int | None
    bucket: Literal["hour", "day"]
    series: list[Bucket] = field(default_factory=list)
    top_errors: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    window: Window
    user_id: uuid.UUID | None  # whose runs; None: every user's (administrators)
    items: list[ToolStats]


def _failures() -> Any:
    return func.count().filter(ToolRun.status.in_(("error", "timeout")))


def _aggregates() -> list[Any]:
    finished = func.count().filter(ToolRun.status.in_(("success", "error", "timeout")))
    return [
        func.count().label("calls"),
        func.count().filter(ToolRun.status == "success").label("successes"),
        func.count().filter(ToolRun.status == "error").label("errors"),
        func.count().filter(ToolRun.status == "timeout").label("timeouts"),
        (cast(_failures(), Float) / func.nullif(finished, 0)).label("error_rate"),
        # percentile_cont interpolates and ignores NULL durations (runs still going);
        # aggregates with the same ORDER BY share one sort of each tool's durations.
        func.percentile_cont(0.5).within_group(ToolRun.duration_ms).label("p50_ms"),
        func.percentile_cont(0.95).within_group(ToolRun.duration_ms).label("p95_ms"),
        func.max(ToolRun.started_at).label("last_called_at"),
    ]


async def _scope(
    session: AsyncSession, actor: Principal, user_id: uuid.UUID | None
) -> uuid.UUID | None:
    """Whose runs ``actor`` asks about: theirs (users), anyone's or all (administrators)."""
    if not actor.is_admin:
        if user_id is not None and user_id != actor.user_id:
            raise Forbidden("only administrators may see another user's tool statistics")
        if actor.user_id is None:
            raise Forbidden("tool statistics are per user; this principal has none")
        return actor.user_id
    if user_id is not None and await session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    return user_id


def _runs_in(window: Window, user_id: uuid.UUID | None) -> list[Any]:
    where = [ToolRun.started_at >= window.since, ToolRun.started_at < window.until]
    if user_id is not None:
        where.append(ToolRun.user_id == user_id)
    return where


def _stats(row: Any, tool_id: uuid.UUID | None, tool_name: str) -> ToolStats:
    return ToolStats(
        tool_id=tool_id, tool_name=tool_name, calls=int(row.calls),
        successes=int(row.successes), errors=int(row.errors), timeouts=int(row.timeouts),
        error_rate=None if row.error_rate is None else float(row.error_rate),
        p50_ms=None if row.p50_ms is None else float(row.p50_ms),
        p95_ms=None if row.p95_ms is None else float(row.p95_ms),
        last_called_at=row.last_called_at,
    )


async def tool_report(
    session: AsyncSession, actor: Principal, window: Window, *, user_id: uuid.UUID | None = None,
    tool_id: uuid.UUID | None = None, tool_name: str | None = None, sort: Sort = "calls",
    limit: int = DEFAULT_LIMIT,
) -> Report:
    """Per tool called in ``window``: calls, outcomes, error rate, p50/p95 duration,
    sorted by ``sort`` (descending; ties: more calls, then name)."""
    sort = check_sort(sort)
    if not 1 <= limit <= MAX_LIMIT:
        raise Unprocessable(f"limit must be within 1..{MAX_LIMIT}")
    scope = await _scope(session, actor, user_id)
    where = _runs_in(window, scope)
    if tool_id is not None:
        where.append(ToolRun.tool_id == tool_id)
    if tool_name is not None:
        where.append(ToolRun.tool_name.in_(unicode_forms(tool_name)))  # NFC or NFD typed
    grouped = (select(ToolRun.tool_id, ToolRun.tool_name, *_aggregates()).where(and_(*where))
               .group_by(ToolRun.tool_id, ToolRun.tool_name).subquery())
    key = {"calls": grouped.c.calls, "error_rate": grouped.c.error_rate,
           "p95": grouped.c.p95_ms}[sort]
    stmt: Select[Any] = select(grouped).order_by(
        key.desc().nulls_last(), grouped.c.calls.desc(), grouped.c.tool_name, grouped.c.tool_id
    ).limit(limit)
    rows = (await session.execute(stmt)).all()
    if tool_id is not None and not rows:
        # 404 for an unknown or foreign tool; checked only now, on the caller's runs first,
        # in any window: a deleted tool's runs keep its id (no foreign key) and are still
        # its statistics, none of them in this window included (an empty list, not 404).
        carried = [ToolRun.tool_id == tool_id]
        if scope is not None:
            carried.append(ToolRun.user_id == scope)
        if not await session.scalar(select(exists().where(*carried))):
            await registry.get_tool(session, actor, tool_id)
    return Report(window=window, user_id=scope, items=[_stats(r, r.tool_id, r.tool_name) for r in rows])


async def tool_detail(
    session: AsyncSession, actor: Principal, tool_id: uuid.UUID, window: Window,
    *, user_id: uuid.UUID | None = None,
) -> tuple[ToolDetail, uuid.UUID | None]:
    """One tool's statistics in ``window`` with p99, mean and max, a series by hour (by
    day over ``HOURLY_UP_TO``) and its most frequent error messages.  Another tenant's
    tool, or one that does not exist, is 404; a tool never called has zero calls."""
    tool = await registry.get_tool(session, actor, tool_id)
    scope = await _scope(session, actor, user_id)
    where = [*_runs_in(window, scope), ToolRun.tool_id == tool.id]
    summary = (await session.execute(
        select(*_aggregates(),
               func.percentile_cont(0.99).within_group(ToolRun.duration_ms).label("p99_ms"),
               func.avg(ToolRun.duration_ms).label("mean_ms"),
               func.max(ToolRun.duration_ms).label("max_ms"))
        .where(and_(*where))
    )).one()
    stats = _stats(summary, tool.id, tool.name)
    hourly = window.until - window.since <= HOURLY_UP_TO
    step: Any = literal_column("interval '1 hour'" if hourly else "interval '1 day'")
    start = func.date_bin(step, ToolRun.started_at, window.since).label("start")
    buckets = (await session.execute(
        select(start, func.count().label("calls"), _failures().label("failures"),
               func.percentile_cont(0.95).within_group(ToolRun.duration_ms).label("p95_ms"))
        .where(and_(*where)).group_by(start).order_by(start)
    )).all()
    message = func.left(ToolRun.error, ERROR_CHARS).label("message")
    errors = (await session.execute(
        select(message, func.count().label("n"))
        .where(and_(*where), ToolRun.status.in_(("error", "timeout")), ToolRun.error.is_not(None))
        .group_by(message).order_by(text("n DESC"), message).limit(TOP_ERRORS)
    )).all()
    return ToolDetail(
        stats=stats,
        p99_ms=None if summary.p99_ms is None else float(summary.p99_ms),
        mean_ms=None if summary.mean_ms is None else float(summary.mean_ms),
        max_ms=summary.max_ms, bucket="hour" if hourly else "day",
        series=[Bucket(start=b.start, calls=int(b.calls), failures=int(b.failures),
                       p95_ms=None if b.p95_ms is None else float(b.p95_ms)) for b in buckets],
        top_errors=[(str(e.message), int(e.n)) for e in errors],
    ), scope

