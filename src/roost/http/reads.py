"""``ReadSession``: a read-only transaction on a read replica, scoped to the principal.

A route opts in to replica reads by taking ``ReadSession`` instead of ``DbSession`` and
wrapping its endpoint in :func:`replica_fallback`::

    @router.get("/things", response_model=Page[ThingOut])
    @replica_fallback
    async def list_things(principal: CurrentPrincipal, db: ReadSession, ...) -> Page[ThingOut]:

Only routes whose whole work is reading may do so: the request still authenticates on
the primary (``CurrentPrincipal``'s ``DbSession``: the credential's last-use touch is a
write), and anything the route writes must use ``DbSession``.  The replica transaction
gets the same row-level-security scope as the primary one (``set_config`` and
``SET LOCAL ROLE`` are allowed on a hot standby).

``ReadSession`` *is* the request's primary session when no replica is configured, none
is usable (down, lagging, promoted), the client's last write has not reached any, or the
replica fails while the transaction starts.  A replica that fails later, mid-query, is
marked down and :func:`replica_fallback` runs the endpoint again on the primary session.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roost.db.engine import Database
from roost.db.replicas import WRITE_POSITION, Replica, ReplicaSet, is_replica_failure
from roost.http.auth import Authentication, CurrentPrincipal
from roost.http.deps import DbSession, close_with_request, get_database, get_settings_dep
from roost.principal import Principal

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Methods that do not change state: their requests never count as a client's write.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# request.state key set by read_session: the request only reads (a POST search).
_READS_ONLY = "reads_only"
_WROTE = "wrote_in_read"

# Keys of AsyncSession.info on a replica session.
_REPLICA = "roost.replica"
_REPLICA_SET = "roost.replica_set"
_PRIMARY = "roost.replica_fallback"


async def read_session(
    request: Request, principal: CurrentPrincipal, primary: DbSession
) -> AsyncSession:
    """A replica transaction scoped to ``principal``, else the primary session.  Not a
    generator dependency (those cost FastAPI more per request): a replica session is
    closed, which rolls it back, when the request's primary session ends."""
    setattr(request.state, _READS_ONLY, True)  # a POST search is no write to wait for
    replicas = get_database(request).replicas
    replica = await replicas.pick(replica_client(principal)) if replicas is not None else None
    if replicas is None or replica is None:
        return primary
    session = replica.sessionmaker()
    try:
        await session.begin()
        authentication: Authentication = request.app.state.authentication
        await authentication.scope(session, principal,
                                   app_role=get_settings_dep(request).db_app_role)
    except Exception as exc:
        await _close_quietly(session)
        if not is_replica_failure(exc):
            raise
        replicas.mark_failed(replica, exc)
        log.warning("replica_read_on_primary", replica=replica.name, error=type(exc).__name__)
        return primary
    session.info.update({_REPLICA: replica, _REPLICA_SET: replicas, _PRIMARY: primary})
    close_with_request(primary, session)
    return session


async def _close_quietly(session: AsyncSession) -> None:
    # A replica that went away fails its rollback too; the pool drops the connection.
    with contextlib.suppress(Exception):
        await session.close()


ReadSession = Annotated[AsyncSession, Depends(read_session)]


def replica_fallback(endpoint: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run ``endpoint`` again on the primary when its ``ReadSession``'s replica fails
    mid-request (connection lost, server shutting down, query cancelled by a conflict
    with recovery).  Only for endpoints that only read."""

    @functools.wraps(endpoint)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await endpoint(*args, **kwargs)
        except Exception as exc:
            swapped = _on_primary(kwargs, exc)
            if not swapped:
                raise
        return await endpoint(*args, **kwargs)

    return run


def _on_primary(kwargs: dict[str, object], exc: Exception) -> bool:
    """Swap every replica session in ``kwargs`` for its primary session when ``exc`` is
    the replica's failure; True when one was swapped."""
    if not is_replica_failure(exc):
        return False
    swapped = False
    for name, value in list(kwargs.items()):
        if not isinstance(value, AsyncSession) or _REPLICA not in value.info:
            continue
        replica: Replica = value.info[_REPLICA]
        replica_set: ReplicaSet = value.info[_REPLICA_SET]
        replica_set.mark_failed(replica, exc)
        log.warning("replica_read_retried_on_primary", replica=replica.name,
                    error=type(exc).__name__)
        kwargs[name] = value.info[_PRIMARY]
        swapped = True
    return swapped


def replica_client(principal: Principal) -> str:
    """Whose writes a read must see: the user, else the kind of principal (the operator
    token)."""
    return f"user:{principal.user_id}" if principal.user_id is not None else principal.kind


class ReadYourWritesMiddleware:
    """With replicas, note the primary's WAL position when a state-changing request of an
    authenticated client ends (just before its last body chunk goes out), so that
    client's next reads wait for a replica that has replayed it.

    A middleware rather than the request transaction's commit: chat replies and other
    model-waiting routes write in transactions of their own, streamed ones while the
    answer streams.  One round trip per state-changing request, only with replicas."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        database: Database | None = getattr(scope["app"].state, "db", None)
        if database is None or database.replicas is None:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})  # request.state's dict
        is_read = scope["method"] in READ_METHODS
        noted = False

        def wrote() -> bool:  # a GET counts when its route said it wrote (wrote_in_read)
            return not is_read or bool(state.get(_WROTE))

        async def send_noting(message: Message) -> None:
            nonlocal noted
            if (not noted and message["type"] == "http.response.body"
                    and not message.get("more_body", False)):
                noted = True
                if wrote():
                    await note_client_write(database, state)
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        finally:
            # An error escapes: what was committed before still counts.
            if not noted and wrote():
                await note_client_write(database, state)


def wrote_in_read(request: Request) -> None:
    """A GET that changed rows (recall counts the memories it returns): the client's next
    reads wait for a replica that has it, as after a POST."""
    setattr(request.state, _WROTE, True)


async def note_client_write(database: Database, state: dict[str, Any]) -> None:
    """Remember the primary's WAL insert position for the request's client (set by
    ``current_principal`` in ``request.state``)."""
    principal = state.get("principal")
    if not isinstance(principal, Principal) or state.get(_READS_ONLY) or database.replicas is None:
        return
    try:
        # Straight on the driver: no BEGIN/ROLLBACK around one read of a position.
        async with database.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            lsn = await driver.fetchval(WRITE_POSITION)
    except Exception as exc:  # the write is committed: answer it; the read may lag
        log.warning("replica_write_position_failed", error=type(exc).__name__)
        return
    database.replicas.note_write(replica_client(principal), int(lsn))
