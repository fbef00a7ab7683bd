"""invoices_keep_subscription: an invoice keeps the id of the subscription it billed,
without a foreign key.

``invoices.subscription_id`` was ``ON DELETE RESTRICT`` while the subscription goes with
its user or group (``ON DELETE CASCADE``): a user or a group that had ever been invoiced
could not be deleted (409), though docs/billing.md says a deleted user's invoices are
kept with ``user_id`` cleared. An issued invoice is a document: it keeps its number,
lines, plan and the subscription's id as history (as the usage ledger keeps its user's,
migration 1100); ``user_id`` and ``group_id`` are cleared as before, so a deleted
owner's invoices are visible to administrators only.

Revision ID: 1130
Revises: 1120
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1130"
down_revision: str | Sequence[str] | None = "1120"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "fk_invoices_subscription_id_subscriptions"


def upgrade() -> None:
    op.drop_constraint(_KEY, "invoices", type_="foreignkey")


def downgrade() -> None:
    # Invoices of subscriptions deleted meanwhile cannot name them again as a key: they
    # are kept, and the key is created NOT VALID (checked for new rows only).
    op.execute(f"ALTER TABLE invoices ADD CONSTRAINT {_KEY} FOREIGN KEY (subscription_id) "
               "REFERENCES subscriptions (id) ON DELETE RESTRICT NOT VALID")
