"""A persona keeps its mail, its runs' artifacts and its grants when someone leaves.

Four foreign keys were ``ON DELETE CASCADE`` where the row belongs to the persona, not
to the account or the persona it names:

- ``emails.user_id`` and ``attachments.user_id``: inbound mail is stored as the persona
  owner's, sent mail as its sender's; deleting that account erased the persona's
  mailbox, though a co-owner inherits the persona (docs/agents.md).  Row-level security
  shows mail to the persona's members (``persona_id``), so a NULL ``user_id`` hides
  nothing from them.
- ``attachments.persona_id``: deleting a persona erased its runs' artifacts though its
  runs stay (``runs.persona_id`` is ``SET NULL``); an artifact is then its run user's
  (``roost_row_visible(user_id)``), as the run is.  A mail attachment still goes with its
  email (``email_id`` cascade).
- ``persona_tools.user_id`` (who granted it): deleting an editor's account dropped the
  persona's grants of global tools they had made; a grant of their own tool still goes
  with the tool (``tool_id`` cascade).

All four become ``ON DELETE SET NULL``.

Revision ID: 1250
Revises: 1230
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1250"
down_revision: str | Sequence[str] | None = "1230"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, target table)
_KEYS: tuple[tuple[str, str, str], ...] = (
    ("emails", "user_id", "users"),
    ("attachments", "user_id", "users"),
    ("attachments", "persona_id", "personas"),
    ("persona_tools", "user_id", "users"),
)


def _recreate(ondelete: str) -> None:
    for table, column, target in _KEYS:
        name = f"fk_{table}_{column}_{target}"
        op.drop_constraint(name, table, type_="foreignkey")
        op.create_foreign_key(name, table, target, [column], ["id"], ondelete=ondelete)


def upgrade() -> None:
    _recreate("SET NULL")


def downgrade() -> None:
    # Rows whose account or persona went meanwhile keep their NULLs (the columns are
    # nullable): nothing to repair before the cascades come back.
    _recreate("CASCADE")
