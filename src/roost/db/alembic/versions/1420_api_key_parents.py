"""API keys remember the key they were made with: revoking a key revokes what it made,
and a key's family shares its rate-limit counters.

A key made with another key (docs/identity.md, "API keys") already expires no later
than that key and keeps its limits, but revoking the parent (the usual answer to a leak)
left every key minted with it working: whoever held the leaked key kept the account
through its children.  ``parent_key_id`` links a key to the key that made it; a
revocation revokes the key and everything made from it, transitively.  Keys made before
this migration have no recorded parent.  ``ON DELETE SET NULL``: the hourly clean-up
deletes keys ended 30 days ago, and a child of a revoked or expired key has ended too.

A minted key also copied its parent's rate limits but counted them on its own, so each
minted key was another full minute for the holder of a throttled key.  ``root_key_id``
names the first key of the family (NULL: the key is its own root); the whole family's
requests and streams count against the root's counters (roost.identity.ratelimits).

Revision ID: 1420
Revises: 1410
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1420"
down_revision: str | Sequence[str] | None = "1410"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column(
        "parent_key_id", postgresql.UUID(as_uuid=True),
        sa.ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_api_keys_parent_key_id_api_keys"),
        nullable=True))
    op.create_index("ix_api_keys_parent_key_id", "api_keys", ["parent_key_id"],
                    postgresql_where=sa.text("parent_key_id IS NOT NULL"))
    op.add_column("api_keys", sa.Column(
        "root_key_id", postgresql.UUID(as_uuid=True),
        sa.ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_api_keys_root_key_id_api_keys"),
        nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "root_key_id")
    op.drop_index("ix_api_keys_parent_key_id", table_name="api_keys")
    op.drop_column("api_keys", "parent_key_id")
