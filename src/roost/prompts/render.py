"""Prompt variables and rendering: ``{{name}}`` placeholders, substituted in one pass.

No template language on purpose: a prompt is data anyone with a key may publish, so it
must not reach attributes, call anything or loop.  A placeholder is ``{{`` a name ``}}``
(spaces allowed inside); a value is inserted as text and never expanded again, so a value
containing ``{{x}}`` stays literal.  ``{{{{`` is not special: write the braces you mean.

Definitions (``variables``): ``[{"name", "type", "required", "default", "description"}]``,
``type`` one of string, number, integer, boolean.  Publishing checks that every
placeholder of the text is defined; rendering checks the supplied values against them
(missing required ones, unknown names and wrong types are 422s that name the variable).

The rendered text is at most ``MAX_RENDERED_CHARS`` characters: its length is computed
from the placeholders and the values before anything is substituted, and a longer one is
a 422 (:class:`RenderedTooLong`).  Without it a 100,000-character text of ``{{a}}`` and a
2 kB value made a 40 MB answer, and a value as large as a request 200 GB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from roost.config import PROMPT_PLACEHOLDER as PLACEHOLDER
from roost.config import invisible_placeholder
from roost.errors import Unprocessable

TYPES: Final = {"string": (str,), "number": (int, float), "integer": (int,),
                "boolean": (bool,)}
FLOAT_DIGITS: Final = 10**16
"""From here on, Python prints a whole float with an exponent (1e+16)."""
MAX_RENDERED_CHARS: Final = 1_000_000
"""The longest rendered prompt (ten times the longest text), wherever a prompt is rendered."""


class InvalidVariables(Unprocessable):
    title, type_slug = "Invalid prompt variables", "invalid-prompt-variables"


class RenderedTooLong(Unprocessable):
    title, type_slug = "Rendered prompt too long", "rendered-prompt-too-long"


def placeholders(text: str) -> list[str]:
    """The distinct placeholder names of ``text``, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def _type_ok(kind: str, value: Any) -> bool:
    if kind != "boolean" and isinstance(value, bool):
        return False  # True is an int in Python, not a number in a prompt
    return isinstance(value, TYPES[kind])


def _as_text(kind: str, value: Any) -> str:
    """A value as the rendered text has it: booleans as JSON writes them; a number as a
    float prints when it is a whole one of 16 digits or more.  The database keeps no
    difference between 1e16 and 10000000000000000 (a stored default of 1.5e300 comes back
    as a 301-digit integer), nor between -0.0 and 0.0, so a default and the same value
    supplied render alike."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value == 0:
        return "0.0"  # -0.0 too: a stored default (jsonb numeric) has no negative zero
    if kind == "number" and isinstance(value, int) and abs(value) >= FLOAT_DIGITS:
        try:
            return str(float(value))
        except OverflowError:  # beyond a float's range: only the digits say it
            return str(value)
    return str(value)


def check_definitions(text: str, variables: Sequence[Mapping[str, Any]]) -> None:
    """A version's definitions fit its text: unique names, valid defaults, and every
    placeholder defined (a typo would otherwise render as literal braces forever)."""
    seen: set[str] = set()
    for var in variables:
        name, kind = str(var["name"]), str(var.get("type", "string"))
        if name in seen:
            raise InvalidVariables(f"variable {name!r} is defined twice",
                                   extra={"variable": name})
        seen.add(name)
        default = var.get("default")
        if default is not None and not _type_ok(kind, default):
            raise InvalidVariables(f"the default of variable {name!r} is not a {kind}",
                                   extra={"variable": name})
    undefined = [n for n in placeholders(text) if n not in seen]
    if undefined:
        raise InvalidVariables(
            f"the text uses {{{{{undefined[0]}}}}} but no variable {undefined[0]!r} is defined: "
            "add it to variables", extra={"variables": undefined})
    # "{{<zero-width space>who}}" looks like {{who}} but is no placeholder: its braces
    # would render literally whatever the values (a paste from a web page or chat).
    hidden = invisible_placeholder(text)
    if hidden is not None:
        raise InvalidVariables(
            f"the text has {{{{{hidden}}}}} with an invisible character inside "
            "(a zero-width space, a joiner...): it is no placeholder and would render "
            "as literal braces; type it again without", extra={"variable": hidden})
    # A version whose own defaults render too long could be published, then fail every
    # use (a chat.system one: every chat reply) until its label moved.
    length = rendered_length(text, {
        str(var["name"]): "" if var.get("default") is None else
        _as_text(str(var.get("type", "string")), var["default"]) for var in variables})
    if length > MAX_RENDERED_CHARS:
        raise RenderedTooLong(
            f"with its defaults the prompt would render {length:,} characters; the limit is "
            f"{MAX_RENDERED_CHARS:,}: shorten the defaults (or the text's use of them)",
            extra={"limit": MAX_RENDERED_CHARS})


def rendered_length(text: str, resolved: Mapping[str, str]) -> int:
    """The length of ``text`` with the ``resolved`` values in its placeholders, computed
    before anything is substituted."""
    length = len(text)
    for match in PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name in resolved:
            length += len(resolved[name]) - (match.end() - match.start())
    return length


def render(text: str, variables: Sequence[Mapping[str, Any]], values: Mapping[str, Any], *,
           ignore_unknown: bool = False) -> str:
    """``text`` with its placeholders replaced.  ``ignore_unknown``: Roost's own callers
    (chat, agents) offer a fixed set of values, of which a prompt uses what it defines."""
    defined = {str(v["name"]): v for v in variables}
    unknown = [k for k in values if k not in defined]
    if unknown and not ignore_unknown:
        raise InvalidVariables(f"unknown variable {unknown[0]!r}: this version defines "
                               f"{', '.join(sorted(defined)) or 'none'}",
                               extra={"variables": unknown})
    resolved: dict[str, str] = {}
    missing: list[str] = []
    for name, var in defined.items():
        if name in values and values[name] is not None:
            value = values[name]
            kind = str(var.get("type", "string"))
            if not _type_ok(kind, value):
                raise InvalidVariables(f"variable {name!r} must be a {kind}",
                                       extra={"variable": name})
        elif var.get("default") is not None:
            value = var["default"]
        elif var.get("required", True):
            missing.append(name)
            continue
        else:
            value = ""
        resolved[name] = _as_text(str(var.get("type", "string")), value)
    if missing:
        raise InvalidVariables(f"missing required variable {missing[0]!r}",
                               extra={"variables": missing})
    length = rendered_length(text, resolved)
    if length > MAX_RENDERED_CHARS:
        raise RenderedTooLong(
            f"the rendered prompt would be {length:,} characters; the limit is "
            f"{MAX_RENDERED_CHARS:,}: shorten the values (or the text's use of them)",
            extra={"limit": MAX_RENDERED_CHARS})
    return PLACEHOLDER.sub(lambda m: resolved.get(m.group(1), m.group(0)), text)
