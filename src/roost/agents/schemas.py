"""Request bodies and answers of the agents API: personas, members, secrets, agents, runs.

Secrets go in, never out: answers name a secret (type and key name), never its value.
"""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import idna
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from roost.identity.common import refuse_hidden_characters
from roost.inputs import StrictInput, WebUrl
from roost.llm.schemas import ModelName, ProviderName
from roost.llm.schemas import not_blank as _not_blank
from roost.llm.schemas import one_line as _one_line

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,99}$"


def _not_an_id(slug: str) -> str:
    """A slug that reads as a UUID would name, where an agent is named "by slug or id", some
    other agent than the one of that id (catalog.find_agent reads a UUID as an id only)."""
    try:
        uuid.UUID(slug)
    except ValueError:
        return slug
    raise PydanticCustomError("slug_is_uuid", "a slug must not read as a UUID (an agent's id)")


# Stored slugs that read as a UUID (from before this rule) stay as they are.
Slug = Annotated[str, Field(pattern=SLUG_PATTERN), AfterValidator(_not_an_id)]
MAX_RUN_INPUT_CHARS = 100_000


class AgentConfig(StrictInput):
    """An agent's limits and sampling; a run keeps a copy of them as they were."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=10, ge=1, le=200,
                           description="Model calls a run may make before it stops (max_steps)")
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000,
                                   description="Tokens (in + out, all steps) before it stops "
                                               "(budget)")
    max_cost: float | None = Field(default=None, ge=0, le=1_000_000,
                                   description="Credits (usage_records.credits_used, all steps) "
                                               "before it stops (budget); more than 0")
    timeout_s: float = Field(default=600, gt=0, le=86_400,
                             description="Wall time from the run's start before it stops "
                                         "(timeout)")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000,
                                          description="max_tokens of each model call")
    retrieval_k: int = Field(default=4, ge=0, le=50,
                             description="Chunks retrieved from the agent's documents for "
                                         "the context (0: none)")
    replace_persona_prompt: bool = Field(
        default=False, description="The agent's prompt replaces the persona's instead of "
                                   "following it (Persona Platform's system_prompt_override)")
    memory_k: int = Field(default=0, ge=0, le=50,
                          description="Memories of the run's user (and persona) recalled for "
                                      "the context, best first (0: none; docs/memory.md)")
    learn: bool = Field(default=False,
                        description="After a completed run, learn facts from its exchange "
                                    "(a memory.learn job)")
    system_prompt_key: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,199}$",
        description="A system prompt by key (e.g. agent.system), resolved for the run's user "
                    "(theirs, their group's, the factory default) before the agent's own "
                    "system_prompt; the run records the version (docs/prompts.md)")
    system_prompt_label: str = Field(
        default="production", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="The label of system_prompt_key to use (e.g. staging)")

    @field_validator("max_cost")
    @classmethod
    def _some_budget(cls, value: float | None, info: ValidationInfo) -> float | None:
        # 0 credits would stop every run before its first model call (as max_tokens 0,
        # refused): refused when configured; a config stored with it before still loads
        # (read with STORED, as a run or agent_out reads it) and stops its runs at once.
        if value == 0 and not (info.context or {}).get("stored"):
            raise ValueError("must be greater than 0 (leave it out for no credit limit)")
        return value


# The validation context of a config read back from the database (AgentConfig): what
# was accepted when stored loads, though a write would be refused now.
STORED: Final = {"stored": True}


class RunCreate(StrictInput):
    refuse_nul = True  # stored as text, which holds no NUL: a 422 naming the field

    input: str = Field(min_length=1, max_length=MAX_RUN_INPUT_CHARS)
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=255,
        description="A second request with the same key, agent and input returns the first "
                    "run; the same key with another input or agent is a 422")

    @field_validator("input")
    @classmethod
    def _input_not_blank(cls, value: str) -> str:
        return _not_blank(value)  # white space alone gives the model nothing to do


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    agent_id: uuid.UUID | None
    persona_id: uuid.UUID | None
    user_id: uuid.UUID
    kind: Literal["agent", "workflow"] = "agent"
    trace_id: str
    idempotency_key: str | None
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    stop_reason: str | None
    source: str
    input: str
    output: str | None
    error_message: str | None
    config: dict[str, Any]
    steps_count: int
    tokens_in: int
    tokens_out: int
    cost: Decimal
    cancel_requested_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    system_prompt_id: uuid.UUID | None = Field(
        default=None, description="The system prompt version config.system_prompt_key "
                                  "resolved to (docs/prompts.md)")


class RunStepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    run_id: uuid.UUID
    step_number: int
    step_type: str
    status: str
    tool_id: uuid.UUID | None
    tool_name: str | None
    tool_call_id: str | None
    tool_run_id: uuid.UUID | None
    llm_request_id: uuid.UUID | None
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    error: str | None
    tokens_in: int
    tokens_out: int
    cost: Decimal
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    created_at: datetime
    node_id: str | None = None  # workflow steps: the node and its activation
    iteration: int | None = None


# --- personas, members, secrets, agents (roost.agents.personas, .secrets, .catalog) -------

MAX_PROMPT_CHARS = 100_000
MAX_TEXT_CHARS = 10_000
MAX_SECRET_BYTES = 64 * 1024
# Explicit classes, not \s: pydantic's regex engine and Python's (which API clients and
# fuzzers generating from the schema use) disagree on what Unicode white space is.
_NO_SPACE = r"[^@ \t\n\r\f\v]"
EMAIL_PATTERN = rf"^{_NO_SPACE}{{1,64}}@{_NO_SPACE}+\.{_NO_SPACE}+$"
MAX_EMAIL_CHARS = 320  # personas.email_address
KEY_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:@/+-]{0,254}$"
URL_PATTERN = r"^https?://[^ \t\n\r\f\v]+$"
AvatarUrl = Annotated[str, Field(max_length=500, pattern=URL_PATTERN), WebUrl]

MemberRole = Literal["owner", "editor", "viewer"]
SecretType = Literal["llm_provider_key", "email_imap", "email_smtp", "mcp_header", "mcp_env",
                     "api_token", "other"]


Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_not_blank)]


# A persona's name is its mail's sender name: one header line (docs/agents-mail.md).
PersonaName = Annotated[Name, AfterValidator(_one_line)]
ToolRef = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_not_blank)]


def _refuse_nulls(body: BaseModel, fields: tuple[str, ...]) -> None:
    """A PATCH may leave a field out, not set a required one to null."""
    nulled = [f for f in fields if f in body.model_fields_set and getattr(body, f) is None]
    if nulled:
        raise ValueError(f"{', '.join(nulled)} cannot be null")


def address_key(value: str) -> str:
    """How a persona's address is stored and looked up: lower-cased and composed (NFC), so
    "josé@" typed with a combining accent and mail to its composed form (what RFC 6532
    recommends senders write) are one address, and one owner's; its domain without a
    trailing dot (the root's, the same domain) and in Unicode (an IDNA ``xn--`` label
    decoded: ``exämple.com`` and ``xn--exmple-cua.com`` are one mailbox, which two
    tenants' personas could otherwise both claim)."""
    text = unicodedata.normalize("NFC", value.strip().lower())
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    domain = domain.removesuffix(".")
    if "xn--" in domain:
        try:
            domain = unicodedata.normalize("NFC", idna.decode(domain))
        except (idna.IDNAError, UnicodeError, ValueError):
            pass  # not a valid IDNA name: kept as written (the address pattern judges it)
    return f"{local}@{domain}"


def _lowered_email(value: str | None) -> str | None:
    """Stored lower-cased (unique case-insensitively): some letters grow when lowered
    ("İ" is two characters), so the limit is checked again on what is stored."""
    if value is None:
        return None
    # Mail can never reach an address with a control character or a line break (nor
    # should one go into a From header): the pattern refuses only ASCII white space.  An
    # invisible one (zero-width, bidi override, soft hyphen) would make a second address
    # that looks like another persona's: refused as well.
    lowered = address_key(refuse_hidden_characters(_one_line(value).strip()))
    if len(lowered) > MAX_EMAIL_CHARS:
        raise ValueError(f"must be at most {MAX_EMAIL_CHARS} characters once lower-cased")
    return lowered


PersonaEmail = Annotated[str | None, AfterValidator(_lowered_email)]


class PersonaCreate(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL: a 422 naming the field

    name: PersonaName
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    system_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    default_provider: ProviderName | None = Field(
        default=None, description="A registered LLM provider's name, preferred for its agents' "
                                  "model calls")
    default_model: ModelName | None = None
    fallback_providers: list[ProviderName] = Field(
        default_factory=list, max_length=10,
        description="Registered LLM providers' names, preferred next, in this order")
    email_address: PersonaEmail = Field(
        default=None, max_length=MAX_EMAIL_CHARS, pattern=EMAIL_PATTERN,
        description="Mail to this address reaches the persona (unique, case-insensitive)")
    is_active: bool = True


class PersonaUpdate(StrictInput):
    """Only the fields given change; ``null`` clears the optional ones."""

    refuse_nul = True  # stored as text and jsonb, which hold no NUL: a 422 naming the field

    name: PersonaName | None = None
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    system_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    default_provider: ProviderName | None = None
    default_model: ModelName | None = None
    fallback_providers: list[ProviderName] | None = Field(default=None, max_length=10)
    email_address: PersonaEmail = Field(default=None, max_length=MAX_EMAIL_CHARS,
                                        pattern=EMAIL_PATTERN)
    email_agent_id: uuid.UUID | None = Field(
        default=None, description="The persona's agent that inbound mail starts a run of")
    is_active: bool | None = None

    @model_validator(mode="after")
    def _no_null_required(self) -> PersonaUpdate:
        _refuse_nulls(self, ("name", "system_prompt", "fallback_providers", "is_active"))
        return self


class PersonaOut(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    description: str | None
    system_prompt: str
    default_provider: str | None
    default_model: str | None
    fallback_providers: list[Any]
    email_address: str | None
    email_agent_id: uuid.UUID | None
    is_active: bool
    container_id: str | None
    my_role: MemberRole | None = Field(description="Your role in the persona (null: you see it "
                                                   "as an administrator)")
    created_at: datetime
    updated_at: datetime


class MemberAdd(StrictInput):
    refuse_nul = True  # looked up as text, which holds no NUL: a 422 naming the field
    user: Name = Field(description="The user's id, username or e-mail address")
    role: MemberRole = "editor"


class MemberUpdate(StrictInput):
    role: MemberRole


class PersonaMemberOut(BaseModel):
    persona_id: uuid.UUID
    user_id: uuid.UUID
    username: str | None = Field(description="Null when your account may not see theirs")
    role: MemberRole
    created_at: datetime


class PersonaInvitationOut(BaseModel):
    """A pending invitation to join a persona: the membership exists once the invitee
    accepts it (``POST /api/v1/personas/invitations/{id}/accept``)."""

    id: uuid.UUID
    persona_id: uuid.UUID
    persona_name: str | None = Field(description="null if the persona is gone meanwhile")
    user_id: uuid.UUID = Field(description="the invitee")
    username: str | None = Field(
        description="the invitee's username; null when your account may not see theirs "
                    "(a persona's owner sees it once the invitee shares a group with them, "
                    "or joins)")
    role: MemberRole = Field(description="the role the membership will have")
    invited_by: uuid.UUID | None = Field(
        description="who sent it (null when no account did, such as the operator token); a "
                    "co-owner's invitations are withdrawn when they stop being one or their "
                    "account is deleted")
    invited_by_username: str | None
    created_at: datetime


class SecretSet(StrictInput):
    # hide_input_in_errors: a validation error never carries the value.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    secret_type: SecretType
    key_name: str = Field(pattern=KEY_NAME_PATTERN,
                          description="What the secret is for, e.g. OPENAI_API_KEY")
    value: SecretStr = Field(min_length=1, max_length=MAX_SECRET_BYTES,
                             description="Encrypted at rest, never returned")


class SecretOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    persona_id: uuid.UUID
    secret_type: SecretType
    key_name: str
    created_by: uuid.UUID | None
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime


class AgentCreate(StrictInput):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL: a 422 naming the field

    name: Name
    slug: Slug = Field(description="Unique among your agents")
    persona_id: uuid.UUID | None = Field(
        default=None, description="Bind to a persona you own or edit (its members see it)")
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    avatar_url: AvatarUrl | None = None
    system_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    preferred_provider: ProviderName | None = Field(
        default=None, description="A registered LLM provider's name, preferred for its runs' "
                                  "model calls (before its persona's)")
    preferred_model: ModelName | None = None
    tool_permissions: list[ToolRef] = Field(
        default_factory=list, max_length=100,
        description="Tools the agent may call: ids or names of tools you can see")
    document_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=100,
        description="Documents you can see, searched for each run's context")
    config: AgentConfig = Field(default_factory=AgentConfig)
    is_active: bool = True
    is_public: bool = Field(default=False, description="Every user may read and run it")
    project_id: uuid.UUID | None = Field(
        default=None, description="A project you can see that groups it (docs/workspace.md)")


class AgentUpdate(StrictInput):
    """Only the fields given change; ``null`` clears the optional ones (``persona_id``:
    unbinds the agent)."""

    refuse_nul = True  # stored as text and jsonb, which hold no NUL: a 422 naming the field

    name: Name | None = None
    slug: Slug | None = None
    persona_id: uuid.UUID | None = None
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    avatar_url: AvatarUrl | None = None
    system_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    preferred_provider: ProviderName | None = None
    preferred_model: ModelName | None = None
    tool_permissions: list[ToolRef] | None = Field(default=None, max_length=100)
    document_ids: list[uuid.UUID] | None = Field(default=None, max_length=100)
    config: AgentConfig | None = Field(default=None,
                                       description="Replaces the whole configuration")
    is_active: bool | None = None
    is_public: bool | None = None
    project_id: uuid.UUID | None = Field(default=None, description="null: no project")

    @model_validator(mode="after")
    def _no_null_required(self) -> AgentUpdate:
        _refuse_nulls(self, ("name", "slug", "tool_permissions", "document_ids", "config",
                             "is_active", "is_public"))
        return self


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    persona_id: uuid.UUID | None
    project_id: uuid.UUID | None
    name: str
    slug: str
    description: str | None
    avatar_url: str | None
    system_prompt: str | None
    preferred_provider: str | None
    preferred_model: str | None
    tool_permissions: list[str]
    document_ids: list[uuid.UUID]
    config: dict[str, Any] = Field(description="Every limit, defaults filled in")
    is_active: bool
    is_public: bool
    created_at: datetime
    updated_at: datetime


class ToolGrantSet(StrictInput):
    """A tool granted to a persona: its agents may use it whoever starts their runs."""

    model_config = ConfigDict(extra="forbid")
    refuse_nul = True  # stored as jsonb, which holds no NUL: a 422 naming the field

    is_enabled: bool = True
    input_schema: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema the arguments must also satisfy when the "
                                  "persona's agents call the tool (narrowing what it may do)")
    max_calls_per_run: int | None = Field(default=None, ge=1, le=10_000,
                                          description="Calls of it one run may make")


class ToolGrantOut(BaseModel):
    id: uuid.UUID
    persona_id: uuid.UUID
    tool_id: uuid.UUID
    tool_name: str | None = Field(description="None when the tool is not visible to you")
    granted_by: uuid.UUID | None
    is_enabled: bool
    input_schema: dict[str, Any] | None
    max_calls_per_run: int | None
    created_at: datetime
