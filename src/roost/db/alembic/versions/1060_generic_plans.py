"""generic_plans: ``roost_chat_history`` runs its statements with generic plans (``SET
plan_cache_mode = force_generic_plan`` on the function; the confirmation and scope it
calls inherit it while they run).

PL/pgSQL prepares each statement once per connection, but with the default
``plan_cache_mode = auto`` a statement whose parameters are the function's arguments is
planned again on every call as long as the generic plan's estimate looks costlier than
the custom plans'.  The page's statement (a session by its key, its newest messages on
the ``(session_id, seq)`` index beside it) always was, and planning was half its
database time: 0.46-0.58 ms of database CPU a page before, 0.23-0.24 after (a loop of
pages on eight connections; docs/benchmarks.md).  Its statements look rows up by a
unique key or an index prefix, for which the generic plan is the custom one.
(``roost_confirm_principal`` and ``roost_store_chat_message`` measured no difference:
their statements plan cheaply, or their time is their writes.)

Revision ID: 1060
Revises: 1050
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1060"
down_revision: str | Sequence[str] | None = "1050"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = "roost_chat_history(jsonb, jsonb, uuid, uuid, integer, integer)"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {_FUNCTION} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {_FUNCTION} RESET plan_cache_mode")
