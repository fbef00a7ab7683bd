"""``roost billing invoice USER [--period YYYY-MM] [--pdf FILE] [--json]`` (added by
roost.billing.cli): issues, or shows when it exists, the invoice of a user's subscription
for a period, as the operator, through the same services as the API.

Without ``--period``: the current period if it has ended (or the subscription is
canceled), else the newest invoice already issued, else a preview of the current period
so far (marked as such: not stored, no number).  With ``--period``: the subscription's
period that starts in that month (UTC)."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from dateutil.relativedelta import relativedelta
from rich.console import Console
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing.invoice_pdf import InvoiceDocument, invoice_document, render_invoice_pdf
from roost.billing.invoices import (
    InvoiceConfig,
    InvoiceDraft,
    Period,
    draft_invoice,
    issue_invoice,
)
from roost.billing.models import Invoice, Subscription
from roost.billing.subscriptions import period_step
from roost.clitools import fail, id_table, print_table, run_in_transaction
from roost.db.base import utcnow
from roost.db.cliio import os_reason
from roost.errors import NotFound, Unprocessable
from roost.identity.accounts import find_user
from roost.principal import OPERATOR

console = Console()
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_STEPS_BACK = 600


def parse_month(value: str) -> datetime:
    """The first moment (UTC) of the month ``YYYY-MM``; a month that is not one, or
    whose end is past the calendar's (9999-12), is Unprocessable."""
    match = MONTH.match(value.strip())
    if match is None:
        raise Unprocessable(f"--period must be YYYY-MM, got {value[:20]!r}")
    try:
        month = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
        month + relativedelta(months=1)  # the month's end must be a date too
    except (ValueError, OverflowError):
        raise Unprocessable(f"--period must be a month from 0001-01 to 9999-11, got "
                            f"{value[:20]!r}") from None
    return month


async def _subscription(session: AsyncSession, login: str) -> Subscription:
    user = await find_user(session, login)
    if user is None:
        raise NotFound(f"no user {login!r}")
    sub = await session.scalar(
        select(Subscription).where(Subscription.user_id == user.id)
        .order_by((Subscription.status == "canceled").asc(), Subscription.created_at.desc())
        .limit(1))
    if sub is None:
        raise NotFound(f"{user.username!r} has no subscription: subscribe them first "
                       "(roost billing subscribe)")
    return sub


async def _period_in(session: AsyncSession, sub: Subscription, month: datetime) -> Period:
    step = period_step(sub.billing_period)  # the periods before it: on its terms
    month_end = month + relativedelta(months=1)
    if month >= sub.current_period_end:
        raise Unprocessable(f"{month:%Y-%m} is after the subscription's current period")
    start, end = sub.current_period_start, sub.current_period_end
    for _ in range(MAX_STEPS_BACK):
        if start < month_end:
            break
        start, end = start - step, start
    if not month <= start < month_end or end <= sub.created_at:
        raise NotFound(f"no period of the subscription starts in {month:%Y-%m}")
    return Period(start, end)


async def invoice_for(session: AsyncSession, login: str, month: datetime | None,
                      config: InvoiceConfig) -> Invoice | InvoiceDraft:
    """The invoice (issued now if need be) or, for a period still open, its preview."""
    sub = await _subscription(session, login)
    now = utcnow()
    if month is None:
        period = Period(sub.current_period_start, sub.current_period_end)
        if period.end > now and sub.status != "canceled":
            newest = await session.scalar(
                select(Invoice).where(Invoice.subscription_id == sub.id)
                .order_by(Invoice.period_start.desc()).limit(1))
            return newest or await draft_invoice(session, sub, period, config.tax_rate)
    else:
        existing = await session.scalar(select(Invoice).where(
            Invoice.subscription_id == sub.id, Invoice.period_start >= month,
            Invoice.period_start < month + relativedelta(months=1)))
        if existing is not None:
            return existing
        period = await _period_in(session, sub, month)
        if period.end > now and sub.status != "canceled":
            return await draft_invoice(session, sub, period, config.tax_rate)
    return await issue_invoice(session, sub.id, period.start, period.end, actor=OPERATOR,
                               config=config)


def check_writable(target: Path) -> None:
    """Fail in one line naming ``target`` when it cannot be written (a directory, a
    missing directory, no permission): checked before anything is issued, so a mistyped
    ``--pdf`` issues no invoice."""
    if target.is_dir():
        raise fail("Cannot write the PDF", f"{target}: is a directory")
    if not target.parent.is_dir():
        raise fail("Cannot write the PDF", f"{target}: its directory {target.parent} does "
                   "not exist")
    if not os.access(target if target.exists() else target.parent, os.W_OK):
        raise fail("Cannot write the PDF", f"{target}: permission denied")


def _write_pdf(target: Path, data: bytes, number: str) -> None:
    try:
        target.write_bytes(data)
    except OSError as exc:  # changed since check_writable looked
        raise fail("Cannot write the PDF", f"{target}: {os_reason(exc)} (invoice {number} "
                   "is issued: run the command again to write it)") from None


def _print(title: str, currency: str, lines: list[dict[str, object]], subtotal: object,
           tax_rate: object, tax: object, total: object) -> None:
    console.print(Text(title))
    table = id_table("description", "qty", "tokens in", "tokens out", "credits", "amount",
                     wrap=("description",))
    for line in lines:
        table.add_row(Text(str(line["description"])), str(line["quantity"]),
                      str(line["tokens_input"]), str(line["tokens_output"]),
                      str(line["credits"]), f"{line['amount']} {currency}")
    print_table(console, table)
    console.print(Text(f"subtotal {subtotal} {currency}\ntax ({tax_rate}) {tax} {currency}\n"
                       f"total {total} {currency}"))


def add_commands(billing_app: typer.Typer) -> None:
    """Add ``roost billing invoice`` to ``roost billing``."""

    @billing_app.command("invoice")
    def invoice_command(
        user: Annotated[str, typer.Argument(help="The subscriber: username or e-mail.")],
        period: Annotated[str | None, typer.Option(
            "--period", help="YYYY-MM: the subscription's period that starts in that month "
                             "(UTC); default: the current or last one.")] = None,
        pdf: Annotated[Path | None, typer.Option(
            "--pdf", help="Also write the issued invoice as PDF to this file.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Issue (or show, when it exists) a user's invoice for a period; a period that
        has not ended is shown as a preview, not issued."""
        try:
            month = parse_month(period) if period is not None else None
        except Unprocessable as exc:
            raise fail("Invalid --period", exc.detail) from None
        if pdf is not None:
            check_writable(pdf)
        config = InvoiceConfig.from_settings()

        async def go(session: AsyncSession) -> tuple[Invoice | InvoiceDraft,
                                                     InvoiceDocument | None]:
            found = await invoice_for(session, user, month, config)
            doc = await invoice_document(session, found) if isinstance(found, Invoice) else None
            return found, doc

        found, doc = run_in_transaction(go)
        if isinstance(found, InvoiceDraft):
            if pdf is not None:
                raise fail("Not issued", "the period has not ended: only an issued invoice "
                           "has a PDF")
            if as_json:
                typer.echo(json.dumps({"preview": True, **found.as_json()}, indent=2))
                return
            _print(f"Preview (not issued; the period ends {found.period_end:%Y-%m-%d %H:%M} "
                   f"UTC): {found.period_start:%Y-%m-%d} to {found.period_end:%Y-%m-%d}",
                   found.currency, found.lines_json(), found.subtotal, found.tax_rate,
                   found.tax, found.total)
            return
        if pdf is not None and doc is not None:
            _write_pdf(pdf, render_invoice_pdf(doc), found.number)
        if as_json:
            typer.echo(json.dumps({
                "id": str(found.id), "number": found.number, "status": found.status,
                "subscription_id": str(found.subscription_id),
                "period_start": found.period_start.isoformat(),
                "period_end": found.period_end.isoformat(), "currency": found.currency,
                "lines": found.lines, "subtotal": str(found.subtotal),
                "tax_rate": str(found.tax_rate), "tax": str(found.tax),
                "total": str(found.total)}, indent=2))
            return
        _print(f"Invoice {found.number} ({found.status}): {found.period_start:%Y-%m-%d} to "
               f"{found.period_end:%Y-%m-%d}", found.currency, found.lines, found.subtotal,
               found.tax_rate, found.tax, found.total)
        if pdf is not None:
            console.print(Text(f"PDF written to {pdf}"))
