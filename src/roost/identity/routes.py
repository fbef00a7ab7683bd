"""Identity HTTP API (thin: parse, call the service, shape the answer)."""

from __future__ import annotations

from fastapi import APIRouter

from roost.identity import resolver as _resolver  # noqa: F401  (registers the bearer resolver)

router = APIRouter()
