"""Request and response shapes of the chat API (``/api/v1/chat``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from roost.chat.models import TOOL_CALL_ID_CHARS
from roost.inputs import StrictInput, no_nul
from roost.llm.schemas import EnsembleSpec, ModelName, UsageOut
from roost.llm.types import ToolCall

MessageRole = Literal["system", "developer", "user", "assistant", "tool"]
SessionStatus = Literal["active", "archived", "expired"]
# A message's plain-text fields are stored (or sent on) as text, which holds no NUL: a 422
# naming the field.  Its content and tool calls are encrypted, so the body does not refuse
# NUL everywhere (``refuse_nul``); content has its own check (roost.chat.messages).
PlainText = Annotated[str, BeforeValidator(no_nul)]


class SessionCreate(StrictInput):
    model_config = ConfigDict(extra="forbid")
    refuse_nul = True  # stored as text, which holds no NUL: a 422 naming the field

    title: str | None = Field(default=None, max_length=256)
    # As an agent's preferred model: blank or multi-line names are a 422.
    model: Annotated[ModelName, Field(max_length=128)] | None = Field(
        default=None, description="Model to chat with")
    enable_tools: bool = True
    external_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Your own identifier for the session (unique per owner)",
    )
    expires_at: datetime | None = None
    owner_id: uuid.UUID | None = Field(
        default=None, description="Owner (administrators only; default: the caller)"
    )
    project_id: uuid.UUID | None = Field(default=None, description="A project you can see")


class SessionUpdate(StrictInput):
    model_config = ConfigDict(extra="forbid")
    refuse_nul = True  # stored as text, which holds no NUL: a 422 naming the field

    title: str | None = Field(default=None, max_length=256)
    model: Annotated[ModelName, Field(max_length=128)] | None = None
    enable_tools: bool | None = None
    external_id: str | None = Field(default=None, min_length=1, max_length=64)
    status: SessionStatus | None = None
    expires_at: datetime | None = None
    project_id: uuid.UUID | None = None


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    external_id: str | None
    title: str | None
    model: str | None
    enable_tools: bool
    status: str
    message_count: int
    request_count: int
    last_activity_at: datetime | None
    expires_at: datetime | None
    project_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class ContextPassage(StrictInput):
    """An excerpt the caller retrieved (e.g. from ``POST /api/v1/knowledge/search``) for the
    model to answer from."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=300, description="Where it comes from (shown to the model)")
    text: str = Field(min_length=1, max_length=8000)


class MessageCreate(StrictInput):
    """A new message.  By default the configured model answers it (``reply``)."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(description="Message text (stored encrypted)")
    role: MessageRole = "user"
    reply: bool = Field(
        default=True, description="Ask the model for the assistant's answer (role 'user' only)"
    )
    stream: bool = Field(default=False, description="Answer as server-sent events")
    model: PlainText | None = Field(default=None, max_length=255, description="Default: the session's")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[PlainText] | None = Field(default=None, max_length=4)
    ensemble: EnsembleSpec | None = None
    tool_call_name: PlainText | None = Field(default=None, max_length=256)
    tool_call_id: PlainText | None = Field(default=None, max_length=TOOL_CALL_ID_CHARS)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    conversation_domain: PlainText | None = Field(default=None, max_length=64)
    plan_step: int | None = Field(default=None, ge=0, le=2_147_483_647)
    confidence_score: float | None = Field(default=None, ge=0, le=1)
    embedding_model_used: PlainText | None = Field(default=None, max_length=128)
    context: list[ContextPassage] | None = Field(
        default=None, max_length=12,
        description="Excerpts for this answer only (retrieval-augmented chat): given to the "
                    "model before the message, not stored in the conversation",
    )


class MessageOut(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID
    seq: int = Field(description="Position in the session (1, 2, ...)")
    role: str
    content: str
    tool_call_name: str | None
    tool_call_id: str | None
    tool_calls: list[ToolCall] | None
    tokens_in: int | None
    tokens_out: int | None
    model: str | None
    llm_request_id: uuid.UUID | None
    conversation_domain: str | None
    plan_step: int | None
    confidence_score: float | None
    embedding_model_used: str | None
    created_at: datetime


class ExchangeOut(BaseModel):
    """A posted message and, when the model was asked, its answer."""

    user_message: MessageOut
    assistant_message: MessageOut | None = None
    request_id: uuid.UUID | None = None
    provider: str | None = None
    usage: UsageOut | None = None
    run_id: uuid.UUID | None = Field(default=None, description="The agent's run, when an agent answered")


class StateOut(BaseModel):
    session_id: uuid.UUID
    state: dict[str, Any]
    version: int
    updated_at: datetime | None


class StatePut(StrictInput):
    model_config = ConfigDict(extra="forbid")
    refuse_nul = True  # jsonb holds no NUL, in a key or a value: a 422 naming "state"

    state: dict[str, Any]
    expected_version: int | None = Field(
        default=None, ge=0,
        description="Refuse (409) unless the stored version is this one (0: no state yet)",
    )


class HistoryEventCreate(StrictInput):
    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(
        default="message", pattern=r"^[a-z][a-z0-9_.:-]{0,63}$",
        description="e.g. message, meeting_start, expert_response, stream_complete",
    )
    message: dict[str, Any] = Field(
        description="The event (role, content, metadata ...), stored encrypted"
    )


class HistoryEventOut(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID
    event_type: str
    message: dict[str, Any]
    created_at: datetime


class SummaryOut(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID
    started_at: datetime
    ended_at: datetime
    message_count: int
    total_tokens_used: int | None
    conversation_domain: str | None
    summary: str
    key_topics: list[Any]
    decisions_made: list[Any]
    user_preferences: dict[str, Any]
    tools_used: list[Any]
    plans_created: int
    expert_questions_asked: int
    session_rating: float | None
    complexity_level: str
    resolution_status: str
    search_keywords: list[Any]
    follow_up_suggested: bool
    follow_up_tasks: list[Any]
    model: str | None
    llm_request_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class SummaryUpdate(StrictInput):
    model_config = ConfigDict(extra="forbid")
    refuse_nul = True  # stored as text and jsonb, which hold no NUL: a 422 naming the field

    session_rating: float | None = Field(default=None, ge=0, le=5)
    resolution_status: Literal["completed", "partial", "unresolved", "abandoned"] | None = None
    complexity_level: Literal["low", "medium", "high"] | None = None
    conversation_domain: str | None = Field(default=None, max_length=64)
    follow_up_suggested: bool | None = None
    follow_up_tasks: list[Any] | None = Field(default=None, max_length=100)


class SummaryRequested(BaseModel):
    session_id: uuid.UUID
    task_id: uuid.UUID | None = Field(description="The queued job (null when done inline)")
    status: str
    summary: SummaryOut | None = None
