"""HTTP routes: /api/v1/billing (plans, subscriptions, prices, usage, invoices, Stripe)."""

from __future__ import annotations

from roost.http.routing import RoostRouter

router = RoostRouter(prefix="/api/v1/billing", tags=["billing"])
