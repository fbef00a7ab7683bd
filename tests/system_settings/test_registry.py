"""Declaring runtime settings: a key mirrors its ROOST_* field (type, limits, description,
default); anything else must say what it is."""

from __future__ import annotations

import annotated_types
import pytest
from pydantic_settings import BaseSettings
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.errors import NotFound, Unprocessable
from roost.system_settings import declare, registry, runtime
from roost.tasks.config import WorkerSettings


def test_a_declared_key_mirrors_its_environment_setting() -> None:
    setting = declare("chat_context_messages")
    assert declare("chat_context_messages") is setting  # declared once, shared
    assert setting.json_schema() == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert setting.default(Settings(chat_context_messages=7)) == 7
    assert setting.description == Settings.model_fields["chat_context_messages"].description
    assert setting.decode(setting.encode(42)) == 42
    with pytest.raises(Unprocessable, match="less than or equal to 1000"):
        setting.validate(1001)


def test_other_keys_need_a_type_and_a_description() -> None:
    with pytest.raises(ValueError, match="no Settings field"):
        declare("made_up_setting_without_type")
    with pytest.raises(NotFound):
        registry.lookup("made_up_setting_without_type")


async def test_a_stored_value_the_schema_refuses_falls_back_to_the_default(
        database: Database) -> None:
    setting = declare("chat_context_messages")
    async with database.transaction() as s:
        await s.execute(text("INSERT INTO system_settings (key, value) "
                             "VALUES ('chat_context_messages', '5000')"))
        assert await runtime.get(s, setting, 20) == 20


@pytest.mark.parametrize("model", [Settings, WorkerSettings])
def test_every_numeric_setting_has_an_upper_bound(model: type[BaseSettings]) -> None:
    """A duration or size with no upper bound is one typo (or one "keep forever" guess such
    as a million days) from an overflow: a date past year 9999 fails every job that adds
    it to now. Each numeric ROOST_* setting says how large it may be."""
    unbounded = [name for name, field in model.model_fields.items()
                 if any(t in str(field.annotation) for t in ("int", "float"))
                 and not any(isinstance(m, annotated_types.Le | annotated_types.Lt)
                             for m in field.metadata)]
    assert unbounded == []
