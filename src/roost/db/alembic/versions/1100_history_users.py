"""history_users: the usage ledger and published workflow versions keep the user they
name by id, without a foreign key.

``usage_records.user_id`` was ``ON DELETE CASCADE``: deleting an account erased its
usage ledger (billed model calls and tool calls included), though the ledger is
append-only and invoices (``user_id`` ``SET NULL``) are computed from it.  A call that
answered while its user was deleted could not be written at all.  The rows now keep the
deleted user's id; row-level security (``roost_row_visible(user_id)``) shows a row whose
user is gone to administrators only (no one else's id matches it).

``workflow_versions.published_by`` was ``ON DELETE SET NULL``, an ``UPDATE`` of a row the
``workflow_versions_immutable`` trigger (0810) refuses: anyone who ever published a
workflow could not be deleted (409).  A published version is a history row: it keeps its
publisher's id (the version itself goes with its workflow, its ``user_id`` cascade).

The other user keys of trigger-guarded tables were checked: ``audit_logs`` has none (on
purpose); ``system_prompts.created_by`` is ``SET NULL`` but its trigger (0870) guards
only the text, key, version and owner columns, so clearing it is allowed.

Revision ID: 1100
Revises: 1090
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1100"
down_revision: str | Sequence[str] | None = "1090"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referenced table, ON DELETE before)
_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("usage_records", "user_id", "users", "CASCADE"),
    ("workflow_versions", "published_by", "users", "SET NULL"),
)


def upgrade() -> None:
    for table, column, target, _ in _KEYS:
        op.drop_constraint(f"fk_{table}_{column}_{target}", table, type_="foreignkey")


def downgrade() -> None:
    # Ids of users deleted meanwhile cannot be keys again: cleared (the ledger's rows are
    # kept rather than deleted as the cascade would have; a version's trigger is set
    # aside for its one clearing update).
    op.execute("ALTER TABLE workflow_versions DISABLE TRIGGER workflow_versions_immutable")
    for table, column, target, _ in _KEYS:
        op.execute(f"UPDATE {table} t SET {column} = NULL WHERE {column} IS NOT NULL AND "  # noqa: S608 - constant names
                   f"NOT EXISTS (SELECT 1 FROM {target} x WHERE x.id = t.{column})")
    op.execute("ALTER TABLE workflow_versions ENABLE TRIGGER workflow_versions_immutable")
    for table, column, target, ondelete in _KEYS:
        op.create_foreign_key(f"fk_{table}_{column}_{target}", table, target, [column], ["id"],
                              ondelete=ondelete)
