"""``roost billing plans|subscribe|invoice`` and ``roost usage``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the billing commands to ``app``."""
