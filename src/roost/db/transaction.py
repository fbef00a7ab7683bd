"""What one transaction already has: its asyncpg connection and its ``SET LOCAL`` values.

Hot paths (authentication, vector search) talk to the driver connection under the
session's transaction directly, skipping the ORM's per-statement work, and send their
transaction-local settings together with another statement instead of alone.  These
helpers remember, per SQLAlchemy transaction, what has been fetched or set, so a later
step skips the round trip.  Keys are the transaction objects (weakly held): nothing
outlives the transaction, and a pooled connection never carries one request's notes
into another's.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import SessionTransaction

_drivers: weakref.WeakKeyDictionary[SessionTransaction, Any] = weakref.WeakKeyDictionary()
_settings: weakref.WeakKeyDictionary[SessionTransaction, dict[str, str]] = weakref.WeakKeyDictionary()


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction (begun if need be)."""
    transaction = session.sync_session.get_transaction()
    driver = _drivers.get(transaction) if transaction is not None else None
    if driver is None:
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        adapted = raw.dbapi_connection
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement: a
        # statement sent straight to the driver first would run outside the transaction
        # (and its SET LOCALs vanish).  Start it as the adapter would (SQLAlchemy < 2.2;
        # tests/identity/test_core.py fails if this stops working).
        if getattr(adapted, "_transaction", True) is None:
            await adapted._start_transaction()  # type: ignore[union-attr]
        driver = raw.driver_connection
        assert driver is not None
        transaction = session.sync_session.get_transaction()
        if transaction is not None:
            _drivers[transaction] = driver
    return driver


def local_settings(session: AsyncSession) -> Mapping[str, str]:
    """The ``SET LOCAL`` values this transaction has been given through :func:`note_settings`."""
    transaction = session.sync_session.get_transaction()
    return _settings.get(transaction, {}) if transaction is not None else {}


def note_settings(session: AsyncSession, values: Mapping[str, str]) -> None:
    """Record ``SET LOCAL`` values just sent in this transaction."""
    transaction = session.sync_session.get_transaction()
    if transaction is not None:
        _settings.setdefault(transaction, {}).update(values)
