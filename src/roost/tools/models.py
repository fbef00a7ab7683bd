"""Tool tables: MCP servers, tools, tool runs, tool dependencies, persona tools, LSP servers.

One ``mcp_servers``, one ``tools`` and one ``tool_runs`` table unite the seeds' tables of
those names (``docs/seed-map.toml`` says where each column lives).

Ownership: ``user_id`` NULL means *global* (managed by administrators, visible to every
user); otherwise the row is its owner's.  A tool discovered on a server copies the
server's owner.  ``tool_runs`` outlive what they describe: deleting a server deletes its
tools, and their runs keep ``tool_name`` and ``tool_id`` as written (an id that may name
a deleted tool: no foreign key, migration 1090).

Secrets of a server (stdio ``env`` values, streamable-HTTP ``headers``) are stored only
as AES-256-GCM ciphertext bound to their row (``env_encrypted``, ``headers_encrypted``)
and never returned by the API.

``tool_runs.session_id``/``message_id`` are plain ids: a run record must survive its chat
message.  ``persona_tools.persona_id``, ``tool_runs.run_id`` and ``run_step_id`` reference
the agents domain's tables by name (migration 0600; this module does not import them).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey
from roost.db.vector import VectorType
from roost.identity import models as _identity_models  # noqa: F401 - "users", for the foreign keys

# The types a persona's secret can have (the secrets table's check constraint, in
# roost.agents.models).  Declared here, in the lower domain and a module light enough for
# any command to import, so that a server's reference can be checked at registration.
SECRET_TYPES: Final = ("llm_provider_key", "email_imap", "email_smtp", "mcp_header", "mcp_env",
                       "api_token", "other")

TRANSPORTS: Final = ("stdio", "streamable_http")
HEALTH_STATUSES: Final = ("unknown", "healthy", "unhealthy")
RUN_STATUSES: Final = ("running", "success", "error", "timeout")
DEPENDENCY_TYPES: Final = ("requires", "recommends", "optional")
TOOL_KINDS: Final = ("mcp", "builtin")
MAX_SCHEMA_BYTES: Final = 10 * 1024
#: A discovered tool's description is cut there (the rest would only be embedded and listed).
MAX_DESCRIPTION_CHARS: Final = 10 * 1024
MAX_PREVIEW_CHARS: Final = 2 * 1024
#: The default embedder's tool-description index (migration 0510): the knowledge
#: domain's local model, all-MiniLM-L6-v2, 384 dimensions, same HNSW options.
EMBEDDING_DEFAULT_MODEL: Final = "all-MiniLM-L6-v2"
EMBEDDING_DEFAULT_DIMENSIONS: Final = 384
EMBEDDING_DEFAULT_INDEX: Final = "ix_tools_description_embedding_all_minilm_l6_v2"
HNSW_M: Final = 16
HNSW_EF_CONSTRUCTION: Final = 64


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class McpServer(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "mcp_servers"
    __table_args__ = (
        CheckConstraint(_in("transport", TRANSPORTS), name="transport"),
        CheckConstraint(_in("health_status", HEALTH_STATUSES), name="health_status"),
        Index("ix_mcp_servers_user_id", "user_id"),
        Index("uq_mcp_servers_owner_name", "user_id", "name", unique=True,
              postgresql_where=text("user_id IS NOT NULL")),
        Index("uq_mcp_servers_global_name", "name", unique=True,
              postgresql_where=text("user_id IS NULL")),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    transport: Mapped[str] = mapped_column(String(32))
    url: Mapped[str | None] = mapped_column(String(2048))
    command: Mapped[str | None] = mapped_column(String(1024))
    args: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"), default=list)
    env_encrypted: Mapped[str | None] = mapped_column(Text)
    headers_encrypted: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"), default=dict)
    capabilities: Mapped[dict[str, Any]] = mapped_column(
        server_default=text("'{}'::jsonb"), default=dict
    )
    server_info: Mapped[dict[str, Any] | None]
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    health_status: Mapped[str] = mapped_column(
        String(50), server_default=text("'unknown'"), default="unknown"
    )
    health_error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    last_seen: Mapped[datetime | None]
    last_health_check_at: Mapped[datetime | None]
    last_synced_at: Mapped[datetime | None]


class Tool(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "tools"
    __table_args__ = (
        CheckConstraint(_in("kind", TOOL_KINDS), name="kind"),
        CheckConstraint("(kind = 'mcp') = (mcp_server_id IS NOT NULL)", name="mcp_has_server"),
        Index("uq_tools_server_name", "mcp_server_id", "name", unique=True,
              postgresql_where=text("mcp_server_id IS NOT NULL")),
        Index("uq_tools_builtin_name", "name", unique=True,
              postgresql_where=text("mcp_server_id IS NULL")),
        Index("ix_tools_user_id", "user_id"),
        Index("ix_tools_name", "name"),
        Index("ix_tools_category", "category"),
        CheckConstraint("(description_embedding IS NULL) = (embedding_model IS NULL)",
                        name="embedding_has_model"),
        # Semantic search with the default embedder (migration 0510); another model's
        # vectors are searched without an index (its dimension is not this one).
        Index(
            EMBEDDING_DEFAULT_INDEX,
            literal_column(f"(description_embedding::vector({EMBEDDING_DEFAULT_DIMENSIONS}))")
            .label("description_vector"),
            postgresql_ops={"description_vector": "vector_cosine_ops"},
            postgresql_using="hnsw",
            postgresql_with={"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
            postgresql_where=text(f"embedding_model = '{EMBEDDING_DEFAULT_MODEL}'"),
        ),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    mcp_server_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("mcp_servers.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256))
    title: Mapped[str | None] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100))
    input_schema: Mapped[dict[str, Any]] = mapped_column(
        server_default=text("'{\"type\": \"object\"}'::jsonb"), default=lambda: {"type": "object"}
    )
    output_schema: Mapped[dict[str, Any] | None]
    annotations: Mapped[dict[str, Any] | None]
    code: Mapped[str | None] = mapped_column(Text)
    code_type: Mapped[str | None] = mapped_column(String(50))
    is_builtin: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    available: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    last_discovered_at: Mapped[datetime | None]
    # Semantic tool search (roost.tools.search): the vector of the tool's name, title and
    # description by the configured knowledge embedder (any dimension; Persona Platform's
    # was vector(1536)), the model that made it, and the sha256 of the text embedded, so
    # a changed description is embedded again.
    description_embedding: Mapped[list[float] | None] = mapped_column(VectorType())
    embedding_model: Mapped[str | None] = mapped_column(String(128))
    embedding_text_sha256: Mapped[str | None] = mapped_column(String(64))
    # The mean cosine similarity of the vector to its 10 nearest among what the tool's
    # owner sees (a global tool: global tools; a user's: theirs and global ones), which
    # the search subtracts so tools that sit close to everything rank lower (hubness);
    # NULL until the embedding job computes it (roost.tools.search.refresh_neighbours).
    neighbour_similarity: Mapped[float | None] = mapped_column(Double)


class ToolRun(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "tool_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        # Per-tool statistics (roost.tools.analytics, migration 0530): index-only scans of
        # a user's or a tool's runs in a window; they also serve plain lookups by user and
        # the foreign key's ON DELETE SET NULL.
        Index("ix_tool_runs_user_stats", "user_id", "started_at",
              postgresql_include=["tool_id", "tool_name", "status", "duration_ms"]),
        Index("ix_tool_runs_tool_name_started", "tool_name", text("started_at DESC")),
        Index("ix_tool_runs_tool_stats", "tool_id", "started_at",
              postgresql_include=["user_id", "status", "duration_ms"]),
        Index("ix_tool_runs_trace_id", "trace_id"),
        Index("ix_tool_runs_run_id", "run_id"),
    )

    # The tool, run and step by id, without foreign keys (migration 1090): a tool run is
    # history, often recorded after its tool's server or its run was deleted.
    tool_id: Mapped[uuid.UUID | None]
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[uuid.UUID | None]
    message_id: Mapped[uuid.UUID | None]
    run_id: Mapped[uuid.UUID | None]
    run_step_id: Mapped[uuid.UUID | None]
    trace_id: Mapped[str] = mapped_column(String(255))
    tool_name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32))
    input: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"), default=dict)
    output: Mapped[dict[str, Any] | None]
    result_preview: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)


class ToolDependency(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "tool_dependencies"
    __table_args__ = (
        CheckConstraint(_in("dependency_type", DEPENDENCY_TYPES), name="dependency_type"),
        CheckConstraint("tool_id <> depends_on_tool_id", name="not_self"),
        # An edge is unique within its owner's graph (each user's graph is their own).
        Index("uq_tool_dependencies_edge", "user_id", "tool_id", "depends_on_tool_id",
              unique=True, postgresql_nulls_not_distinct=True),
        Index("ix_tool_dependencies_depends_on", "depends_on_tool_id"),
    )

    tool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"))
    depends_on_tool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"))
    dependency_type: Mapped[str] = mapped_column(
        String(50), server_default=text("'requires'"), default="requires"
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))


class PersonaTool(UUIDPrimaryKey, CreatedAt, Base):
    """Which tools a persona may use (no behaviour yet; ``personas`` does not exist)."""

    __tablename__ = "persona_tools"
    __table_args__ = (
        Index("uq_persona_tools_persona_tool", "persona_id", "tool_id", unique=True),
        Index("ix_persona_tools_tool_id", "tool_id"),
        Index("ix_persona_tools_user_id", "user_id"),
    )

    # Who granted it; the grant is the persona's and stays when they go (migration 1250).
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    tool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"))
    is_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    config: Mapped[dict[str, Any] | None]


class LspServer(UUIDPrimaryKey, CreatedAt, Base):
    """HelixAgent's language-server registry (``roost.tools.lspservers``); the health
    columns (migration 0520) hold the last check, as ``mcp_servers``' do."""

    __tablename__ = "lsp_servers"
    __table_args__ = (
        CheckConstraint(_in("health_status", HEALTH_STATUSES), name="health_status"),
        Index("ix_lsp_servers_user_id", "user_id"),
        Index("uq_lsp_servers_global_name", "name", unique=True,
              postgresql_where=text("user_id IS NULL")),
        Index("uq_lsp_servers_owner_name", "user_id", "name", unique=True,
              postgresql_where=text("user_id IS NOT NULL")),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(100))
    command: Mapped[str] = mapped_column(String(500))
    args: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"), default=list)
    file_patterns: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"), default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    health_status: Mapped[str] = mapped_column(
        String(50), server_default=text("'unknown'"), default="unknown"
    )
    health_error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    capabilities: Mapped[dict[str, Any]] = mapped_column(
        server_default=text("'{}'::jsonb"), default=dict
    )
    server_info: Mapped[dict[str, Any] | None]
    last_checked_at: Mapped[datetime | None]
