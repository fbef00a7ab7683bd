"""Request bodies and answers of the tools API.  Secrets (env values, headers) go in,
never out: answers only say which names are set."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from roost.inputs import StrictInput, WebUrl
from roost.llm.base import HEADER_VALUE_RULE, header_name_ok, unsendable_header
from roost.tools.models import SECRET_TYPES
from roost.tools.secretrefs import (
    MARKER,
    MAX_REFERENCES_PER_VALUE,
    MAX_VALUE_CHARS,
    REFERENCE,
    REFERENCE_RULE,
    malformed,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_references(values: dict[str, str], what: str) -> None:
    """A ``${secret:`` that does not parse as a reference would be sent as it stands, one
    of a type no secret has could never resolve, and a value too long or with too many
    references would be built anew, that large, for every call: refused, naming the entry
    (not echoing the value)."""
    for name, value in values.items():
        if len(value) > MAX_VALUE_CHARS:
            raise ValueError(f"the value of {what} {name[:64]!r} may be at most "
                             f"{MAX_VALUE_CHARS} characters")
        if malformed(value):
            raise ValueError(f"the value of {what} {name[:64]!r} holds '{MARKER}' that is "
                             f"not a secret reference: write {REFERENCE_RULE}")
        found = REFERENCE.findall(value)
        if len(found) > MAX_REFERENCES_PER_VALUE:
            raise ValueError(f"the value of {what} {name[:64]!r} holds {len(found)} secret "
                             f"references; at most {MAX_REFERENCES_PER_VALUE} are allowed")
        unknown = [kind for kind, _ in found if kind and kind not in SECRET_TYPES]
        if unknown:
            raise ValueError(f"the value of {what} {name[:64]!r} references a secret of type "
                             f"{unknown[0]!r}, which no secret has: the types are "
                             f"{', '.join(SECRET_TYPES)}")


class McpServerCreate(StrictInput):
    refuse_nul = True  # stored as text, which holds no NUL: a 422 naming the field
    name: str = Field(pattern=NAME_PATTERN, description="Unique per owner (or among global servers)")
    transport: Literal["stdio", "streamable_http"]
    description: str | None = Field(default=None, max_length=2000)
    url: Annotated[str, Field(max_length=2048), WebUrl] | None = Field(
        default=None, description="streamable_http: the MCP endpoint (http or https)")
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

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, value: dict[str, str]) -> dict[str, str]:
        """Refused here what could never be sent (httpx raised deep in a sync instead)."""
        bad = unsendable_header(value)
        if bad is not None and bad[0] == "name" and header_name_ok(bad[1]):
            raise ValueError(f"header {bad[1][:64]!r} is a hop-by-hop or framing header, "
                             "which cannot be set")
        if bad is not None and bad[0] == "name":
            # Not echoed: a mistyped "Authorization: Bearer <token>" may hold the token.
            raise ValueError("a header name is not a valid HTTP token (letters, digits "
                             "and !#$%&'*+-.^_`|~, no spaces or ':')")
        if bad is not None:
            raise ValueError(f"the value of header {bad[1]!r} must be {HEADER_VALUE_RULE}, "
                             "without surrounding spaces")
        _check_references(value, "header")
        return value

    @field_validator("url")
    @classmethod
    def _a_port(cls, value: str | None) -> str | None:
        # Port 0 parses, yet no server listens there: every sync would fail to connect.
        if value is not None and urlsplit(value).port == 0:
            raise ValueError("the URL's port must be from 1 to 65535")
        return value

    @field_validator("env")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name, env_value in value.items():
            if _ENV_NAME.fullmatch(name) is None:
                raise ValueError(f"environment variable name {name[:64]!r} must be letters, "
                                 "digits and underscores, not starting with a digit")
            if "\x00" in env_value:
                raise ValueError(f"the value of {name!r} holds a NUL character")
        _check_references(value, "environment variable")
        return value

    @field_validator("url", "args")
    @classmethod
    def _no_reference(cls, value: Any) -> Any:
        # Secrets are substituted only in env values and headers: anywhere else a
        # reference would be sent (or run) as it stands.
        parts = value if isinstance(value, list) else [value]
        if any(part is not None and MARKER in unquote(part) for part in parts):
            raise ValueError("secret references (${secret:..}) are resolved only in env "
                             "values and headers, not in a URL or a command's arguments")
        return value

    @field_validator("command", "args")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        parts = value if isinstance(value, list) else [value]
        if any(part is not None and "\x00" in part for part in parts):
            raise ValueError("a command or argument cannot hold a NUL character")
        return value

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
    score: float = Field(description="Cosine similarity of the query and the tool's description, "
                         "both less the mean of the caller's tools, less a quarter of the "
                         "tool's mean similarity to its nearest tools in large catalogues "
                         "(about -1..1, higher is better; hits come best first)")


class ToolSearchOut(BaseModel):
    model: str = Field(description="The embedding model that ranked the tools")
    items: list[ToolSearchHit]


# --- Tool analytics (roost.tools.analytics) -----------------------------------------


class ToolStatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    tool_id: uuid.UUID | None = Field(
        description="The tool's id as its runs recorded it (it may name a tool deleted since); "
                    "null for runs recorded without one")
    tool_name: str
    calls: int = Field(description="Runs started in the window")
    successes: int
    errors: int
    timeouts: int
    error_rate: float | None = Field(
        description="(errors + timeouts) / finished runs; null when none finished")
    p50_ms: float | None = Field(description="Median duration (interpolated)")
    p95_ms: float | None
    last_called_at: datetime | None


class ToolAnalyticsOut(BaseModel):
    since: datetime
    until: datetime
    user_id: uuid.UUID | None = Field(description="Whose runs; null: every user's (administrators)")
    sort: str
    items: list[ToolStatsOut]


class ToolAnalyticsBucket(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    start: datetime
    calls: int
    failures: int = Field(description="Errors and timeouts")
    p95_ms: float | None


class ToolErrorCount(BaseModel):
    message: str = Field(description="The error, cut at 200 characters")
    count: int


class ToolAnalyticsDetailOut(BaseModel):
    since: datetime
    until: datetime
    user_id: uuid.UUID | None = Field(description="Whose runs; null: every user's (administrators)")
    stats: ToolStatsOut
    p99_ms: float | None
    mean_ms: float | None
    max_ms: int | None
    bucket: Literal["hour", "day"] = Field(description="Width of each point of the series")
    series: list[ToolAnalyticsBucket] = Field(description="Oldest first; buckets without runs are left out")
    top_errors: list[ToolErrorCount]


class ToolCallRequest(StrictInput):
    arguments: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = Field(default=None, max_length=255, pattern=r"^[^\x00]*$",
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


# --- LSP servers (roost.tools.lspservers) -------------------------------------------

# A glob on a workspace-relative path: "*.py" matches a file name, "src/**/*.py" a path.
FilePattern = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
LspArg = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")]


class LspServerCreate(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL
    name: str = Field(pattern=NAME_PATTERN, description="Unique per owner (or among global servers)")
    language: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_+#.-]{0,99}$",
                          description="LSP language id sent with each document, e.g. python")
    command: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00]+$",
                         description="The executable (started on the Roost host, over stdio)")
    args: list[LspArg] = Field(default_factory=list, max_length=100)
    file_patterns: list[FilePattern] = Field(
        default_factory=list, max_length=50,
        description="Which workspace files it serves, e.g. ['*.py', '*.pyi']")
    is_global: bool = Field(default=False, description="Visible to every user (administrators)")
    enabled: bool = True


class LspServerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID | None
    is_global: bool
    name: str
    language: str
    command: str
    args: list[Any]
    file_patterns: list[Any]
    enabled: bool
    health_status: str
    health_error: str | None
    latency_ms: int | None = Field(description="Process start to the initialize answer")
    capabilities: dict[str, Any]
    server_info: dict[str, Any] | None
    last_checked_at: datetime | None
    created_at: datetime
