"""Calendar names stored composed (NFC).

A name typed decomposed ("Cafe" and a combining accent) made a second calendar that looks
like the composed one (names are unique per user, compared as stored), and the CLI's
``--calendar NAME`` found only the form typed.  New names are stored NFC
(``roost.calendar.service._name``); this composes the stored ones, the first (by id) of
names that compose alike, and none whose composed form the user's calendars already
hold or that composing makes longer than the column (left as they are: their owner
renames one).  ``normalize()`` needs a UTF-8 database; on any other encoding nothing is
changed.

Revision ID: 1370
Revises: 1360
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1370"
down_revision: str | Sequence[str] | None = "1360"
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
  UPDATE calendars c SET name = composed.name
  FROM (SELECT DISTINCT ON (user_id, normalize(name, NFC)) id, normalize(name, NFC) AS name
          FROM calendars
         WHERE name IS DISTINCT FROM normalize(name, NFC)
           AND char_length(normalize(name, NFC)) <= 255
         ORDER BY user_id, normalize(name, NFC), id) AS composed
  WHERE c.id = composed.id
    AND NOT EXISTS (SELECT 1 FROM calendars o WHERE o.user_id = c.user_id
                    AND o.name = composed.name);
END $$;
""")


def downgrade() -> None:
    pass  # composed names are valid names: nothing to undo
