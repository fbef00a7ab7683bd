"""Request bodies and answers of the tools API.  Secrets (env values, headers) go in,
never out: answers only say which names are set."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from roost.inputs import StrictInput

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class McpServerCreate(StrictInput):
    name: str = Field(pattern=NAME_PATTERN, description="Unique per owner (or among global servers)")
    transport: Literal["stdio", "streamable_http"]
    description: str | None = Field(default=None, max_length=2000)
    url: str | None = Field(default=None, max_length=2048,
                            description="streamable_http: the MCP endpoint (http or https)")
    command: str | None = Field(default=None, min_length=1, max_length=1024,
                                description="stdio: the executable (administrators only)")
    args: list[str] = Field(default_factory=list, max_length=100)
    env: dict[str, str] = Field(default_factory=dict, max_length=100,
                                description="stdio: environment (encrypted at rest, never shown)")
    headers: dict[str, str] = Field(default_factory=dict, max_length=50,
                                    description="streamable_http: request headers (encrypted "
                                    "at rest, never shown)")
    is_global: bool = Field(default=False, description="Visible to every user (administrators)")
    enabled: bool = True

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerCreate:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio server needs 'command'")
            if self.url or self.headers:
                raise ValueError("'url' and 'headers' are for streamable_http servers")
        else:
            if not self.url:
                raise ValueError("a streamable_http server needs 'url'")
            if self.command or self.args or self.env:
                raise ValueError("'command', 'args' and 'env' are for stdio servers")
        return self


class McpServerOut(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID | None
    is_global: bool
    name: str
    description: str | None
    transport: str
    url: str | None
    command: str | None
    args: list[Any]
    env_names: list[str] = Field(description="Names of the env variables set (values hidden)")
    header_names: list[str] = Field(description="Names of the headers set (values hidden)")
    enabled: bool
    health_status: str
    health_error: str | None
    latency_ms: int | None
    capabilities: dict[str, Any]
    server_info: dict[str, Any] | None
    last_seen: datetime | None
    last_health_check_at: datetime | None
    last_synced_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SyncResult(BaseModel):
    server: McpServerOut
    added: list[str]
    updated: list[str]
    unavailable: list[str]
    skipped: dict[str, str] = Field(description="Tools not registered, with the reason")


class ToolOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID | None
    mcp_server_id: uuid.UUID | None
    kind: str
    name: str
    title: str | None
    description: str | None
    category: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any] | None
    is_builtin: bool
    enabled: bool
    available: bool
    last_discovered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ToolSearchHit(BaseModel):
    tool: ToolOut
    score: float = Field(description="Cosine similarity of the query and the tool's description")


class ToolSearchOut(BaseModel):
    model: str = Field(description="The embedding model that ranked the tools")
    items: list[ToolSearchHit]


class ToolCall(StrictInput):
    arguments: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = Field(default=None, max_length=255,
                                 description="Trace id of the parent run; default run-{uuid}")
    session_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None


class ToolRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    tool_id: uuid.UUID | None
    user_id: uuid.UUID | None
    tool_name: str
    status: str
    trace_id: str
    session_id: uuid.UUID | None
    message_id: uuid.UUID | None
    run_id: uuid.UUID | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    result_preview: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    created_at: datetime


class DependencyCreate(StrictInput):
    depends_on_tool_id: uuid.UUID
    dependency_type: Literal["requires", "recommends", "optional"] = "requires"


class DependencyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    tool_id: uuid.UUID
    depends_on_tool_id: uuid.UUID
    dependency_type: str
    created_at: datetime
