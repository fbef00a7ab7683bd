"""HTTP routes of the personas' mail: the mailbox, one email with its attachments, an
attachment's bytes, sending; and the personas' health time series."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Depends, Query, status
from fastapi.responses import FileResponse

from roost.agents import attachments, health, mail
from roost.agents.mail_schemas import (
    AttachmentOut,
    EmailDetailOut,
    EmailOut,
    EmailSend,
    HealthMetricOut,
)
from roost.db.engine import Database
from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit, SettingsDep, database_dep
from roost.http.responses import Download, attachment_disposition
from roost.http.routing import RoostRouter
from roost.inputs import IsoDatetime
from roost.llm.deps import CallerPrincipal
from roost.pagination import DEFAULT_LIMIT, Page

router = RoostRouter(prefix="/api/v1", tags=["mail"])

# An attachment is whatever a stranger mailed: never rendered in Roost's origin.
DOWNLOAD_HEADERS = {"X-Content-Type-Options": "nosniff",
                    "Content-Security-Policy": "default-src 'none'; sandbox",
                    "Cache-Control": "private, no-store"}


@router.get("/personas/{persona_id:uuid}/emails", response_model=Page[EmailOut],
            summary="The persona's mail, newest first (members)")
async def list_emails(
    persona_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
    thread_id: Annotated[str | None, Query(max_length=998)] = None,
    direction: Literal["inbound", "outbound"] | None = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[EmailOut]:
    rows, next_cursor = await mail.list_emails(db, principal, persona_id, thread_id=thread_id,
                                               direction=direction, limit=limit, cursor=cursor)
    return Page[EmailOut](items=[EmailOut.model_validate(r) for r in rows],
                          next_cursor=next_cursor)


@router.post("/personas/{persona_id:uuid}/emails", status_code=status.HTTP_201_CREATED,
             response_model=EmailOut,
             summary="Send an email from the persona's address (owners and editors)")
async def send_email(
    persona_id: uuid.UUID, body: EmailSend, principal: CallerPrincipal,
    settings: SettingsDep, database: Annotated[Database, Depends(database_dep)],
) -> EmailOut:
    # No request transaction: the relay's answer is awaited with no connection held.
    email = await mail.send_email(database, mail.MailConfig.from_settings(settings), principal,
                                  persona_id, body)
    return EmailOut.model_validate(email)


@router.get("/emails/{email_id}", response_model=EmailDetailOut,
            summary="One email with its bodies and attachments (the persona's members)")
async def get_email(email_id: uuid.UUID, principal: CurrentPrincipal,
                    db: DbSession) -> EmailDetailOut:
    email = await mail.get_email(db, principal, email_id)
    files = await attachments.list_for_email(db, email.id)
    return EmailDetailOut.model_validate({
        **EmailOut.model_validate(email).model_dump(),
        "body_text": email.body_text, "body_html": email.body_html,
        "attachments": [AttachmentOut.model_validate(a) for a in files]})


@router.get("/attachments/{attachment_id}", response_model=AttachmentOut)
async def get_attachment(attachment_id: uuid.UUID, principal: CurrentPrincipal,
                         db: DbSession) -> AttachmentOut:
    return AttachmentOut.model_validate(
        await attachments.get_attachment(db, principal, attachment_id))


@router.get("/attachments/{attachment_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "The bytes, as a download"}},
            summary="An attachment's bytes (Content-Disposition: attachment)")
async def download_attachment(attachment_id: uuid.UUID, principal: CurrentPrincipal,
                              db: DbSession, settings: SettingsDep) -> Download:
    attachment = await attachments.get_attachment(db, principal, attachment_id)
    path = attachments.open_path(settings.data_dir, attachment)
    return Download(path, media_type=attachment.mime_type or attachments.DEFAULT_MIME,
                        headers={**DOWNLOAD_HEADERS,
                                 "Content-Disposition": attachment_disposition(attachment.name)})


@router.get("/personas/{persona_id:uuid}/health", response_model=list[HealthMetricOut],
            summary="The persona's health samples, oldest first (members)")
async def persona_health(
    persona_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
    since: Annotated[IsoDatetime | None, Query(description="From this time (inclusive); "
                                                        "without it, the latest samples")] = None,
    until: Annotated[IsoDatetime | None, Query(description="Before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=health.MAX_SERIES_LIMIT)] = health.DEFAULT_SERIES_LIMIT,
) -> list[HealthMetricOut]:
    rows = await health.series(db, principal, persona_id, since=since, until=until, limit=limit)
    return [HealthMetricOut.model_validate(r) for r in rows]
