"""Bodies and answers of the prompts API."""

from __future__ import annotations

import math
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from roost.inputs import StrictInput

Scope = Literal["user", "group", "factory"]
VarType = Literal["string", "number", "integer", "boolean"]
KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,199}$"
LABEL_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_TEXT = 100_000
Value = str | int | float | bool | None


def _no_nul(value: str) -> str:
    """PostgreSQL text (and jsonb) cannot hold NUL: refused here, naming the field, rather
    than by the database as a bare "malformed value"."""
    if "\x00" in value:
        raise PydanticCustomError("string_nul", "String should not contain NUL characters (\\u0000)")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


def composed(value: str) -> str:
    """A name as stored and compared: composed (NFC), so "café" typed decomposed (as macOS
    keyboards send it) is the same category, not a second one that looks alike."""
    return unicodedata.normalize("NFC", value)


MAX_CATEGORY_CHARS = 100  # system_prompts.prompt_category, counted once composed
# A category as sent (a body's or a filter's): typed decomposed, one character takes up to
# four code points ("é" as e and a combining accent).  This only bounds what is sent; the
# limit holds for the category composed (composed_category).
SENT_CATEGORY_CHARS = 4 * MAX_CATEGORY_CHARS


def composed_category(value: str) -> str:
    """A category :func:`composed`, at most MAX_CATEGORY_CHARS: pydantic's own max_length
    counted it as sent, before composing, and refused 100 "é" typed decomposed."""
    value = composed(value)
    if len(value) > MAX_CATEGORY_CHARS:
        raise PydanticCustomError(
            "string_too_long",
            "String should have at most {max_length} characters once composed (NFC)",
            {"max_length": MAX_CATEGORY_CHARS})
    return value


# A category filter's type (a query parameter): bounded as sent, then composed and checked.
Category = Annotated[str, Field(max_length=SENT_CATEGORY_CHARS), AfterValidator(composed_category)]


class VariableDef(StrictInput):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: VarType = "string"
    required: bool = True
    default: Value = None
    description: Annotated[str, Field(max_length=1000), AfterValidator(_no_nul)] | None = None

    @field_validator("default")
    @classmethod
    def _storable(cls, value: Value) -> Value:
        # A default is stored as JSON: a finite number, a string without NUL (the CLI's
        # --variables reads 1e400 as infinity and accepts NaN) and no longer than a text
        # (a longer one would be stored in every version, yet hardly ever render).
        if isinstance(value, float) and not math.isfinite(value):
            raise PydanticCustomError("finite_number", "Input should be a finite number")
        if isinstance(value, str):
            _no_nul(value)
            if len(value) > MAX_TEXT:
                raise PydanticCustomError(
                    "string_too_long", "String should have at most {max_length} characters",
                    {"max_length": MAX_TEXT})
        return value


class PromptCreate(StrictInput):
    prompt_key: str = Field(pattern=KEY_PATTERN, description="e.g. chat.system, agent.system")
    prompt_text: Text = Field(min_length=1, max_length=MAX_TEXT,
                              description="The text; {{name}} inserts a variable")
    # The lengths inside the optional type: on ``Text | None`` pydantic counted "items".
    prompt_name: Annotated[str, Field(min_length=1, max_length=255),
                           AfterValidator(_no_nul)] | None = Field(
        default=None, description="Default: the key")
    prompt_category: Annotated[str, Field(min_length=1, max_length=SENT_CATEGORY_CHARS),
                               AfterValidator(_no_nul), AfterValidator(composed_category)
                               ] = "general"
    description: Annotated[str, Field(max_length=20_000), AfterValidator(_no_nul)] | None = None
    variables: list[VariableDef] = Field(default_factory=list, max_length=100)
    scope: Scope = Field(default="user", description=(
        "user: yours; group: group_id's (its administrators); factory: Roost's default "
        "(administrators)"))
    group_id: uuid.UUID | None = None
    label: str | None = Field(default="production", pattern=LABEL_PATTERN, description=(
        "Point this label at the new version (null: publish without moving a label)"))


class PromptUpdate(StrictInput):
    is_active: bool = Field(description="false: resolution skips this version's scope")


class LabelSet(StrictInput):
    prompt_id: uuid.UUID = Field(description="The version the label is to point at")
    label: str = Field(pattern=LABEL_PATTERN)


class RenderRequest(StrictInput):
    key: str = Field(pattern=KEY_PATTERN)
    label: str = Field(default="production", pattern=LABEL_PATTERN)
    values: dict[str, Value] = Field(default_factory=dict, max_length=100)


class RenderVersion(StrictInput):
    values: dict[str, Value] = Field(default_factory=dict, max_length=100)


class PromptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    scope: Scope
    user_id: uuid.UUID | None
    group_id: uuid.UUID | None
    prompt_key: str
    prompt_category: str
    prompt_name: str
    description: str | None
    prompt_text: str
    variables: list[dict[str, Any]]
    is_factory_default: bool
    is_active: bool
    version: int
    labels: list[str] = Field(default_factory=list)
    usage_count: int
    last_used_at: datetime | None
    average_satisfaction: float | None
    success_rate: float | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class RenderedOut(BaseModel):
    prompt_id: uuid.UUID
    prompt_key: str
    version: int
    scope: Scope
    text: str


class LabelOut(BaseModel):
    scope: Scope
    user_id: uuid.UUID | None
    group_id: uuid.UUID | None
    prompt_key: str
    label: str
    prompt_id: uuid.UUID
    version: int
    updated_at: datetime


class KeyOut(BaseModel):
    prompt_key: str
    prompt_category: str
    scope: Scope
    user_id: uuid.UUID | None
    group_id: uuid.UUID | None
    versions: int
    latest_version: int
    labels: dict[str, int] = Field(description="label -> version")
    usage_count: int
    success_rate: float | None = Field(description="Over the scope's versions, weighted by "
                                                   "finished runs")
