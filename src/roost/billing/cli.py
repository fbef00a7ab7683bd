"""``roost billing plans|subscribe|subscriptions|prices|invoice`` and ``roost usage``.

Commands act as the operator (administrator) unless they say otherwise; they call the
same services as the API."""

from __future__ import annotations

import typer

billing_app = typer.Typer(help="Plans, subscriptions, model prices and invoices.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``roost billing`` and ``roost usage`` to ``app``."""
    from roost.billing import invoice_cli, plans_cli

    plans_cli.add_commands(billing_app)
    invoice_cli.add_commands(billing_app)
    app.add_typer(billing_app, name="billing")
