"""Request bodies and answers of the personas' mail and health metrics."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator

from roost.inputs import StrictInput

MAX_RECIPIENTS = 50
MAX_BODY_CHARS = 1_000_000
# A subject is one header line: no NUL and none of the line breaks Python's email package
# folds at (str.splitlines: CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029).
SUBJECT_PATTERN = r"^[^\x00\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]*$"


def _checked_addresses(values: list[str]) -> list[str]:
    """Each a deliverable-looking address (syntax only: no DNS), normalized; a header
    injection (CR/LF) or a display name is refused."""
    checked: list[str] = []
    for value in values:
        try:
            checked.append(validate_email(value, check_deliverability=False,
                                          globally_deliverable=False).normalized)
        except EmailNotValidError:
            raise ValueError("each recipient must be a plain email address "
                             "(name@example.org)") from None
        if "=?" in checked[-1].rpartition("@")[0]:
            # An RFC 2047 encoded word, which Python's email package decodes when the
            # header is set: "=?utf-8?q?ceo=40bank.example=2C?=@x" wrote another address.
            raise ValueError("a recipient's name part must not hold an encoded word (=?...?=)")
    return checked


class EmailSend(StrictInput):
    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: str = Field(max_length=998, pattern=SUBJECT_PATTERN)
    body: str = Field(max_length=MAX_BODY_CHARS, pattern=r"^[^\x00]*$")
    in_reply_to: uuid.UUID | None = Field(
        default=None, description="An email of this persona's mailbox the message answers: "
                                  "sets In-Reply-To and References, joins its thread")

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return _checked_addresses(values)


class AttachmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email_id: uuid.UUID | None
    run_id: uuid.UUID | None
    persona_id: uuid.UUID | None
    name: str
    file_size: int
    mime_type: str | None
    sha256: str
    created_at: datetime


class EmailOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    persona_id: uuid.UUID
    run_id: uuid.UUID | None
    direction: Literal["inbound", "outbound"]
    message_id: str | None
    in_reply_to: str | None
    thread_id: str | None
    from_email: str
    to_email: str
    cc: str | None
    bcc: str | None
    subject: str | None
    size_bytes: int | None
    received_at: datetime | None
    sent_at: datetime | None
    created_at: datetime


class EmailDetailOut(EmailOut):
    body_text: str | None = Field(description="The text/plain body")
    body_html: str | None = Field(description="The text/html body as sent: never render it "
                                              "unsanitized")
    attachments: list[AttachmentOut]


class HealthMetricOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    persona_id: uuid.UUID
    measured_at: datetime
    window_s: int | None = Field(description="Seconds the counts cover (since the sample "
                                             "before)")
    active_runs_count: int = Field(description="Runs pending or running at sampling time")
    llm_calls_count: int = Field(description="LLM calls of the persona's runs in the window")
    estimated_cost: Decimal | None = Field(description="Credits of those calls")
    cpu_percent: Decimal | None = Field(description="CPU of the sampling worker process")
    memory_mb: int | None
    memory_percent: Decimal | None
    disk_usage_gb: Decimal | None = Field(description="Used space of the data directory's "
                                                      "file system")
