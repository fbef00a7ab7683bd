"""``llm.records.fit_result``: a provider's answer fitted to the columns it is stored in."""

from __future__ import annotations

import json

from roost.llm.records import fit_result
from roost.llm.types import ChatResult, ToolCall


def test_a_raw_nul_in_tool_call_arguments_becomes_its_json_escape() -> None:
    """JSONB holds no NUL: a raw one in the arguments' text is stored as the six characters
    ``\\u0000``. Inside a JSON string the arguments then mean what the model sent (the tool
    registry refuses the NUL); outside one they stay invalid JSON (a failed step either
    way, not an answer that cannot be stored)."""
    result = fit_result(ChatResult(content="", tool_calls=[
        ToolCall(id="c\x001", name="f\x00", arguments='{"tz": "Europe/\x00Paris"}'),
        ToolCall(id="c2", name="f", arguments='{"tz"\x00: 1}')]))
    first, second = result.tool_calls
    assert (first.id, first.name) == ("c1", "f")
    assert "\x00" not in first.arguments + second.arguments
    assert json.loads(first.arguments) == {"tz": "Europe/\x00Paris"}
    assert second.arguments == '{"tz"\\u0000: 1}'
