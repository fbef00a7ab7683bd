"""Persona e-mail addresses stored composed (NFC).

Addresses were only lower-cased: a persona created with a decomposed "josé@" (e plus a
combining accent) received nothing sent to the composed form senders write, and another
owner could create the composed twin (the unique index on ``lower(email_address)`` saw
two addresses).  New addresses are stored NFC (``roost.agents.schemas.address_key``);
this composes the stored ones, except one whose composed form another persona already
has (left as it is: its owners must settle which persona keeps the address).
``normalize()`` needs a UTF-8 database; on any other encoding nothing is changed.

Revision ID: 1350
Revises: 1340
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1350"
down_revision: str | Sequence[str] | None = "1340"
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
  UPDATE personas p SET email_address = normalize(lower(p.email_address), NFC)
  WHERE p.email_address IS NOT NULL
    AND p.email_address IS DISTINCT FROM normalize(lower(p.email_address), NFC)
    AND NOT EXISTS (SELECT 1 FROM personas o WHERE o.id <> p.id
                    AND lower(o.email_address) = normalize(lower(p.email_address), NFC));
END $$;
""")


def downgrade() -> None:
    pass  # composed addresses are valid addresses: nothing to undo
