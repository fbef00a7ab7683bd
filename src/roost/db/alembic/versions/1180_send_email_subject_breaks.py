"""The built-in send_email's subject refuses every line break, as the mail API does.

Migration 0600 stored the tool's input schema with the subject pattern ``^[^\\r\\n\\x00]*$``,
while ``POST /personas/{id}/emails`` (``EmailSend``) refuses every character Python's email
package breaks a header line at (vertical tab, form feed, FS/GS/RS, NEL, U+2028, U+2029).
A model that put U+2028 in a subject passed the tool's validation and failed later, as a
failed step; the stored schema, which the model reads, now says what is refused.

Revision ID: 1180
Revises: 1170
Create Date: 2026-12-05
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1180"
down_revision: str | Sequence[str] | None = "1170"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEND_EMAIL_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000601")  # 0600's
BEFORE = "^[^\\r\\n\\x00]*$"
AFTER = "^[^\\x00\\n\\r\\x0b\\x0c\\x1c-\\x1e\\x85\\u2028\\u2029]*$"  # mail_schemas.SUBJECT_PATTERN

SET = sa.text(
    "UPDATE tools SET input_schema = jsonb_set(input_schema, '{properties,subject,pattern}', "
    "to_jsonb(CAST(:pattern AS text))) "
    "WHERE id = :id AND kind = 'builtin' AND input_schema #> '{properties,subject}' IS NOT NULL"
)


def upgrade() -> None:
    op.execute(SET.bindparams(id=SEND_EMAIL_ID, pattern=AFTER))


def downgrade() -> None:
    op.execute(SET.bindparams(id=SEND_EMAIL_ID, pattern=BEFORE))
