"""hold_credits_async: ``roost_hold_credits`` commits its hold without waiting for the
WAL flush (``synchronous_commit = off`` for its own implicit transaction).

A hold is visible to every other transaction, and its row lock released, as soon as it
commits, flushed or not: what a concurrent hold sees, and so the guarantee that callers
cannot spend past a limit, does not depend on the flush.  Waiting for it only made the
durability of the hold itself part of every metered call's latency (2.7-3.8 ms per
``fdatasync`` on this machine's disk, up to two of them behind a busy group commit, and
the payer's row locked meanwhile).  What an unflushed hold risks is a crash of
PostgreSQL itself within ``3 x wal_writer_delay`` (0.6 s by default) of the commit: the
hold is then lost with the crash.  Its call's settlement (a durable commit, which also
flushes every hold committed before it) still charges the actual amount
(roost.billing.credits.settle: a hold it cannot find is charged without it), so no usage
is lost; what a lost hold does not do is keep those credits from other holds between
the restart and the settlement (docs/billing.md "Holds commit asynchronously").

Only ``reserve_alone`` calls this function, alone, as the statement of its own implicit
transaction: inside a larger transaction the setting would make that whole transaction's
commit asynchronous.

Revision ID: 1080
Revises: 1070
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1080"
down_revision: str | Sequence[str] | None = "1070"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_FUNCTION = ("'roost_hold_credits(jsonb, uuid, uuid, bigint, text, text, double precision)'"
             "::regprocedure")
_SCOPED = "PERFORM roost_apply_scope(p_scope);\n"
_ASYNC = ("  -- A hold is not money: its commit does not wait for the WAL flush.\n"
          "  PERFORM set_config('synchronous_commit', 'off', true);\n")


def _redefine(old: str, new: str) -> None:
    """The function as the database has it, ``old`` replaced by ``new`` (migration 1020
    wrote the rest)."""
    bind = op.get_bind()
    definition = str(bind.exec_driver_sql(f"SELECT pg_get_functiondef({_FUNCTION})").scalar())
    assert old in definition, "roost_hold_credits is not the function migration 1020 wrote"
    bind.exec_driver_sql(definition.replace(old, new, 1))


def upgrade() -> None:
    _redefine(_SCOPED, _SCOPED + _ASYNC)


def downgrade() -> None:
    _redefine(_SCOPED + _ASYNC, _SCOPED)
