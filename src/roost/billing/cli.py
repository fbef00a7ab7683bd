"""``roost billing plans|subscribe|subscriptions|cancel|prices|invoice`` and ``roost usage``.

Commands act as the operator (administrator) unless they say otherwise; they call the
same services as the API."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing import usage
from roost.clitools import add_text_row, fail, print_table, with_database
from roost.config import get_settings
from roost.db.engine import Database
from roost.errors import NotFound, RoostError
from roost.identity.accounts import find_user
from roost.principal import OPERATOR

console = Console()
billing_app = typer.Typer(help="Plans, subscriptions, model prices and invoices.",
                          no_args_is_help=True)


def usage_command(
    group_by: Annotated[str, typer.Option("--by", "-b", help="day, user, model, provider, "
                                          "agent, api_key or request_type.")] = "day",
    since: Annotated[str | None, typer.Option(help="ISO date or timestamp (default: 30 days "
                                              "ago).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date (through its end) or timestamp "
                                              "(default: now).")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's usage "
                                             "(username or e-mail).")] = None,
    source: Annotated[str, typer.Option(help="postgres (the ledger) or clickhouse (the "
                                        "analytics export).")] = "postgres",
) -> None:
    """Usage and cost from the ledger, as a table (everyone's unless --user)."""
    if group_by not in usage.GROUP_BYS:
        raise fail("bad --by", f"use one of {', '.join(usage.GROUP_BYS)}")
    if source not in ("postgres", "clickhouse"):
        raise fail("bad --source", "use postgres or clickhouse")
    grouping: usage.GroupBy = group_by  # narrowed by the check above
    settings = get_settings()

    async def go(db: Database) -> usage.UsageReport:
        # As the operator with the user as a filter: acting as the user would show an
        # administrator everyone's usage, and a suspended user's none.
        async with db.transaction() as session:
            user_id = None if user is None else await _user_id(session, user)
            if source == "clickhouse":
                return await usage.clickhouse_report(session, settings, OPERATOR,
                                                     group_by=grouping, since=since,
                                                     until=until, user_id=user_id)
            return await usage.usage_report(session, OPERATOR, group_by=grouping, since=since,
                                            until=until, user_id=user_id)

    try:
        report = with_database(go)
    except RoostError as exc:
        raise fail("usage", exc.detail) from None
    _print(report, source)


async def _user_id(session: AsyncSession, login: str) -> uuid.UUID:
    """The id of the account ``login`` names (username or e-mail), whatever its status."""
    found = await find_user(session, login)
    if found is None:
        raise NotFound(f"no user {login!r}")
    return found.id


def _print(report: usage.UsageReport, source: Literal["postgres", "clickhouse"] | str) -> None:
    table = Table(title=f"Usage by {report.group_by}, {report.since:%Y-%m-%d %H:%M} to "
                        f"{report.until:%Y-%m-%d %H:%M} UTC ({source})")
    table.add_column(report.group_by, overflow="fold")
    for name in ("requests", "tokens in", "tokens out", "credits", "cost", "failures"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in report.rows:
        key = row.username or row.label or row.key or "(none)"
        add_text_row(table, key, f"{row.requests:,}", f"{row.tokens_input:,}",
                     f"{row.tokens_output:,}", f"{row.credits_used:,}",
                     _cost_text(row.cost, row.currency, row.costs), f"{row.failures:,}")
    totals = report.totals()
    table.add_section()
    table.add_row("total", f"{totals['requests']:,}", f"{totals['tokens_input']:,}",
                  f"{totals['tokens_output']:,}", f"{totals['credits_used']:,}",
                  _cost_text(totals["cost"], totals["currency"], totals["costs"]),
                  f"{totals['failures']:,}")
    print_table(console, table)


def _cost_text(cost: Decimal | None, currency: str | None, costs: dict[str, Decimal]) -> str:
    """``1.500000 USD``; amounts in several currencies side by side, never added."""
    if cost is None:
        return " + ".join(f"{amount:.6f} {name}" for name, amount in sorted(costs.items()))
    return f"{cost:.6f}" + (f" {currency}" if currency else "")


def register(app: typer.Typer) -> None:
    """Add ``roost billing`` and ``roost usage`` to ``app``."""
    from roost.billing import invoice_cli, plans_cli

    plans_cli.add_commands(billing_app)
    invoice_cli.add_commands(billing_app)
    app.add_typer(billing_app, name="billing")
    app.command("usage")(usage_command)
