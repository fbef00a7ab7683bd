"""FastAPI dependencies shared by every domain: database session, settings, keys.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread
pool, a thread hop per dependency per request (tests/http/test_dependencies.py keeps it
so).  The plain accessors (``get_database`` …) are for code that holds a ``Request``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.pagination import MAX_LIMIT


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def transaction_settings(request: Request) -> Mapping[str, str]:
    """``SET LOCAL`` values every authenticated request's transaction starts with, sent in
    authentication's round trip (domains add theirs at startup, e.g. knowledge's HNSW
    settings, so a search needs no round trip of its own for them)."""
    values: Mapping[str, str] = getattr(request.app.state, "transaction_settings", {})
    return values


def get_keys(request: Request) -> KeyMaterial:
    keys: KeyMaterial = request.app.state.keys
    return keys


async def database_dep(request: Request) -> Database:
    return get_database(request)


async def settings_dep(request: Request) -> Settings:
    return get_settings_dep(request)


async def keys_dep(request: Request) -> KeyMaterial:
    return get_keys(request)


async def get_session(db: Annotated[Database, Depends(database_dep)]) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed when the route returns without error.

    Used with ``scope="function"`` so the commit happens before the response is sent: a
    failed commit becomes an error answer, never a 200 for data that was not stored.
    """
    async with db.sessionmaker() as session, session.begin():
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(settings_dep)]
KeysDep = Annotated[KeyMaterial, Depends(keys_dep)]

# Query parameters of every list endpoint: `?limit=` and `?cursor=`.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=512)]
