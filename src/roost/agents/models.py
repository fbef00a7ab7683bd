"""Agent tables: personas and their members and secrets, agents, runs and their steps,
persona health metrics, the personas' mail (emails, attachments).

One ``agents`` table unites Persona Platform's persona-bound agents (003) and the
user/project agents of seed 004 (``docs/seed-map.toml`` says where each column lives):
every agent has an owner (``user_id``, its creator); ``persona_id`` binds it to a persona
whose editors may then change it too; ``is_public`` lets every user run it (not edit it).

Row-level security (migration 0600) follows ownership and membership: a persona is
visible to its owner and members (``persona_members``: owner, editor, viewer), changed
by owners and editors, deleted by its owner; its secrets are visible (names only, the
API never returns a value) to owners and editors.  Runs and steps are their runner's,
and visible to the persona's members when the agent is persona-bound.  Administrators
see everything.  ``run_steps``, ``emails`` and ``attachments`` carry ``user_id`` and
``persona_id`` copied from their run or persona so the policies need no join.

Durability (roost.agents.runner): a run's steps are numbered 1, 2, … with a unique
``(run_id, step_number)``: a step is committed (``running``) before its model or tool
call starts and finished after, so a resumed run knows exactly what was done.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey
from roost.identity import models as _identity_models  # noqa: F401 - "users", for the foreign keys
from roost.llm.base import MAX_PROVIDER_NAME
from roost.prompts import models as _prompt_models  # noqa: F401 - "system_prompts"
from roost.tools import models as _tools_models  # noqa: F401 - "tools", for the foreign keys
from roost.tools.models import SECRET_TYPES as SECRET_TYPES  # declared where checked
from roost.workspace import models as _workspace_models  # noqa: F401 - "projects"

MEMBER_ROLES: Final = ("owner", "editor", "viewer")
RUN_STATUSES: Final = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_RUN_STATUSES: Final = ("completed", "failed", "cancelled")
STOP_REASONS: Final = ("final", "max_steps", "budget", "timeout", "cancelled", "error")
STEP_TYPES: Final = ("llm_call", "tool_call", "rag_retrieval", "memory_recall", "error",
                     "workflow_node")
# pending and waiting: a workflow node scheduled but not started, or paused for an approval.
STEP_STATUSES: Final = ("pending", "waiting", "running", "completed", "failed", "interrupted",
                        "cancelled")
OPEN_STEP_STATUSES: Final = ("pending", "waiting", "running")
# What a run executes: an agent's loop (roost.agents.runner) or a workflow's graph
# (roost.workflows.engine, whose workflow_runs row extends the run).
RUN_KINDS: Final = ("agent", "workflow")
EMAIL_DIRECTIONS: Final = ("inbound", "outbound")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Persona(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "personas"
    __table_args__ = (
        CheckConstraint("length(btrim(name)) > 0", name="name_not_blank"),
        Index("ix_personas_owner_id", "owner_id"),
        Index("ix_personas_name", "name"),
        Index("uq_personas_email_address", text("lower(email_address)"), unique=True,
              postgresql_where=text("email_address IS NOT NULL")),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str] = mapped_column(Text, server_default=text("''"), default="")
    # A registered LLM provider's name (NULL: the gateway's routing decides) and model.
    default_provider: Mapped[str | None] = mapped_column(String(MAX_PROVIDER_NAME))
    default_model: Mapped[str | None] = mapped_column(String(255))
    fallback_providers: Mapped[list[Any]] = mapped_column(
        server_default=text("'[]'::jsonb"), default=list)
    # Mail to this address (Roost's SMTP listener) reaches the persona's mailbox.
    email_address: Mapped[str | None] = mapped_column(String(320))
    # The agent an inbound mail starts a run of (NULL: mail is only stored).
    email_agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL", use_alter=True))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    # Persona Platform ran each persona in a container; Roost runs them in its workers and
    # keeps the column for a deployment that does (set by an operator, shown as is).
    container_id: Mapped[str | None] = mapped_column(String(255))


class PersonaMember(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "persona_members"
    __table_args__ = (
        CheckConstraint(_in("role", MEMBER_ROLES), name="role"),
        Index("uq_persona_members_persona_user", "persona_id", "user_id", unique=True),
        Index("ix_persona_members_user_id", "user_id"),
    )

    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(50), server_default=text("'editor'"),
                                      default="editor")


class PersonaInvitation(UUIDPrimaryKey, CreatedAt, Base):
    """A persona owner's offer of a membership, pending until the invitee accepts (a
    membership with ``role``) or declines; the persona's owners may revoke it.  Site
    administrators add members directly and make none (``roost.agents.personas``;
    row-level security: migration 1150)."""

    __tablename__ = "persona_invitations"
    __table_args__ = (
        CheckConstraint(_in("role", MEMBER_ROLES), name="role"),
        UniqueConstraint("persona_id", "user_id", name="uq_persona_invitations_persona_user"),
        Index("ix_persona_invitations_user_id", "user_id"),
        Index("ix_persona_invitations_invited_by", "invited_by"),
    )

    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(50), server_default=text("'editor'"),
                                      default="editor")
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))


class Secret(UUIDPrimaryKey, Timestamps, Base):
    """A persona's secret: AES-256-GCM (``SecretBox``) bound to its row, never returned."""

    __tablename__ = "secrets"
    __table_args__ = (
        CheckConstraint(_in("secret_type", SECRET_TYPES), name="secret_type"),
        Index("uq_secrets_persona_type_key", "persona_id", "secret_type", "key_name",
              unique=True),
    )

    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    secret_type: Mapped[str] = mapped_column(String(50))
    key_name: Mapped[str] = mapped_column(String(255))
    encrypted_value: Mapped[str] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    last_used_at: Mapped[datetime | None]


class Agent(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]{0,99}$'", name="slug_format"),
        Index("uq_agents_owner_slug", "user_id", "slug", unique=True),
        Index("ix_agents_persona_id", "persona_id"),
        Index("ix_agents_public_slug", "slug", postgresql_where=text("is_public")),
        Index("ix_agents_project_id", "project_id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("personas.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id",
                                                                    ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    # The agent's instructions; with a persona, they come after the persona's prompt
    # (Persona Platform's system_prompt_override replaced it: ``config.replace_persona_prompt``).
    system_prompt: Mapped[str | None] = mapped_column(Text)
    preferred_provider: Mapped[str | None] = mapped_column(String(MAX_PROVIDER_NAME))
    preferred_model: Mapped[str | None] = mapped_column(String(255))
    # Tools the agent may call: tool ids or names (resolved through the tool registry in
    # the runner's scope at run time, so a tool the runner may not use is never offered).
    tool_permissions: Mapped[list[Any]] = mapped_column(
        server_default=text("'[]'::jsonb"), default=list)
    document_ids: Mapped[list[Any]] = mapped_column(
        server_default=text("'[]'::jsonb"), default=list)
    # max_steps, max_tokens, max_cost, timeout_s, temperature, … (roost.agents.schemas).
    config: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"),
                                                   default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    is_public: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)


class Run(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint(_in("kind", RUN_KINDS), name="kind"),
        CheckConstraint(f"stop_reason IS NULL OR {_in('stop_reason', STOP_REASONS)}",
                        name="stop_reason"),
        Index("uq_runs_trace_id", "trace_id", unique=True),
        Index("uq_runs_user_idempotency_key", "user_id", "idempotency_key", unique=True,
              postgresql_where=text("idempotency_key IS NOT NULL")),
        Index("ix_runs_user_created", "user_id", text("created_at DESC")),
        Index("ix_runs_agent_created", "agent_id", text("created_at DESC")),
        Index("ix_runs_persona_id", "persona_id"),
        Index("ix_runs_system_prompt_id", "system_prompt_id",
              postgresql_where=text("system_prompt_id IS NOT NULL")),
        Index("ix_runs_active", "status", postgresql_where=text("status IN ('pending', 'running')")),
    )

    agent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("personas.id", ondelete="SET NULL"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), server_default=text("'agent'"), default="agent")
    trace_id: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(50), server_default=text("'pending'"),
                                        default="pending")
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    input: Mapped[str] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    # What started it: "api", "openai" (agent:<slug> on /v1), "email", "cli", "mcp".
    source: Mapped[str] = mapped_column(String(32), server_default=text("'api'"), default="api")
    # The agent's configuration and limits as they were when the run was created.
    config: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"),
                                                   default=dict)
    task_id: Mapped[uuid.UUID | None]  # the queue job executing it (background_tasks.id)
    steps_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    tokens_in: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 6), server_default=text("0"),
                                          default=Decimal(0))
    cancel_requested_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"), nullable=False)
    # The system prompt version (config.system_prompt_key) the run used: docs/prompts.md.
    system_prompt_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("system_prompts.id", ondelete="SET NULL"))


class RunStep(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "run_steps"
    __table_args__ = (
        CheckConstraint(_in("step_type", STEP_TYPES), name="step_type"),
        CheckConstraint(_in("status", STEP_STATUSES), name="status"),
        CheckConstraint("step_number >= 1", name="step_number_positive"),
        Index("uq_run_steps_run_step", "run_id", "step_number", unique=True),
        Index("ix_run_steps_user_id", "user_id"),
        Index("ix_run_steps_tool_id", "tool_id"),
        # A workflow node runs once per activation: (node, iteration) is its identity.
        Index("uq_run_steps_run_node_iteration", "run_id", "node_id", "iteration", unique=True,
              postgresql_where=text("node_id IS NOT NULL")),
        Index("ix_run_steps_task_id", "task_id", postgresql_where=text("task_id IS NOT NULL")),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    persona_id: Mapped[uuid.UUID | None]  # copied from the run, for row-level security
    step_number: Mapped[int] = mapped_column(Integer)
    step_type: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(32), server_default=text("'running'"),
                                        default="running")
    tool_id: Mapped[uuid.UUID | None]  # no foreign key (migration 1090): a step is history
    tool_name: Mapped[str | None] = mapped_column(String(256))
    tool_call_id: Mapped[str | None] = mapped_column(String(255))
    # The tool_runs row of a tool step (which references this step by a foreign key;
    # one direction is enough, and a cycle would leave the tables without an order).
    tool_run_id: Mapped[uuid.UUID | None]
    llm_request_id: Mapped[uuid.UUID | None]
    input: Mapped[dict[str, Any] | None]
    output: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    tokens_in: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 6), server_default=text("0"),
                                          default=Decimal(0))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # Workflow steps: the node executed, its activation (0, 1, ... in loops), and the queue
    # job that owns it (background_tasks.id; the job executes the steps it owns).
    node_id: Mapped[str | None] = mapped_column(String(255))
    iteration: Mapped[int | None] = mapped_column(Integer)
    task_id: Mapped[uuid.UUID | None]


class PersonaHealthMetric(UUIDPrimaryKey, Base):
    __tablename__ = "persona_health_metrics"
    __table_args__ = (
        Index("ix_persona_health_metrics_persona_measured", "persona_id", text("measured_at DESC")),
        Index("ix_persona_health_metrics_measured_at", "measured_at"),
    )

    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    cpu_percent: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    memory_percent: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    disk_usage_gb: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    llm_calls_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    estimated_cost: Mapped[Decimal | None] = mapped_column(Numeric(20, 4))  # migration 1330
    active_runs_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    window_s: Mapped[int | None] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(server_default=text("now()"), nullable=False)


class Email(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "emails"
    __table_args__ = (
        CheckConstraint(_in("direction", EMAIL_DIRECTIONS), name="direction"),
        Index("ix_emails_persona_created", "persona_id", text("created_at DESC")),
        Index("ix_emails_run_id", "run_id"),
        Index("ix_emails_thread_id", "thread_id"),
        Index("uq_emails_persona_direction_message_id", "persona_id", "direction", "message_id",
              unique=True, postgresql_where=text("message_id IS NOT NULL")),
    )

    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    # The persona's owner (inbound) or the sender (outbound); the mail is the persona's, so
    # it stays when that account goes (migration 1250; its members read it by persona_id).
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(50))
    message_id: Mapped[str | None] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    thread_id: Mapped[str | None] = mapped_column(String(998))
    from_email: Mapped[str] = mapped_column(String(320))
    to_email: Mapped[str] = mapped_column(Text)
    cc: Mapped[str | None] = mapped_column(Text)
    bcc: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]


class Attachment(UUIDPrimaryKey, CreatedAt, Base):
    """A mail attachment or a run artifact: the bytes live once per content hash under the
    data directory (``file_path`` relative to it), the row says whose and where from."""

    __tablename__ = "attachments"
    __table_args__ = (
        CheckConstraint("email_id IS NOT NULL OR run_id IS NOT NULL", name="has_owner"),
        Index("ix_attachments_email_id", "email_id"),
        Index("ix_attachments_run_id", "run_id"),
        Index("ix_attachments_sha256", "sha256"),
        Index("ix_attachments_created_at", "created_at"),
    )

    email_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    # SET NULL (migration 1250): an artifact stays with its run when the persona goes (the
    # run's user still reads it), a mail attachment with its email when the account goes;
    # each goes only with its email or run (the cascades above).
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("personas.id", ondelete="SET NULL"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))
    file_path: Mapped[str] = mapped_column(Text)
    file_size: Mapped[int]
    mime_type: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
