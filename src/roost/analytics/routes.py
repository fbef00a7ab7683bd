"""HTTP routes: /api/v1/analytics (streaming metrics, the export's state, queries answered
by ClickHouse)."""

from __future__ import annotations

from roost.http.routing import RoostRouter

router = RoostRouter(prefix="/api/v1/analytics", tags=["analytics"])
