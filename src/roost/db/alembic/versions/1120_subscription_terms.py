"""subscription_terms: a subscription keeps its plan's terms for the period it is in.

An invoice read the plan's row when it was issued (and the preview when it was asked
for): a plan's new price was billed for periods already running, though a new price
applies from each subscriber's next period (docs/billing.md, "Plans and
subscriptions").  ``subscriptions.price``, ``currency`` and ``billing_period`` now hold
the plan's terms of the current period (its included credits were ``credits_limit``
already), set when it subscribes, renews or changes plan; invoices bill a period from
them.  Existing rows take their plan's current terms.

A row inserted without them (plain SQL, which knows nothing of the terms) takes its
plan's: the ``BEFORE INSERT`` trigger ``subscriptions_terms`` fills what is null.

Revision ID: 1120
Revises: 1110
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "1120"
down_revision: str | Sequence[str] | None = "1110"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Added nullable, filled from each row's plan, then made NOT NULL.
_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "price": sa.Numeric(precision=14, scale=2),
    "currency": sa.String(length=3),
    "billing_period": sa.String(length=16),
}
_CHECKS = (
    ("price_not_negative", "price >= 0"),
    ("currency_iso", "currency ~ '^[A-Z]{3}$'"),
    ("billing_period", "billing_period IN ('month', 'year')"),
)

_FUNCTION = """
CREATE FUNCTION roost_subscription_terms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.price IS NULL OR NEW.currency IS NULL OR NEW.billing_period IS NULL THEN
    SELECT coalesce(NEW.price, p.price), coalesce(NEW.currency, p.currency),
           coalesce(NEW.billing_period, p.billing_period)
      INTO NEW.price, NEW.currency, NEW.billing_period
      FROM plans p WHERE p.id = NEW.plan_id;
  END IF;
  RETURN NEW;
END $$
"""


def upgrade() -> None:
    for name, type_ in _COLUMNS.items():
        op.add_column("subscriptions", sa.Column(name, type_, nullable=True))
    op.execute("UPDATE subscriptions s SET price = p.price, currency = p.currency, "
               "billing_period = p.billing_period FROM plans p WHERE p.id = s.plan_id")
    for name in _COLUMNS:
        op.alter_column("subscriptions", name, nullable=False)
    for name, condition in _CHECKS:
        op.create_check_constraint(op.f(f"ck_subscriptions_{name}"), "subscriptions", condition)
    op.execute(_FUNCTION)
    op.execute("CREATE TRIGGER subscriptions_terms BEFORE INSERT ON subscriptions "
               "FOR EACH ROW EXECUTE FUNCTION roost_subscription_terms()")


def downgrade() -> None:
    op.execute("DROP TRIGGER subscriptions_terms ON subscriptions")
    op.execute("DROP FUNCTION roost_subscription_terms()")
    for name, _ in _CHECKS:
        op.drop_constraint(op.f(f"ck_subscriptions_{name}"), "subscriptions", type_="check")
    for name in reversed(_COLUMNS):
        op.drop_column("subscriptions", name)
