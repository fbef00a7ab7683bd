"""Row-level security for the task queue and the embedding-model registry (issue 10).

As ``roost_app`` in a user's scope these tables were readable whole: job payloads name
other users' chat sessions and documents.  Now:

* ``background_tasks`` gets an owner, ``user_id``, filled by default with
  ``roost_current_user_id()`` (the principal of the transaction that enqueues; NULL for
  system work and the operator token).  A user reads and enqueues only their own jobs;
  changing or deleting jobs is for administrators (the admin API) and the owner role
  (workers, schedules, CLI), which RLS does not restrict.
* ``dead_letter_queue``, ``task_schedules`` and ``embedding_models`` hold no user's own
  rows; only administrators (and the owner role) see or change them.

Revision ID: 0410
Revises: 0400
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0410"
down_revision: str | Sequence[str] | None = "0400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADMIN_ONLY = ("dead_letter_queue", "task_schedules", "embedding_models")

POLICIES = (
    "CREATE POLICY background_tasks_select ON background_tasks FOR SELECT "
    "USING (roost_row_visible(user_id))",
    "CREATE POLICY background_tasks_insert ON background_tasks FOR INSERT "
    "WITH CHECK (roost_row_visible(user_id))",
    "CREATE POLICY background_tasks_update ON background_tasks FOR UPDATE "
    "USING (roost_is_admin()) WITH CHECK (roost_is_admin())",
    "CREATE POLICY background_tasks_delete ON background_tasks FOR DELETE "
    "USING (roost_is_admin())",
    *(
        f"CREATE POLICY {t}_admin ON {t} USING (roost_is_admin()) WITH CHECK (roost_is_admin())"
        for t in ADMIN_ONLY
    ),
)


def upgrade() -> None:
    op.add_column(
        "background_tasks",
        sa.Column("user_id", sa.Uuid(), server_default=sa.text("roost_current_user_id()"),
                  nullable=True),
    )
    op.create_index("ix_background_tasks_user_id", "background_tasks", ["user_id"])
    for table in ("background_tasks", *ADMIN_ONLY):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for policy in POLICIES:
        op.execute(policy)


def downgrade() -> None:
    for table in ADMIN_ONLY:
        op.execute(f"DROP POLICY {table}_admin ON {table}")
    for action in ("select", "insert", "update", "delete"):
        op.execute(f"DROP POLICY background_tasks_{action} ON background_tasks")
    for table in ("background_tasks", *ADMIN_ONLY):
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.drop_index("ix_background_tasks_user_id", table_name="background_tasks")
    op.drop_column("background_tasks", "user_id")
