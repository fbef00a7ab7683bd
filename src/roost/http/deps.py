"""FastAPI dependencies shared by every domain: database session, settings, keys.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread
pool, a thread hop per dependency per request (tests/http/test_dependencies.py keeps it
so).  The plain accessors (``get_database`` …) are for code that holds a ``Request``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from roost.config import Settings
from roost.db.engine import Database, close_session
from roost.keyfiles import KeyMaterial
from roost.pagination import MAX_LIMIT


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_keys(request: Request) -> KeyMaterial:
    keys: KeyMaterial = request.app.state.keys
    return keys


async def database_dep(request: Request) -> Database:
    return get_database(request)


async def settings_dep(request: Request) -> Settings:
    return get_settings_dep(request)


async def keys_dep(request: Request) -> KeyMaterial:
    return get_keys(request)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed when the route returns without error.

    Used with ``scope="function"`` so the commit happens before the response is sent: a
    failed commit becomes an error answer, never a 200 for data that was not stored.
    The database comes from the request, not from a dependency of its own, and sessions
    opened for the request beside this one (:func:`close_with_request`) are closed here,
    so their dependencies need not be generators: each generator dependency costs FastAPI
    ~50 µs a request (an exit stack and a shielded context manager), a plain one ~13.
    """
    async with request_session(request) as session:
        yield session


@contextlib.asynccontextmanager
async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction (:func:`get_session`'s), also for a route that opens it
    in its body when it turns out to need one: committed when the block ends without
    error."""
    session = get_database(request).sessionmaker()
    try:
        async with session.begin():
            yield session
    finally:
        for other in session.info.pop(_CLOSE_WITH_REQUEST, ()):
            with contextlib.suppress(Exception):  # e.g. a replica that went away
                await other.close()
        await close_session(session)


_CLOSE_WITH_REQUEST = "roost.close_with_request"  # AsyncSession.info key


def close_with_request(request_session: AsyncSession, other: AsyncSession) -> None:
    """Close ``other`` when the request's session (``DbSession``) ends, after the route."""
    request_session.info.setdefault(_CLOSE_WITH_REQUEST, []).append(other)


DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(settings_dep)]
KeysDep = Annotated[KeyMaterial, Depends(keys_dep)]

# Query parameters of every list endpoint: `?limit=` and `?cursor=`.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
# 2,048: the longest cursor the server issues (a price's 255-character model pattern)
Cursor = Annotated[str | None, Query(
    max_length=2048, description="the `next_cursor` of the previous page; absent: the first page")]
