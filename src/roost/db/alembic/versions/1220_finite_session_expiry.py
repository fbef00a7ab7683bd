"""A chat session's expiry is a finite moment.

``expires_at`` given as the first or last moment a timestamp can hold
(``0001-01-01T00:00:00Z``, ``9999-12-31T23:59:59.999999Z``) was stored by asyncpg as
PostgreSQL's ``-infinity`` / ``infinity`` and read back as a naive ``datetime.min`` /
``max``, which no aware moment compares with: every answered post to such a session was a
500.  Requests now keep those moments one microsecond inwards (``roost.inputs.
in_utc_range``); the rows stored before are moved the same way here.  Downgrade leaves
them finite (nothing to undo).

Revision ID: 1220
Revises: 1210
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1220"
down_revision: str | Sequence[str] | None = "1210"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE chat_sessions SET expires_at = CASE WHEN expires_at = 'infinity' "
               "THEN timestamptz '9999-12-31 23:59:59.999998+00' "
               "ELSE timestamptz '0001-01-01 00:00:00.000001+00' END "
               "WHERE expires_at IN ('infinity', '-infinity')")


def downgrade() -> None:
    pass
