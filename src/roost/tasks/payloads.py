"""Checking that a payload or a result is a JSON object PostgreSQL's ``jsonb`` will store."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64


class PayloadError(ValueError):
    """The value cannot be stored as jsonb; the message says why, for a person to fix."""


def _check(value: Any, depth: int, path: str) -> None:
    if depth > MAX_DEPTH:
        raise PayloadError(f"nested deeper than {MAX_DEPTH} levels at {path}")
    if isinstance(value, str):
        # jsonb cannot hold U+0000, and a lone surrogate is not valid UTF-8.
        if "\x00" in value:
            raise PayloadError(f"string at {path} contains a NUL character (U+0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PayloadError(f"string at {path} is not valid Unicode") from exc
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"number at {path} is {value}; JSON has no NaN or Infinity")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"key {key!r} at {path} is not a string")
            _check(key, depth + 1, path)
            _check(item, depth + 1, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, depth + 1, f"{path}[{index}]")
    else:
        raise PayloadError(f"value at {path} is a {type(value).__name__}, not JSON")


def dump_json_object(value: Any, *, what: str = "payload") -> str:
    """Serialise ``value`` (a dict) to compact JSON text after checking it fits jsonb."""
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object, got {type(value).__name__}")
    _check(value, 0, "$")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # an integer of more than 4300 digits (sys.set_int_max_str_digits)
        raise PayloadError(f"{what} cannot be written as JSON: {exc}") from None


def storable_text(value: str) -> str:
    """``value`` as PostgreSQL text and jsonb can hold it: a NUL becomes ``\\x00`` and a
    lone surrogate its backslash escape (``\\udcff``), as Python would write them.  For
    text the worker records but did not choose: exception messages and tracebacks."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def is_storable_text(value: str) -> bool:
    """No NUL and no lone surrogate: text PostgreSQL can store as it is."""
    return storable_text(value) == value
