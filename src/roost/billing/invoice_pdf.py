"""An invoice as PDF (fpdf2, the core Helvetica font): number, dates, bill-to, plan, the
lines, subtotal, tax and total.  Pure and CPU-bound: callers in the event loop run it in a
thread (``asyncio.to_thread``).  Helvetica covers latin-1 only: any other character is
replaced (``?``), so a username in another script never breaks the rendering.  The
document's dates are the invoice's, so the same invoice renders to the same bytes."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing.invoices import BillTo, bill_to, plan_name
from roost.billing.models import Invoice

# Column widths (mm) of the lines table on an A4 page with 15 mm margins (180 mm).
COLUMNS = (("Description", 74, "L"), ("Qty", 16, "R"), ("Tokens in", 24, "R"),
           ("Tokens out", 24, "R"), ("Credits", 16, "R"), ("Amount", 26, "R"))


@dataclass(frozen=True)
class InvoiceDocument:
    """What the PDF shows (built from an ``Invoice`` row, its plan and its bill-to)."""

    number: str
    issued_at: datetime
    period_start: datetime
    period_end: datetime
    status: str
    currency: str
    plan: str
    bill_to: BillTo
    lines: list[dict[str, Any]]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal


async def invoice_document(session: AsyncSession, invoice: Invoice) -> InvoiceDocument:
    """What the PDF of a stored invoice shows (its plan's name and its bill-to read now)."""
    return InvoiceDocument(
        number=invoice.number, issued_at=invoice.created_at, period_start=invoice.period_start,
        period_end=invoice.period_end, status=invoice.status, currency=invoice.currency,
        plan=await plan_name(session, invoice.plan_id), bill_to=await bill_to(session, invoice),
        lines=list(invoice.lines), subtotal=invoice.subtotal, tax_rate=invoice.tax_rate,
        tax=invoice.tax, total=invoice.total)


def latin1(value: object) -> str:
    """``value`` as text Helvetica can draw: composed first ("e" and a combining accent,
    as macOS keyboards type it, is the latin-1 "é"), then what is outside latin-1 ``?``."""
    return unicodedata.normalize("NFC", str(value)).encode("latin-1", "replace").decode("latin-1")


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """``text`` cut (with ``...``) to fit ``width`` mm with the cell's padding."""
    limit = width - 2 * pdf.c_margin
    if pdf.get_string_width(text) <= limit:
        return text
    while text and pdf.get_string_width(text + "...") > limit:
        text = text[:-1]
    return text + "..."


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _rate(rate: Decimal) -> str:
    percent = (rate * 100).normalize()
    return f"{percent:f}"


def render_invoice_pdf(doc: InvoiceDocument) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_creation_date(doc.issued_at)
    pdf.set_title(latin1(f"Invoice {doc.number}"))
    pdf.set_author("Roost")
    pdf.add_page()

    def text_line(text: str, *, size: float = 10, bold: bool = False, h: float = 6) -> None:
        pdf.set_font("Helvetica", "B" if bold else "", size)
        pdf.cell(0, h, _fit(pdf, latin1(text), pdf.epw), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    text_line(f"Invoice {doc.number}", size=18, bold=True, h=10)
    text_line(f"Issued: {_day(doc.issued_at)}    Status: {doc.status}")
    text_line(f"Period: {_day(doc.period_start)} to {_day(doc.period_end)} (end exclusive)")
    text_line(f"Plan: {doc.plan}")
    pdf.ln(3)
    text_line("Bill to", bold=True)
    text_line(doc.bill_to.name)
    for extra in doc.bill_to.extra:
        text_line(extra)
    if doc.bill_to.email:
        text_line(doc.bill_to.email)
    pdf.ln(4)

    pdf.set_font("Helvetica", "B", 9)
    for title, width, align in COLUMNS:
        pdf.cell(width, 7, title, border="B", align=align)
    pdf.ln(7)
    pdf.set_font("Helvetica", "", 9)
    for line in doc.lines:
        values = (line.get("description", ""), line.get("quantity", ""),
                  line.get("tokens_input", ""), line.get("tokens_output", ""),
                  line.get("credits", ""), f"{line.get('amount', '')} {doc.currency}")
        for (_, width, align), value in zip(COLUMNS, values, strict=True):
            pdf.cell(width, 6, _fit(pdf, latin1(value), width), align=align)
        pdf.ln(6)
    pdf.ln(2)

    label_width = sum(w for _, w, _ in COLUMNS[:-1])
    amount_width = COLUMNS[-1][1]
    for label, amount, bold in (("Subtotal", doc.subtotal, False),
                                (f"Tax ({_rate(doc.tax_rate)} %)", doc.tax, False),
                                ("Total", doc.total, True)):
        pdf.set_font("Helvetica", "B" if bold else "", 10)
        pdf.cell(label_width, 7, latin1(label), align="R",
                 border="T" if label == "Total" else 0)
        pdf.cell(amount_width, 7, latin1(f"{amount} {doc.currency}"), align="R",
                 border="T" if label == "Total" else 0, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


__all__ = ["InvoiceDocument", "invoice_document", "latin1", "render_invoice_pdf"]
