"""The regular expressions of JSON Schemas (``pattern``, ``patternProperties``) matched
with a time limit.

A tool's input schema comes from whoever defined the tool (a persona's tool, an MCP
server a user registered) and its arguments from whoever calls it: ``{"pattern":
"^(\\w+\\s?)*$"}`` and 30 characters took Python's ``re`` over a minute, on the API's event
loop.  jsonschema calls ``re.search`` from its keyword modules; :func:`install` gives
those modules an ``re`` whose ``search`` runs in the ``regex`` module (the same syntax)
with the remaining time of the validation in progress (:func:`budget`,
:data:`BUDGET_S` in all) as its timeout, and raises :class:`PatternTooSlow` past it.
Everything else they use of ``re`` is ``re`` itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import jsonschema._keywords
import jsonschema._legacy_keywords
import jsonschema._utils
import regex

BUDGET_S: Final = 0.5
_DEADLINE: ContextVar[float | None] = ContextVar("schema_regex_deadline", default=None)


class PatternTooSlow(Exception):
    """Matching a schema's pattern ran past the validation's time budget."""

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self.pattern = pattern


class _TimedRe:
    """Stands for ``re`` in jsonschema's keyword modules."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def search(pattern: str, string: str, flags: int = 0) -> Any:
        deadline = _DEADLINE.get()
        timeout = BUDGET_S if deadline is None else max(deadline - time.monotonic(), 0.001)
        try:
            return regex.search(pattern, string, flags, timeout=timeout)
        except TimeoutError:
            raise PatternTooSlow(str(pattern)) from None


def install() -> None:
    """Route jsonschema's pattern matching through :class:`_TimedRe` (idempotent)."""
    for module in (jsonschema._keywords, jsonschema._utils, jsonschema._legacy_keywords):
        module.re = _TimedRe()  # type: ignore[attr-defined]


@contextmanager
def budget() -> Iterator[None]:
    """One validation's time for all its pattern matches: :data:`BUDGET_S`."""
    token = _DEADLINE.set(time.monotonic() + BUDGET_S)
    try:
        yield
    finally:
        _DEADLINE.reset(token)
