"""A tool's input schema may carry regular expressions (``pattern``,
``patternProperties``) written by whoever defined the tool, matched against arguments
written by whoever calls it.  Python's ``re`` has no time limit: ``^(\\w+\\s?)*$`` against
30 characters ran over a minute on the API's event loop.  The patterns are matched with
one time budget per validation; past it the call is a 422 naming the pattern."""

from __future__ import annotations

from typing import Any

import pytest

from roost.errors import Unprocessable
from roost.tools.calls import check_schema_ends, validate_arguments

SLOW = "^(a|a)*$"  # backtracks exponentially in re and in regex alike


@pytest.mark.parametrize(("schema", "arguments"), [
    ({"type": "object", "properties": {"x": {"type": "string", "pattern": SLOW}}},
     {"x": "a" * 40 + "!"}),
    ({"type": "object", "patternProperties": {SLOW: {"type": "string"}}},
     {"a" * 40 + "!": "v"}),
    ({"type": "object", "patternProperties": {SLOW: {"type": "string"}},
      "additionalProperties": False}, {"a" * 40 + "!": "v"}),
    ({"type": "object", "propertyNames": {"pattern": SLOW}}, {"a" * 40 + "!": "v"}),
])
def test_a_pattern_that_backtracks_without_end_is_a_422_naming_it(
        schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="took longer than") as refused:
        validate_arguments(schema, arguments)
    assert refused.value.extra["pattern"] == SLOW


def test_ordinary_patterns_still_decide() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
              "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False}
    validate_arguments(schema, {"code": "EUR", "x-count": 3})
    with pytest.raises(Unprocessable, match="pattern"):
        validate_arguments(schema, {"code": "euro"})
    with pytest.raises(Unprocessable, match="x-count"):
        validate_arguments(schema, {"code": "EUR", "x-count": "three"})
    with pytest.raises(Unprocessable):
        validate_arguments(schema, {"code": "EUR", "other": 1})


@pytest.mark.parametrize("schema", [
    {"allOf": [{"$ref": "#"}]},
    {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
])
def test_a_schema_that_refers_to_itself_without_end_is_a_422(schema: dict[str, Any]) -> None:
    # An MCP server's schema (or a grant's) is valid JSON Schema, but checking any value
    # against it recursed until Python gave up: a RecursionError, a 500.
    with pytest.raises(Unprocessable, match="without end"):
        validate_arguments(schema, {"x": 1})
    with pytest.raises(Unprocessable, match="without end"):
        check_schema_ends(schema)


def test_recursive_schemas_that_follow_the_value_are_fine() -> None:
    tree = {"$defs": {"node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
        "$ref": "#/$defs/node"}
    check_schema_ends(tree)
    validate_arguments(tree, {"children": [{"children": [{"children": []}]}]})
    with pytest.raises(Unprocessable, match="children"):
        validate_arguments(tree, {"children": [{"children": 3}]})
