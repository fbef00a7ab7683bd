"""Prompt categories stored composed (NFC).

A category typed decomposed ("cafe" and a combining accent) was a second category that
looks like the composed one: ``?category=`` found only the form typed.  New categories are
stored NFC (``roost.prompts.schemas.composed``) and filters compose theirs; this composes
the stored ones (a version's category is not part of what the immutability trigger
guards), but none that composing makes longer than the column.  ``normalize()`` needs a
UTF-8 database; on any other encoding nothing is changed.

Revision ID: 1380
Revises: 1370
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1380"
down_revision: str | Sequence[str] | None = "1370"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(r"""
DO $$
BEGIN
  IF (SELECT pg_encoding_to_char(encoding) FROM pg_database
      WHERE datname = current_database()) <> 'UTF8' THEN
    RETURN;
  END IF;
  UPDATE system_prompts SET prompt_category = normalize(prompt_category, NFC)
   WHERE prompt_category IS DISTINCT FROM normalize(prompt_category, NFC)
     AND char_length(normalize(prompt_category, NFC)) <= 100;
END $$;
""")


def downgrade() -> None:
    pass  # composed categories are valid categories: nothing to undo
