"""Stripe subscription and invoice ids hold up to 255 characters.

Stripe documents its object ids as up to 255 characters, and the webhook reads ids that
long, but ``subscriptions.stripe_subscription_id`` and ``invoices.stripe_invoice_id``
held 100: an event for a subscription found by its ``metadata.roost_subscription_id``
whose Stripe id was longer could not store it, and the webhook answered 400 ("a value is
out of range"), which Stripe retries for days.  Both become ``varchar(255)``
(``roost.billing.models``), a change of the type's length only (no table rewrite).  The
downgrade forgets an id longer than 100 characters (cut, it would name another object).

Revision ID: 1400
Revises: 1390
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1400"
down_revision: str | Sequence[str] | None = "1390"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("subscriptions", "stripe_subscription_id"), ("invoices", "stripe_invoice_id"))


def upgrade() -> None:
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=255),
                        existing_type=sa.String(length=100), existing_nullable=True)


def downgrade() -> None:
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=100),
                        existing_type=sa.String(length=255), existing_nullable=True,
                        postgresql_using=f"CASE WHEN length({column}) <= 100 THEN {column} END")
