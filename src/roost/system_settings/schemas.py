"""Bodies and answers of /api/v1/admin/settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from roost.inputs import StrictInput


class SettingValueIn(StrictInput):
    value: Any = Field(description="The new value, as JSON; checked against the setting's schema")


class SettingOut(BaseModel):
    key: str
    description: str
    json_schema: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    default: Any = Field(description="The value without an override (the ROOST_* setting)")
    value: Any = Field(description="The value in effect")
    source: Literal["default", "override"]
    updated_at: datetime | None = None
    updated_by: uuid.UUID | None = None

    model_config = {"populate_by_name": True}
