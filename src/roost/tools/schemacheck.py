"""Validators for JSON Schemas that users and MCP servers write: the one way Roost builds
a ``jsonschema`` validator for a schema it did not write itself.

jsonschema's defaults trust the schema: a ``$ref`` to an ``http(s)`` URL is fetched with
``urllib`` (no timeout, on the event loop, past the SSRF guard of
:mod:`roost.knowledge.fetching`), ``uniqueItems`` on an array it cannot sort compares
every pair of items (8,000 items held the event loop a minute), and ``multipleOf`` with a
fractional divisor raises ``OverflowError`` for a 400-digit integer.  Here a ``$ref``
resolves only within the schema (and the metaschemas), which makes any other an
:class:`Unresolvable`; ``uniqueItems`` hashes each item's canonical JSON once; an
overflowing ``multipleOf`` is a failed check of that value.  Patterns are matched with a
time limit (:mod:`roost.tools.schemaregex`), in the ``regex`` module: the metaschema's
format "regex" check requires of a pattern that ``re`` compiles it and that ``regex`` can
be made to read it as ``re`` does (:func:`schemaregex.for_regex`).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from typing import Any, Final

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema import _keywords as keywords
from jsonschema.validators import extend, validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from roost.tools import schemaregex

schemaregex.install()

# The pattern Roost's own tool schemas give a string that PostgreSQL must be able to store
# (text and jsonb hold no U+0000); a failure of it is described as such.
NO_NUL_PATTERN: Final = "^[^\\x00]*$"

# A registry with no ``retrieve``: a $ref outside the schema resolves nowhere (it is never
# fetched); jsonschema adds the metaschemas to it.
_OFFLINE: Final[Registry[Any]] = Registry()


def _canonical(value: Any) -> Any:
    """``value`` with what JSON Schema counts equal made equal: 1.0 is 1 (``True`` stays
    ``true``, not 1: JSON Schema tells booleans from numbers)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_canonical(item), sort_keys=True, separators=(",", ":"))
        if key in seen:
            # Not the items (they may be secrets, and the array large).
            yield ValidationError("the array has non-unique elements")
            return
        seen.add(key)


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterator[Any]:
    try:
        yield from keywords.multipleOf(validator, divisor, instance, schema)
    except OverflowError:
        yield ValidationError(f"the number is too large to check against multipleOf {divisor}")


def _is_regex(instance: object) -> bool:
    if isinstance(instance, str):
        with warnings.catch_warnings():  # "possible nested set": [[:alpha:]] is one here
            warnings.simplefilter("ignore", FutureWarning)
            re.compile(instance)
        schemaregex.for_regex(instance)
    return True


_CLASSES: dict[type, Any] = {}  # jsonschema's validator class -> ours
_FORMATS: dict[type, FormatChecker] = {}  # jsonschema's validator class -> its metaschema's


def _format_checker(base: Any) -> FormatChecker:
    """The format checks of ``base``'s metaschema (as ``check_schema`` makes them), "regex"
    replaced by :func:`_is_regex`."""
    checker = _FORMATS.get(base)
    if checker is None:
        checker = FormatChecker(())
        checker.checkers = dict(validator_for(base.META_SCHEMA, default=base)
                                .FORMAT_CHECKER.checkers)
        checker.checks("regex", raises=(re.error, schemaregex.PatternUnusable))(_is_regex)
        _FORMATS[base] = checker
    return checker


def build(schema: dict[str, Any]) -> Any:
    """The validator of ``schema`` (its ``$schema``'s draft, 2020-12 by default), after
    checking the schema against its metaschema (raises ``SchemaError``)."""
    base = validator_for(schema, default=Draft202012Validator)
    base.check_schema(schema, format_checker=_format_checker(base))
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = extend(base, {"uniqueItems": _unique_items,
                                             "multipleOf": _multiple_of})
    return cls(schema, registry=_OFFLINE)


__all__ = ["Unresolvable", "build"]
