"""Task-queue handlers of the billing domain (listed in ``roost.domains``)."""

from __future__ import annotations
