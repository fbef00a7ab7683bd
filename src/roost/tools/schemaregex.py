"""The regular expressions of JSON Schemas (``pattern``, ``patternProperties``) matched
with a time limit.

A tool's input schema comes from whoever defined the tool (a persona's tool, an MCP
server a user registered) and its arguments from whoever calls it: ``{"pattern":
"^(\\w+\\s?)*$"}`` and 30 characters took Python's ``re`` over a minute, on the API's event
loop.  jsonschema calls ``re.search`` from its keyword modules; :func:`install` gives
those modules an ``re`` whose ``search`` runs in the ``regex`` module with the remaining
time of the validation in progress (:func:`budget`, :data:`BUDGET_S` in all) as its
timeout, and raises :class:`PatternTooSlow` past it.  Everything else they use of ``re``
is ``re`` itself.

A schema's patterns are checked with ``re`` (the metaschema's format "regex"), and
``regex`` reads a few of the patterns ``re`` accepts otherwise: ``[[:alpha:]]`` is, in
``re`` as in ECMA-262, the set ``[:alph`` then a literal ``]``, a POSIX class in
``regex`` (and ``[[:foo:]]`` an error); ``a{e<=1}`` is literal text in ``re``, a fuzzy
match in ``regex``.  :func:`for_regex` escapes those characters so that ``regex`` reads
what ``re`` reads; a pattern it cannot make so is :class:`PatternUnusable`.
"""

from __future__ import annotations

import functools
import re
import re._parser as re_parser  # the parse of a pattern, to compare two spellings
import time
import warnings
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


class PatternUnusable(Exception):
    """A schema's pattern that ``regex`` cannot match as ``re`` reads it."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"{pattern[:200]!r}: {reason}")
        self.pattern = pattern


# A "{" that re reads as a repeat (sre_parse: digits, optionally a comma and digits, "}";
# "{}" is literal); any other "{" is a literal in re, and maybe a fuzzy match in regex.
_RE_REPEAT: Final = re.compile(r"\{(?!\})[0-9]*(?:,[0-9]*)?\}")

# "(?x:" or "(?-x:": verbose mode (comments) for part of a pattern.
_SCOPED_VERBOSE: Final = re.compile(r"\(\?[a-zA-Z-]*x[a-zA-Z-]*:")


def _escaped(pattern: str) -> str:
    """``pattern`` with a backslash before each "{" that ``re`` reads literally and each
    ":" after a "[" within a set (``re`` reads both as themselves, escaped or not)."""
    verbose = bool(re.compile(pattern).flags & re.VERBOSE)
    out: list[str] = []
    i, end, in_set = 0, len(pattern), False
    while i < end:
        char = pattern[i]
        if char == "\\":  # "\\N{DIGIT ONE}" whole, its braces no repeat
            stop = pattern.find("}", i) + 1 if pattern.startswith("N{", i + 1) else i + 2
            out.append(pattern[i:stop or end])
            i = stop or end
            continue
        if in_set:
            if char == "]":
                in_set = False
            elif char == "[" and pattern.startswith(":", i + 1):
                out.append("[\\:")
                i += 2
                continue
        elif char == "[":
            in_set = True
            # A "]" first in the set ("[]a]", "[^]a]") is one of its characters.
            first = i + 2 if pattern.startswith("^", i + 1) else i + 1
            if pattern.startswith("]", first):
                first += 1
            out.append(pattern[i:first])
            i = first
            continue
        elif char == "(" and pattern.startswith("(?#", i):  # a comment, to the first ")"
            stop = pattern.find(")", i) + 1
            out.append(pattern[i:stop or end])
            i = stop or end
            continue
        elif char == "(" and _SCOPED_VERBOSE.match(pattern, i):
            # Its comments would need following the scopes: not worth it (nor ECMA-262).
            raise PatternUnusable(pattern, "the x flag is only supported for a whole pattern")
        elif char == "#" and verbose:  # a comment, to the end of the line
            newline = pattern.find("\n", i)
            stop = end if newline < 0 else newline
            out.append(pattern[i:stop])
            i = stop
            continue
        elif char == "{" and not _RE_REPEAT.match(pattern, i):
            out.append("\\{")
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def for_regex(pattern: str) -> str:
    """``pattern`` as ``regex`` must be given it to read what ``re`` reads (raises
    :class:`PatternUnusable`; ``re.error`` when ``re`` refuses it)."""
    with warnings.catch_warnings():  # "possible nested set": [[:alpha:]] is one for re
        warnings.simplefilter("ignore", FutureWarning)
        escaped = _escaped(pattern)
        # The escapes are there to change nothing for re: should one do, it is refused.
        if repr(re_parser.parse(escaped)) != repr(re_parser.parse(pattern)):
            raise PatternUnusable(pattern, "cannot be matched as written")
    try:
        regex.compile(escaped)
    except regex.error as exc:
        raise PatternUnusable(pattern, f"the regex module refuses it ({exc})") from None
    return escaped


class _TimedRe:
    """Stands for ``re`` in jsonschema's keyword modules."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def search(pattern: str, string: str, flags: int = 0) -> Any:
        deadline = _DEADLINE.get()
        timeout = BUDGET_S if deadline is None else max(deadline - time.monotonic(), 0.001)
        try:
            return regex.search(for_regex(str(pattern)), string, flags, timeout=timeout)
        except TimeoutError:
            raise PatternTooSlow(str(pattern)) from None
        except (regex.error, re.error) as exc:  # a difference for_regex does not know yet
            raise PatternUnusable(str(pattern), f"cannot be matched ({exc})") from None


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
