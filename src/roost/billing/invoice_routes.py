"""HTTP routes: invoices under /api/v1/billing (docs/billing.md, "Invoices").

Anyone reads their own invoices (and their groups'), as JSON or PDF; administrators read
all and issue them.  Another user's invoice is a 404, as is an unknown one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Query, Response, status
from pydantic import BaseModel, ConfigDict

from roost.billing import invoices
from roost.billing.invoice_pdf import invoice_document, render_invoice_pdf
from roost.billing.models import Invoice
from roost.http.auth import AdminPrincipal, CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit, SettingsDep
from roost.http.responses import attachment_disposition
from roost.http.routing import RoostRouter
from roost.inputs import StrictInput
from roost.pagination import DEFAULT_LIMIT, Page

router = RoostRouter(prefix="/api/v1/billing", tags=["billing"])

InvoiceStatus = Literal["open", "paid", "void"]


class InvoiceLineOut(BaseModel):
    kind: str
    description: str
    model: str | None = None
    feature: str | None = None
    quantity: int
    tokens_input: int
    tokens_output: int
    credits: int
    amount: Decimal


class InvoiceDraftOut(BaseModel):
    """An invoice as it would be issued now: not stored, no number."""

    subscription_id: uuid.UUID
    plan_id: uuid.UUID
    user_id: uuid.UUID | None
    group_id: uuid.UUID | None
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[InvoiceLineOut]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal


class InvoiceOut(InvoiceDraftOut):
    """An issued invoice: numbered, stored."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: str
    sequence: int
    status: str
    stripe_invoice_id: str | None
    created_at: datetime


class InvoiceIssue(StrictInput):
    subscription_id: uuid.UUID
    period_start: datetime | None = None
    period_end: datetime | None = None


def _config(settings: Any) -> invoices.InvoiceConfig:
    return invoices.InvoiceConfig.from_settings(settings)


def _out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut.model_validate(invoice)


@router.get("/invoices", response_model=Page[InvoiceOut],
            summary="Invoices, newest first: administrators all (filtered), anyone else "
                    "their own and their groups'")
async def list_invoices(
    principal: CurrentPrincipal, db: DbSession,
    subscription_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None,
    status_: Annotated[InvoiceStatus | None, Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[InvoiceOut]:
    rows, next_cursor = await invoices.list_invoices(
        db, principal, subscription_id=subscription_id, user_id=user_id, status=status_,
        limit=limit, cursor=cursor)
    return Page[InvoiceOut](items=[_out(r) for r in rows], next_cursor=next_cursor)


@router.post("/invoices", status_code=status.HTTP_201_CREATED, response_model=InvoiceOut,
             summary="Issue the invoice of a subscription's period (administrators); the "
                     "current period unless one is given; an issued invoice is returned "
                     "unchanged; 409 while the period has not ended (unless canceled)")
async def issue_invoice(body: InvoiceIssue, principal: AdminPrincipal, db: DbSession,
                        settings: SettingsDep) -> InvoiceOut:
    invoice = await invoices.issue_current(
        db, principal, body.subscription_id, period_start=body.period_start,
        period_end=body.period_end, config=_config(settings))
    return _out(invoice)


@router.get("/invoices/{invoice_id:uuid}", response_model=InvoiceOut, summary="An invoice")
async def get_invoice(invoice_id: uuid.UUID, principal: CurrentPrincipal,
                      db: DbSession) -> InvoiceOut:
    return _out(await invoices.get_invoice(db, principal, invoice_id))


@router.get("/invoices/{invoice_id:uuid}.pdf", summary="An invoice as PDF (an attachment "
            "named after its number)", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}, "description": "The PDF"}})
async def get_invoice_pdf(invoice_id: uuid.UUID, principal: CurrentPrincipal,
                          db: DbSession) -> Response:
    invoice = await invoices.get_invoice(db, principal, invoice_id)
    doc = await invoice_document(db, invoice)
    data = await asyncio.to_thread(render_invoice_pdf, doc)
    return Response(content=data, media_type="application/pdf", headers={
        "Content-Disposition": attachment_disposition(f"{invoice.number}.pdf")})


@router.get("/subscriptions/{subscription_id:uuid}/invoice-preview",
            response_model=InvoiceDraftOut,
            summary="The invoice of the subscription's current period so far (not stored, "
                    "not numbered)")
async def invoice_preview(subscription_id: uuid.UUID, principal: CurrentPrincipal,
                          db: DbSession, settings: SettingsDep) -> InvoiceDraftOut:
    draft = await invoices.preview_invoice(db, principal, subscription_id,
                                           config=_config(settings))
    return InvoiceDraftOut.model_validate(draft.as_json())
