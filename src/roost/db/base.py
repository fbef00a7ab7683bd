"""Declarative base, UUIDv7 ids and the column conventions every domain model follows."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, MetaData, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm import relationship as _relationship

# Stable constraint names: autogenerate compares them, and downgrades can drop them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_uuid7_lock = threading.Lock()
_uuid7_last = 0


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), monotonic within this process.

    Python 3.11 has no ``uuid.uuid7``; ids are generated in the application so that
    inserts need no round trip and index pages fill in order.
    """
    global _uuid7_last
    with _uuid7_lock:
        ms = time.time_ns() // 1_000_000
        # 12 bits of sub-millisecond counter keep ids from one process strictly increasing.
        candidate = ms << 12
        if candidate <= _uuid7_last:
            candidate = _uuid7_last + 1
        _uuid7_last = candidate
    ms, seq = candidate >> 12, candidate & 0xFFF
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        uuid.UUID: PG_UUID(as_uuid=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
        int: BigInteger,
    }


class UUIDPrimaryKey:
    """``id`` as an application-generated UUIDv7."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)


class CreatedAt:
    created_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), default=utcnow, nullable=False
    )


class Timestamps(CreatedAt):
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow, nullable=False
    )


def relationship(*args: Any, **kwargs: Any) -> Any:
    """``sqlalchemy.orm.relationship`` with ``lazy="raise"`` by default.

    An implicit lazy load in async code is an N+1 query at best and a MissingGreenlet
    error at worst; loading must be explicit (``selectinload``) so tests catch it.
    """
    kwargs.setdefault("lazy", "raise")
    return _relationship(*args, **kwargs)
