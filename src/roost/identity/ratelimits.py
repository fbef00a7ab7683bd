"""Rate limits and quotas: requests per minute and concurrent streams, per user and per
API key, shared by every Roost process through PostgreSQL (docs/operations.md, "Rate
limits and quotas").

The limits of a request come with its authentication: the resolver's one statement also
reads the user's and the key's overrides (``rate_limit_rpm``, ``rate_limit_streams``,
NULL = the settings' default, 0 = unlimited), so when nothing is limited the check costs
no round trip at all.  When something is:

- **Requests per minute** use GCRA (the generic cell rate algorithm): one timestamp per
  subject (``u:<user id>``, ``k:<key id>``), the "theoretical arrival time".  A request is
  allowed while that time, advanced by ``60 / limit`` seconds, stays within a minute of
  now; so ``limit`` requests may come at once, then one every ``60 / limit`` seconds.
  ``roost_rate_take`` (migration 0940) checks and charges all the request's subjects in
  one statement, or none of them, and says how long to wait when refused.  The row keeps
  the limit it was charged under (migration 1230): after an administrator's change the
  time is rescaled to the new pace, so the change applies on the next request.
- **Concurrent streams** are leases: ``roost_stream_acquire`` counts a subject's live
  leases under an advisory lock and inserts one per subject when every subject has room.
  The holder renews its lease every third of ``ROOST_RATE_LIMIT_LEASE_S`` and deletes it
  when the stream ends; a crashed process's leases expire on their own.

Both run on a small connection pool of their own in autocommit: a counter's row lock
lasts one statement, not the request's transaction (which would serialise a user's
concurrent requests), a request that fails later still counts, and a request never
waits for a second connection from the pool it already holds one of.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

import structlog
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from roost.audit.service import record
from roost.config import Settings
from roost.db.base import utcnow, uuid7
from roost.db.engine import discard_closed, engine_options
from roost.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unprocessable
from roost.identity.common import lock_owner_quota
from roost.identity.models import ApiKey, RateLimitState, User
from roost.identity.models import StreamLease as StreamLeaseRow
from roost.principal import Principal

log = structlog.get_logger(__name__)

SubjectPath = Literal["users", "api-keys"]
"""How routes name the kind of subject: /api/v1/admin/limits/{users|api-keys}/{id}."""

PERIOD_S = 60.0
STREAM_RETRY_AFTER_S = 5
"""Retry-After of a refused stream: a slot frees whenever one of the caller's streams ends,
which no one can predict; clients should back off rather than spin."""


def effective(override: int | None, default: int) -> int:
    """An override (NULL = the default, 0 = unlimited) applied to the default."""
    return default if override is None else override


@dataclass(frozen=True)
class RequestLimits:
    """What limits one authenticated request: ``(subject, limit)`` pairs, limit > 0."""

    requests: tuple[tuple[str, int], ...]
    streams: tuple[tuple[str, int], ...]

    @classmethod
    def build(
        cls, principal: Principal, settings: Settings, *, user_rpm: int | None,
        user_streams: int | None, key_rpm: int | None, key_streams: int | None,
        key_family: uuid.UUID | None = None,
    ) -> RequestLimits | None:
        """``None`` when nothing limits this principal (the usual case: no cost).

        The settings' defaults apply to each user (all their credentials together); an
        API key is limited only by an override of its own, within its user's limits,
        counted on its family's counters (``key_family``, the first key of the keys made
        with one another: a key minted with a throttled key spends that key's minute, not
        a fresh one)."""
        requests: list[tuple[str, int]] = []
        streams: list[tuple[str, int]] = []
        subjects: list[tuple[str, int, int]] = []
        if principal.user_id is not None:
            subjects.append((f"u:{principal.user_id}",
                             effective(user_rpm, settings.rate_limit_requests_per_minute),
                             effective(user_streams, settings.rate_limit_streams)))
        if principal.api_key_id is not None:
            subjects.append((f"k:{key_family or principal.api_key_id}", key_rpm or 0,
                             key_streams or 0))
        for subject, rpm, count in subjects:
            if rpm > 0:
                requests.append((subject, rpm))
            if count > 0:
                streams.append((subject, count))
        if not requests and not streams:
            return None
        return cls(tuple(requests), tuple(streams))


def _split(pairs: Sequence[tuple[str, int]]) -> tuple[list[str], list[int]]:
    return [s for s, _ in pairs], [n for _, n in pairs]


# A refused stream slot is asked for again after these pauses (0.2 s in all) before the
# 429: long enough for a stream that just ended to give its slot back.
ACQUIRE_RETRY_S: Final = (0.02, 0.04, 0.06, 0.08)


class Limiter:
    """The shared counters, on a small autocommit pool of their own (built on first use)."""

    def __init__(self, url: URL, settings: Settings) -> None:
        self._url = url
        self._settings = settings
        self._engine: AsyncEngine | None = None
        self.lease_s = float(settings.rate_limit_lease_s)
        # Leases this process holds, so that disposal gives back those whose request was
        # cancelled at shutdown before its own release began (uvicorn cancels the open
        # requests and starts the lifespan's shutdown in the same breath).
        self.held: dict[uuid.UUID, StreamLease] = {}

    def _pool(self) -> AsyncEngine:
        if self._engine is None:
            options = engine_options(self._settings, self._url)
            # Up to ten, opened as needed and kept (engine_options: no overflow connection
            # closed at check-in, so none opened again a few requests later).
            options.update(pool_size=10, max_overflow=0, isolation_level="AUTOCOMMIT")
            self._engine = create_async_engine(self._url, **options)
            discard_closed(self._engine)
        return self._engine

    async def _call(self, sql: str, *args: Any) -> Any:
        async with self._pool().connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            return await driver.fetchval(sql, *args)

    async def take_request(self, limits: RequestLimits) -> None:
        """Charge one request to every subject, or raise 429 (nothing charged)."""
        if not limits.requests:
            return
        subjects, counts = _split(limits.requests)
        wait_s = float(await self._call("SELECT roost_rate_take($1, $2, $3)",
                                        subjects, counts, PERIOD_S))
        if wait_s > 0:
            seconds = max(1, math.ceil(wait_s))
            subject, limit = await self._refusing(limits.requests)
            raise TooManyRequests(
                f"rate limit reached: {_whose(subject)} limit of {limit} requests per minute; "
                f"try again in {seconds} s", extra={"retry_after_s": seconds})

    async def give_back(self, limits: RequestLimits) -> None:
        """Undo :meth:`take_request`'s charge, for a request the database then refused to
        serve as charged (a credential revoked or changed since this process remembered
        it): GCRA's time moves back one request's spacing.  One row a statement, so no
        two rows are ever locked in another order than ``roost_rate_take``'s."""
        for subject, limit in limits.requests:
            await self._call(
                "UPDATE rate_limit_state SET tat = tat - make_interval(secs => "
                "$2::double precision / coalesce(per_period, $3)) WHERE subject = $1 "
                "RETURNING 1",
                subject, PERIOD_S, limit)

    async def _refusing(self, pairs: Sequence[tuple[str, int]]) -> tuple[str, int]:
        """Which of a refused request's subjects refused it (the one with the longest
        wait; ``roost_rate_take`` keeps a refused request's times): a round trip more
        only when both the user and the key are limited."""
        if len(pairs) > 1:
            subjects, counts = _split(pairs)
            refusing = await self._call(
                "SELECT v.s FROM unnest($1::text[], $2::int[]) AS v(s, l) "
                "JOIN rate_limit_state r ON r.subject = v.s "
                "ORDER BY extract(epoch FROM r.tat - clock_timestamp()) + $3 / v.l DESC "
                "LIMIT 1", subjects, counts, PERIOD_S)
            for subject, limit in pairs:
                if subject == refusing:
                    return subject, limit
        return pairs[0]

    async def acquire_stream(self, limits: RequestLimits) -> StreamLease | None:
        """A lease on one stream slot in every subject, or 429; ``None`` when unlimited."""
        if not limits.streams:
            return None
        subjects, counts = _split(limits.streams)
        lease_id = uuid7()
        for wait_s in (*ACQUIRE_RETRY_S, None):
            taken = await self._call("SELECT roost_stream_acquire($1, $2, $3, $4)",
                                     lease_id, subjects, counts, self.lease_s)
            if taken or wait_s is None:
                break
            # The client's previous stream may have just ended: its slot is given back
            # after its last byte is sent, and a quick client's next request can arrive
            # first (a 429 now and then for a client that never had two streams open).
            await asyncio.sleep(wait_s)
        if not taken:
            raise TooManyRequests(
                f"too many open streams (at most {_describe(limits.streams)} at once); "
                "close one or try again later",
                extra={"retry_after_s": STREAM_RETRY_AFTER_S})
        lease = StreamLease(self, lease_id)
        self.held[lease_id] = lease
        lease.start()
        return lease

    async def renew(self, lease_id: uuid.UUID) -> None:
        await self._call("UPDATE stream_leases SET expires_at = clock_timestamp() "
                         "+ make_interval(secs => $2) WHERE id = $1", lease_id, self.lease_s)

    async def release(self, lease_id: uuid.UUID) -> None:
        await self._call("DELETE FROM stream_leases WHERE id = $1", lease_id)

    async def dispose(self) -> None:
        if _releasing:  # leases being given back by requests cancelled at shutdown
            await asyncio.gather(*_releasing, return_exceptions=True)
        if self.held:  # requests cancelled before their release began
            await asyncio.gather(*(lease.release() for lease in list(self.held.values())),
                                 return_exceptions=True)
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _describe(pairs: Sequence[tuple[str, int]]) -> str:
    return " and ".join(f"{n} for the {'API key' if s.startswith('k:') else 'user'}"
                        for s, n in pairs)


def _whose(subject: str) -> str:
    return "the API key's" if subject.startswith("k:") else "your account's"


# Lease releases still running after their request was cancelled.
_releasing: set[asyncio.Task[None]] = set()


class StreamLease:
    """One held stream slot: renewed in the background until :meth:`release`."""

    def __init__(self, limiter: Limiter, lease_id: uuid.UUID) -> None:
        self.id = lease_id
        self._limiter = limiter
        self._renewer: asyncio.Task[None] | None = None
        self._released = False

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew(), name=f"roost-stream-lease-{self.id}")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._limiter.lease_s / 3)
            with contextlib.suppress(Exception):  # a missed renewal only shortens the lease
                await self._limiter.renew(self.id)

    async def release_whatever_happens(self) -> None:
        """:meth:`release`, run to its end even when the caller is cancelled meanwhile
        (a server stopping cancels its open requests after its grace time: a release cut
        short left the slot taken until the lease expired).  The limiter's disposal waits
        for such releases."""
        task = asyncio.ensure_future(self.release())
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)
        await asyncio.shield(task)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._limiter.held.pop(self.id, None)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        try:
            await self._limiter.release(self.id)
        except Exception as exc:  # the response is already sent; the lease will expire
            log.warning("stream_lease_not_released", lease=str(self.id),
                        error=type(exc).__name__)


async def prune(session: AsyncSession) -> int:
    """Forget idle counters (a theoretical arrival time in the past counts as no row) and
    expired leases; identity's hourly clean-up runs this, as the connecting role."""
    idle = await session.execute(
        delete(RateLimitState).where(RateLimitState.tat < func.now() - timedelta(minutes=10)))
    leases = await session.execute(delete(StreamLeaseRow).where(StreamLeaseRow.expires_at < func.now()))
    return int(idle.rowcount) + int(leases.rowcount)  # type: ignore[attr-defined]


# --- administration: overrides per user and per key ----------------------------------------


@dataclass(frozen=True)
class Override:
    """A user's or key's overrides (``None`` = the default) and what applies."""

    kind: str  # "user" or "api_key"
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    requests_per_minute: int | None
    streams: int | None
    effective_requests_per_minute: int
    effective_streams: int


def _override(row: User | ApiKey, settings: Settings) -> Override:
    """A key without an override of its own has no limit of its own (its user's apply)."""
    is_user = isinstance(row, User)
    default_rpm = settings.rate_limit_requests_per_minute if is_user else 0
    default_streams = settings.rate_limit_streams if is_user else 0
    return Override(
        kind="user" if is_user else "api_key", id=row.id,
        user_id=row.id if isinstance(row, User) else row.user_id,
        name=row.username if isinstance(row, User) else f"{row.name} ({row.prefix})",
        requests_per_minute=row.rate_limit_rpm, streams=row.rate_limit_streams,
        effective_requests_per_minute=effective(row.rate_limit_rpm, default_rpm),
        effective_streams=effective(row.rate_limit_streams, default_streams),
    )


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("rate limits are set by an administrator")


# An API key that still authenticates (as the resolver's lookup checks it).
_KEY_LIVE = (ApiKey.revoked_at.is_(None),
             or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()))


async def list_overrides(
    session: AsyncSession, principal: Principal, settings: Settings
) -> list[Override]:
    """Every user and live API key (neither revoked nor expired: they authenticate no
    more) with an override, users first."""
    _require_admin(principal)
    users = (await session.scalars(
        select(User).where(or_(User.rate_limit_rpm.is_not(None),
                               User.rate_limit_streams.is_not(None))).order_by(User.username)
    )).all()
    keys = (await session.scalars(
        select(ApiKey).where(or_(ApiKey.rate_limit_rpm.is_not(None),
                                 ApiKey.rate_limit_streams.is_not(None)),
                             *_KEY_LIVE)
        .order_by(ApiKey.user_id, ApiKey.name)
    )).all()
    return [_override(u, settings) for u in users] + [_override(k, settings) for k in keys]


async def get_limits(
    session: AsyncSession, principal: Principal, settings: Settings, kind: str, row_id: uuid.UUID
) -> Override:
    _require_admin(principal)
    return _override(await _load(session, kind, row_id), settings)


async def _load(session: AsyncSession, kind: str, row_id: uuid.UUID) -> User | ApiKey:
    row: User | ApiKey | None
    if kind == "user":
        row = await session.get(User, row_id, with_for_update=True)
    else:
        row = await session.get(ApiKey, row_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no such {'user' if kind == 'user' else 'API key'}")
    return row


async def set_limits(
    session: AsyncSession, principal: Principal, settings: Settings, kind: str,
    row_id: uuid.UUID, *, requests_per_minute: int | None, streams: int | None,
) -> Override:
    """Replace a user's or key's overrides (``None`` = back to the default); audited.
    Takes effect on the subject's next request, in every process."""
    _require_admin(principal)
    for value, field in ((requests_per_minute, "requests_per_minute"), (streams, "streams")):
        if value is not None and value < 0:
            raise Unprocessable(f"{field} must be 0 (unlimited) or more", extra={"field": field})
    if kind != "user":  # after a key being made with it now (it reads the limits set)
        owner = await session.scalar(select(ApiKey.user_id).where(ApiKey.id == row_id))
        if owner is not None:
            await lock_owner_quota(session, owner, "api_keys")
    row = await _load(session, kind, row_id)
    if isinstance(row, ApiKey) and (row.revoked_at is not None or (
            row.expires_at is not None and row.expires_at <= utcnow())):
        raise Conflict("the API key is revoked or expired: it authenticates no more, so "
                       "its limits cannot be set")
    before = {"requests_per_minute": row.rate_limit_rpm, "streams": row.rate_limit_streams}
    after = {"requests_per_minute": requests_per_minute, "streams": streams}
    if before != after:
        row.rate_limit_rpm, row.rate_limit_streams = requests_per_minute, streams
        await session.flush()
        changes: dict[str, object] = {"before": before, "after": after}
        if isinstance(row, ApiKey):  # the keys made with it keep its limits (as at minting)
            changes["keys_made_with_it"] = await _set_descendants(session, row)
        await record(
            session, "rate_limit.updated", user_id=principal.user_id,
            resource_type=kind, resource_id=row.id, changes=changes,
        )
    return _override(row, settings)


async def _set_descendants(session: AsyncSession, key: ApiKey) -> int:
    """Give the keys made with ``key`` (transitively) its limits; how many there are.  A
    key minted before an administrator throttled its parent is throttled with it."""
    made = select(ApiKey.id.label("id")).where(ApiKey.parent_key_id == key.id) \
        .cte("made", recursive=True)
    made = made.union(select(ApiKey.id).join(made, ApiKey.parent_key_id == made.c.id))
    changed = await session.execute(
        update(ApiKey).where(ApiKey.id.in_(select(made.c.id)))
        .values(rate_limit_rpm=key.rate_limit_rpm, rate_limit_streams=key.rate_limit_streams)
        .execution_options(synchronize_session=False))
    return int(changed.rowcount)  # type: ignore[attr-defined]
