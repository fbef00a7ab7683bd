"""Request and answer bodies of the memory API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from roost.inputs import StrictInput, is_blank, json_size
from roost.memory.graph import clean
from roost.memory.models import MAX_CONTENT_CHARS

MemoryType = Literal["fact", "preference", "event", "relationship", "skill", "goal", "other"]
# A fact's text, white space around it dropped: one of only white space is no fact (422
# naming content, not the database's check constraint).
def _shows_something(value: str) -> str:
    """Content of invisible characters only (zero-width, word joiner) is blank, as for a
    learned fact: a memory that shows nothing."""
    if is_blank(value):
        raise ValueError("must not be blank (white space or invisible characters only)")
    return value


Content = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=MAX_CONTENT_CHARS),
                    AfterValidator(_shows_something)]

MAX_METADATA_BYTES = 64 * 1024
MAX_GRAPH_ITEMS = 50
"""The entities, and the relationships, one memory may name (POST, extraction, a learned
update's additions)."""
"""A memory's metadata as compact JSON, at most (a project's cap): every list page and
search answer carries it, so one blob must not inflate them."""


def _metadata_size(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and json_size(value) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_metadata_size)]


class ScopeIn(StrictInput):
    """Whose memory: the caller (or, for administrators, ``user_id``), optionally narrowed
    to one persona, agent or chat session."""

    model_config = ConfigDict(extra="forbid")
    refuse_nul = True  # every memory body is stored as text or jsonb (its subclasses too)

    user_id: uuid.UUID | None = Field(default=None, description="Administrators only; default: you")
    persona_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = Field(default=None, description="A chat session")


def _fits_once_clean(value: str) -> str:
    """A name is stored as :func:`roost.memory.graph.clean` spells it: composed (NFC), which
    lengthens some scripts' characters (U+0958 is two code points), and it was then cut at
    255, losing its end (and the word a search looked for)."""
    if len(clean(value)) > 255:
        raise ValueError("must be at most 255 characters once composed (NFC)")
    return value


SENT_NAME_CHARS: Final = 4 * 255
"""A name as sent may be longer than as stored (255): decomposed (200 "é" sent as e and a
combining accent are 400 code points), padded with what cleaning drops.  The limit holds
for the name cleaned (``_fits_once_clean``); this bounds what is sent."""

EntityName = Annotated[str, Field(min_length=1, max_length=SENT_NAME_CHARS),
                       AfterValidator(_fits_once_clean)]


def _fits_once_composed(limit: int) -> Any:
    """A relation or an entity type fits ``limit`` characters as the graph stores it
    (:func:`roost.memory.graph.clean`: composed, which lengthens some scripts): it was cut
    there, the memory's JSON keeping the whole.  (One that cleans to nothing makes no
    relation, and is the type ``thing``.)"""
    def check(value: str) -> str:
        if len(clean(value)) > limit:
            raise ValueError(f"must be at most {limit} characters once composed (NFC)")
        return value
    return AfterValidator(check)


class EntityIn(StrictInput):
    model_config = ConfigDict(extra="forbid")
    refuse_nul = True

    name: EntityName
    type: Annotated[str, _fits_once_composed(64)] = Field(default="thing", min_length=1,
                                                      max_length=4 * 64)


class RelationshipIn(StrictInput):
    model_config = ConfigDict(extra="forbid")
    refuse_nul = True

    source: EntityName
    relation: Annotated[str, _fits_once_composed(128)] = Field(min_length=1,
                                                               max_length=4 * 128)
    target: EntityName


class MemoryCreate(ScopeIn):
    content: Content
    memory_type: MemoryType = "fact"
    confidence: float = Field(default=0.8, ge=0, le=1)
    entities: list[EntityIn] = Field(default_factory=list, max_length=MAX_GRAPH_ITEMS)
    relationships: list[RelationshipIn] = Field(default_factory=list, max_length=MAX_GRAPH_ITEMS)
    metadata: Metadata = Field(default_factory=dict)
    valid_from: datetime | None = Field(default=None, description="Default: now")


class MemoryUpdate(StrictInput):
    model_config = ConfigDict(extra="forbid")
    refuse_nul = True

    content: Content | None = None
    memory_type: MemoryType | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    metadata: Metadata | None = None
    reason: str | None = Field(default=None, max_length=1000)


class ForgetIn(ScopeIn):
    include_narrower: bool = Field(
        default=False, description="Also the user's memories narrowed to a persona, agent or "
        "session (when the scope names none of them); never another user's")


class MemoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    persona_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    session_id: uuid.UUID | None
    content: str
    memory_type: str
    entities: list[Any]
    relationships: list[Any]
    confidence: float
    access_count: int
    last_accessed: datetime | None
    status: str
    valid_from: datetime
    valid_to: datetime | None
    invalidated_by_id: uuid.UUID | None
    archived_at: datetime | None
    source_type: str
    source_id: uuid.UUID | None
    run_id: uuid.UUID | None
    embedding_model: str | None
    metadata: dict[str, Any] = Field(validation_alias="memory_metadata")
    created_at: datetime
    updated_at: datetime


class HistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    memory_id: uuid.UUID
    event: str
    old_content: str | None
    new_content: str | None
    old_confidence: float | None
    new_confidence: float | None
    reason: str | None
    actor_id: uuid.UUID | None
    related_memory_id: uuid.UUID | None
    created_at: datetime


class ForgetOut(BaseModel):
    deleted: int


# --- recall and the graph (roost.memory.recall, roost.memory.graphq) ----------------------


class RecalledOut(BaseModel):
    """A memory found by a search: the final score and each signal's raw value (null:
    not found by that signal)."""

    memory: MemoryOut
    score: float = Field(description="Fused rank x confidence x recency")
    vector: float | None = Field(description="Cosine similarity to the query's embedding")
    text: float | None = Field(description="Full-text rank (ts_rank_cd)")
    graph: float | None = Field(description="1: linked to an entity the query names; "
                                "0.5: to one of its neighbours")


class SearchOut(BaseModel):
    model: str | None = Field(description="Embedding model of the vector signal; null: "
                              "no embedder (full-text and graph only)")
    items: list[RecalledOut]


class EntityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    entity_type: str
    user_id: uuid.UUID
    persona_id: uuid.UUID | None


class EntitySummaryOut(EntityOut):
    current_relations: int
    all_relations: int


class EdgeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    source_id: uuid.UUID
    source_name: str
    relation: str
    target_id: uuid.UUID
    target_name: str
    valid_from: datetime
    valid_to: datetime | None
    memory_id: uuid.UUID | None
    current: bool = False


class NeighbourOut(BaseModel):
    entity: EntityOut
    depth: int
    edges: list[EdgeOut]


class NeighboursOut(BaseModel):
    entity: EntityOut
    items: list[NeighbourOut]


class PathOut(BaseModel):
    hops: int
    entities: list[EntityOut]
    edges: list[EdgeOut]


class HistoryEdgeOut(EdgeOut):
    memory_content: str | None


class EntityHistoryOut(BaseModel):
    entity: EntityOut
    items: list[HistoryEdgeOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= to get the next page; null on the last page")


# --- learning (roost.memory.learning) -------------------------------------------------------

MAX_LEARN_CHARS = 32_000
"""Longest text one learn call reads (a chat transcript keeps its most recent part)."""


class LearnIn(ScopeIn):
    """Learn from ``text`` or from a chat session's transcript (exactly one), into the scope
    named (default: your own memory; ``session_id`` narrows it to a chat session, which
    ``chat_session_id`` alone does not)."""

    text: str | None = Field(default=None, min_length=1, max_length=MAX_LEARN_CHARS)
    chat_session_id: uuid.UUID | None = Field(
        default=None, description="A chat session of the scope's user: learn from its messages")
    model: str | None = Field(default=None, min_length=1, max_length=255,
                              description="Model for extraction and reconciliation; default: "
                              "the providers' default")

    @model_validator(mode="after")
    def _one_source(self) -> LearnIn:
        if (self.text is None) == (self.chat_session_id is None):
            raise ValueError("give exactly one of text and chat_session_id")
        if self.text is not None and is_blank(self.text):
            raise ValueError("text must not be blank")
        return self


class LearnOut(BaseModel):
    task_id: uuid.UUID = Field(description="The memory.learn job (GET /api/v1/tasks/{id})")
    source_type: str
    source_id: uuid.UUID | None


class LearnTaskOut(BaseModel):
    """A learn job as its owner sees it: ``result`` (when completed) lists the memory ids
    added, updated, invalidated and unchanged; ``error`` says why it failed."""

    task_id: uuid.UUID
    status: str
    error: str | None
    result: dict[str, Any] | None
    created_at: datetime
    completed_at: datetime | None
