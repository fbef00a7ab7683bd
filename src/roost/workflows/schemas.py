"""Request bodies and answers of the workflows API.

``nodes``, ``edges`` and ``viewport`` are taken as any JSON (lists of objects, an object)
and stored unchanged: the graph validator (roost.workflows.graph) says what is wrong,
naming the node or edge, rather than a generic body error.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from roost.inputs import StrictInput, no_nul
from roost.workflows.graph import composed_graph

WorkflowStatus = Literal["draft", "active", "archived"]
MAX_NAME_CHARS = 100  # workflows.name, checked once stripped (roost.workflows.service._name)
# A name as sent may be longer than as stored: white space and invisible characters at its
# ends are dropped first.  This only bounds what is sent.
SENT_NAME_CHARS = 4 * MAX_NAME_CHARS
NAME = Field(min_length=1, max_length=SENT_NAME_CHARS)
DESCRIPTION = Field(default=None, max_length=10_000)
# The graph's own fields may not refuse NUL generically (the graph validator names the
# node or edge); the workflow's texts do, naming the field.
Text = Annotated[str, BeforeValidator(no_nul)]


class GraphIn(StrictInput):
    """A graph as an XYFlow canvas saves it (``toObject()``: nodes, edges, viewport)."""

    nodes: list[Any] = Field(default_factory=list)
    edges: list[Any] = Field(default_factory=list)
    viewport: dict[str, Any] | None = Field(
        default=None, description="{x, y, zoom}; default {x: 0, y: 0, zoom: 1}")

    @model_validator(mode="after")
    def _composed(self) -> Self:
        self.nodes, self.edges = composed_graph(self.nodes, self.edges)
        return self


class WorkflowCreate(GraphIn):
    name: Text = NAME
    description: Text | None = DESCRIPTION
    project_id: uuid.UUID | None = None


class WorkflowUpdate(StrictInput):
    """What is given changes; a graph given in part (only ``nodes``) keeps the rest."""

    name: Text | None = Field(default=None, min_length=1, max_length=SENT_NAME_CHARS)
    description: Text | None = DESCRIPTION
    project_id: uuid.UUID | None = None
    nodes: list[Any] | None = None
    edges: list[Any] | None = None
    viewport: dict[str, Any] | None = None
    status: WorkflowStatus | None = None

    @model_validator(mode="after")
    def _composed(self) -> Self:
        # Assigned only when given: model_fields_set tells a PATCH what it changes.
        if self.nodes is not None:
            self.nodes = composed_graph(self.nodes, [])[0]
        if self.edges is not None:
            self.edges = composed_graph([], self.edges)[1]
        return self


class PublishIn(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL
    note: str | None = Field(default=None, max_length=2000,
                             description="What changed, kept with the version")


class RollbackIn(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL
    version: int = Field(ge=1, le=1_000_000_000,
                         description="The version whose graph becomes the draft")


class IssueOut(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    edge_id: str | None = None


class ValidationOut(BaseModel):
    valid: bool
    errors: list[IssueOut]
    node_count: int
    edge_count: int


class WorkflowSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    project_id: uuid.UUID | None
    name: str
    description: str | None
    status: WorkflowStatus
    latest_version: int
    created_at: datetime
    updated_at: datetime


class WorkflowOut(WorkflowSummary):
    nodes: list[Any]
    edges: list[Any]
    viewport: dict[str, Any]


class VersionSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    workflow_id: uuid.UUID
    version: int
    content_hash: str
    published_by: uuid.UUID | None
    note: str | None
    created_at: datetime


class VersionOut(VersionSummary):
    nodes: list[Any]
    edges: list[Any]
    viewport: dict[str, Any]


class ChangedItem(BaseModel):
    id: str
    fields: list[str] = Field(description="Top-level keys that differ (data, position...)")


class ItemsDiff(BaseModel):
    added: list[str]
    removed: list[str]
    changed: list[ChangedItem]


class DiffOut(BaseModel):
    workflow_id: uuid.UUID
    from_version: int | Literal["draft"]
    to_version: int | Literal["draft"]
    nodes: ItemsDiff
    edges: ItemsDiff
    viewport_changed: bool


# --- runs (roost.workflows.runs) -------------------------------------------------------------

MAX_INPUT_JSON_CHARS = 100_000


class WorkflowRunCreate(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="The run's input variables: the names the start node's data.inputs lists")
    version: int | None = Field(default=None, ge=1, le=1_000_000_000,
                                description="The version to run; default the newest")
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=255,
        description="A second request with the same key returns the first run")


class ApprovalIn(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL
    approved: bool
    comment: str | None = Field(default=None, max_length=2000)


class NodeStepOut(BaseModel):
    """One node's activation in a run (a ``run_steps`` row)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    step_number: int
    node_id: str | None
    node_type: str | None = None
    iteration: int | None
    status: str
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    error: str | None
    task_id: uuid.UUID | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None


class WorkflowRunSummary(BaseModel):
    id: uuid.UUID
    workflow_id: uuid.UUID
    version: int
    status: str
    stop_reason: str | None
    input: dict[str, Any]
    output: str | None
    error_message: str | None
    source: str
    idempotency_key: str | None
    trace_id: str
    steps_count: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    waiting_for: list[str] = Field(
        default_factory=list, description="Approval nodes waiting for a decision")


class WorkflowRunOut(WorkflowRunSummary):
    steps: list[NodeStepOut]
    outputs: dict[str, Any] = Field(description="Each end node reached: its output")
