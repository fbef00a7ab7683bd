"""Audit API shapes."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class AuditRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    seq: int
    created_at: datetime
    user_id: uuid.UUID | None
    persona_id: uuid.UUID | None
    run_id: uuid.UUID | None
    action: str
    event_category: str
    resource_type: str | None
    resource_id: str | None
    # Any JSON: Roost writes objects, but a role that inserts audit records directly may
    # store another JSON value, and the listing must still answer.
    changes: JsonValue
    metadata: JsonValue = Field(validation_alias="event_metadata")
    description: str | None
    ip_address: str | None
    user_agent: str | None
    correlation_id: str | None
    trace_id: str | None
    success: bool
    error_message: str | None


class ChainReportOut(BaseModel):
    ok: bool
    rows_checked: int
    broken_seq: int | None = Field(
        None, description="The first broken record's seq (insertion order, as in the log's "
        "listing), not its chain_seq (its place in the chain, as head_chain_seq).")
    broken_id: uuid.UUID | None = None
    reason: str | None = None
    linked_now: int = Field(0, description="Committed records that were not linked yet and "
                            "that this verification linked before checking.")
    head_chain_seq: int | None = Field(
        None, description="The newest linked record's place in the chain (null: the chain is "
        "empty). With head_hash, keep it outside the database: a later report whose chain "
        "does not hold it shows the newest records were cut off, which the chain alone "
        "cannot show.")
    head_hash: str | None = Field(
        None, description="That record's row_hash, hex.")
