"""A chat tool message's ``tool_call_id`` holds up to 1,024 characters.

A chat answer hands the provider's tool call ids back whole (in its encrypted
``tool_calls``), but ``chat_messages.tool_call_id`` held 128 characters: a longer id
could not be answered with a ``tool`` message (422), and a shortened one reached the
provider as a tool result naming no call (400), so the conversation could not go on.
The column becomes ``varchar(1024)`` (``roost.chat.models.TOOL_CALL_ID_CHARS``).  The SQL
functions writing and reading it (``roost_store_chat_message``, migration 1040;
``roost_chat_history``, 1050) take the table's row type and ``text``: they need no change.
The downgrade cuts a longer id to 128 characters.

Revision ID: 1300
Revises: 1290
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1300"
down_revision: str | Sequence[str] | None = "1290"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("chat_messages", "tool_call_id", type_=sa.String(length=1024),
                    existing_type=sa.String(length=128), existing_nullable=True)


def downgrade() -> None:
    op.alter_column("chat_messages", "tool_call_id", type_=sa.String(length=128),
                    existing_type=sa.String(length=1024), existing_nullable=True,
                    postgresql_using="left(tool_call_id, 128)")
