"""Tables of the workflows domain: ``workflows`` (seed 004's table: a user's draft graph,
as an XYFlow canvas saves it) and ``workflow_versions`` (immutable published copies).

``nodes``, ``edges`` and ``viewport`` hold the canvas's JSON unchanged (jsonb).  A
version is never updated: a trigger (migration 0810) refuses ``UPDATE``; it goes only
with its workflow.  Row-level security: both tables are their owner's
(``roost_row_visible(user_id)``; a version copies its workflow's ``user_id``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from roost.agents import models as _agents_models  # noqa: F401 - "runs", for the foreign keys
from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey
from roost.identity import models as _identity_models  # noqa: F401 - "users", for the foreign keys
from roost.workspace import models as _workspace_models  # noqa: F401 - "projects"

WORKFLOW_STATUSES: Final = ("draft", "active", "archived")


class Workflow(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "workflows"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'active', 'archived')", name="status"),
        CheckConstraint("length(btrim(name)) > 0", name="name_not_blank"),
        CheckConstraint("jsonb_typeof(nodes) = 'array'", name="nodes_array"),
        CheckConstraint("jsonb_typeof(edges) = 'array'", name="edges_array"),
        CheckConstraint("latest_version >= 0", name="latest_version_not_negative"),
        Index("ix_workflows_user_created", "user_id", text("created_at DESC")),
        Index("ix_workflows_project_id", "project_id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id",
                                                                    ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    nodes: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"), default=list)
    edges: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"), default=list)
    viewport: Mapped[dict[str, Any]] = mapped_column(
        server_default=text("""'{"x": 0, "y": 0, "zoom": 1}'::jsonb"""),
        default=lambda: {"x": 0, "y": 0, "zoom": 1})
    status: Mapped[str] = mapped_column(String(20), server_default=text("'draft'"),
                                        default="draft")
    # The newest published version's number (0: never published).
    latest_version: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)


class WorkflowVersion(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "workflow_versions"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        Index("uq_workflow_versions_workflow_version", "workflow_id", "version", unique=True),
        Index("ix_workflow_versions_user_id", "user_id"),
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    nodes: Mapped[list[Any]]
    edges: Mapped[list[Any]]
    viewport: Mapped[dict[str, Any]]
    # sha256 of the canonical JSON of nodes, edges and viewport (roost.workflows.graph).
    content_hash: Mapped[str] = mapped_column(String(64))
    # Who published it, by id without a foreign key (migration 1100): a version is history
    # and immutable (a trigger refuses UPDATE), so ON DELETE SET NULL made its publisher
    # impossible to delete.
    published_by: Mapped[uuid.UUID | None]
    note: Mapped[str | None] = mapped_column(Text)


class WorkflowRun(Base):
    """What a workflow run adds to its ``runs`` row (``kind = 'workflow'``): the workflow
    and the version it pins, and the scheduler's state (roost.workflows.engine): which
    edges delivered what to each node so far.  Its steps are ``run_steps`` of type
    ``workflow_node``."""

    __tablename__ = "workflow_runs"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_workflow_runs_workflow_created", "workflow_id", text("created_at DESC")),
        Index("ix_workflow_runs_user_id", "user_id"),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                              primary_key=True)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"))
    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflow_versions.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    state: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"),
                                                  default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"), nullable=False)
