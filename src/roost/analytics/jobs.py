"""Task-queue handlers of the analytics domain (listed in ``roost.domains``)."""

from __future__ import annotations
