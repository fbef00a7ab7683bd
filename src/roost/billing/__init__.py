"""Billing: plans, subscriptions, credit reservations, the idempotent usage ledger
(``usage_records``), model prices, invoices and Stripe.  docs/billing.md."""
