"""The base of every request body: a client that sends the wrong JSON type has a bug.

Pydantic's lax mode turns ``0`` into ``False`` and ``0`` into 1970-01-01.  Its strict
mode cannot simply be switched on for request bodies: FastAPI validates the decoded
JSON in Python mode, where strict mode would also refuse the ISO strings that JSON
timestamps are.  So :class:`StrictInput` checks, before Pydantic converts, the fields
declared ``bool``, ``date``, ``datetime``, ``int`` or ``float`` (optionally ``| None``): a
boolean must be a JSON boolean, a number a JSON number (not ``false`` nor ``"3"``), a day an
ISO ``YYYY-MM-DD`` string (not a number, which lax parsing takes as seconds since 1970, nor
a timestamp), a timestamp an
ISO 8601 string (not a number, nor a string of digits) with its UTC offset: a moment a
client stores (an expiry, a due date, a fact's start) is refused without one rather than
guessed (server time? UTC?).  Query filters over a range (``since``/``until`` on reports
and lists) read a bare timestamp as UTC instead: nothing is stored from them.  Other
types keep Pydantic's usual parsing (UUIDs and enums arrive as strings).
"""

from __future__ import annotations

import json
import re
import types
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from roost.errors import Unprocessable
from roost.textchars import FILLERS as FILLERS
from roost.textchars import is_invisible as is_invisible

# One way to match a run of digits (an optional "." and more in one group): with
# "\d+\.?\d*" a run of n digits could be split n ways, each tried to the end, and 30,000
# digits and a letter held the event loop for 47 s.
_NUMERIC = re.compile(r"^\s*[-+]?(\d+(?:\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_Kind = Literal["bool", "date", "datetime", "int", "float", ""]
_KINDS: dict[type, dict[str, _Kind]] = {}


def strict_kind(annotation: Any) -> _Kind:
    """What StrictInput checks for a field of this type: ``bool``, ``date``, ``datetime``,
    ``int`` or ``float`` (also with ``| None``); an empty string for any other type."""
    if annotation is bool:
        return "bool"
    if annotation is datetime:
        return "datetime"
    if annotation is date:  # after datetime, which is a date too
        return "date"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if get_origin(annotation) is Annotated:  # ``Annotated[int, Field(ge=0)] | None``
        return strict_kind(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = {strict_kind(a) for a in get_args(annotation) if a is not type(None)}
        others = [a for a in get_args(annotation) if a is not type(None)]
        if len(others) == 1 and kinds != {""}:
            return kinds.pop()
    return ""


class StrictInput(BaseModel):
    """Request body base: unknown fields refused, booleans and timestamps strictly typed."""

    model_config = ConfigDict(extra="forbid")
    # True where the input is a model's answer, not a client's request: a timestamp
    # without an offset is then read as UTC rather than refused.
    naive_is_utc: ClassVar[bool] = False
    # True where every text is stored as text (PostgreSQL keeps no NUL in text or jsonb):
    # a NUL anywhere in a field is a 422 naming it, not the database's anonymous 400.
    # Off by default: encrypted fields (chat messages) may hold any character.
    refuse_nul: ClassVar[bool] = False

    @classmethod
    def _field_kind(cls, name: str) -> _Kind:
        kinds = _KINDS.get(cls)
        if kinds is None:
            kinds = _KINDS[cls] = {n: strict_kind(f.annotation) for n, f in cls.model_fields.items()}
        return kinds.get(name, "")

    @field_validator("*", mode="before")
    @classmethod
    def _json_types(cls, value: Any, info: ValidationInfo) -> Any:
        if cls.refuse_nul and holds_nul(value):
            raise _nul_refused()
        kind = cls._field_kind(info.field_name or "")
        if not kind or value is None:
            return value
        if kind == "bool" and not isinstance(value, bool):
            raise PydanticCustomError("bool_type", "Input should be a JSON boolean (true or false)")
        if kind in ("int", "float") and isinstance(value, bool | str):
            raise PydanticCustomError(f"{kind}_type", "Input should be a JSON number")
        if kind == "date":
            return require_iso_day(value)
        if kind == "datetime":
            return _with_offset(require_iso_timestamp(value), naive_is_utc=cls.naive_is_utc)
        return value


def _nul_refused() -> PydanticCustomError:
    return PydanticCustomError("nul_character", "must not contain a NUL character")


def no_nul(value: Any) -> Any:
    """A ``BeforeValidator`` for one text field of a model that does not refuse NUL in
    every field (``refuse_nul``): a NUL is a 422 naming the field."""
    if isinstance(value, str) and "\x00" in value:
        raise _nul_refused()
    return value


def holds_nul(value: Any) -> bool:
    """A string (value or key) in a JSON value holds a NUL character, at any depth (walked
    with a stack, not recursion: a body's parser bounds nesting, other callers' values
    need not be)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            if any("\x00" in str(k) for k in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _with_offset(value: Any, *, naive_is_utc: bool) -> Any:
    """A timestamp that names its UTC offset, as a datetime; a naive one refused (or read
    as UTC for a model's answer).  A string ``fromisoformat`` cannot read is left to
    Pydantic, which refuses it with its own message."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is not None:
        return in_utc_range(value)
    if naive_is_utc:
        return in_utc_range(value.replace(tzinfo=UTC))
    raise PydanticCustomError(
        "timezone_aware", "Input should carry its UTC offset, e.g. 2027-01-01T00:00:00Z or +02:00")


# The first and last moments ``datetime`` holds: asyncpg stores them as PostgreSQL's
# ``-infinity`` and ``infinity``, and reads those back as naive datetimes, which no aware
# one compares with (a TypeError, a 500, wherever such a row is checked against the time).
_FIRST: Final = datetime.min.replace(tzinfo=UTC)
_LAST: Final = datetime.max.replace(tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def in_utc_range(moment: datetime) -> datetime:
    """``moment`` in UTC, refused when it is not a moment of years 1-9999 in UTC
    (``0001-01-01T00:00:00+14:00`` is in year 0): the database's answer to it was a
    "value out of range" that named no field.  The very first and last moments
    (``0001-01-01T00:00:00Z``, ``9999-12-31T23:59:59.999999Z``) move one microsecond
    inwards, so that nothing is stored as an infinity by accident.  In UTC, as every read
    answers it: a create answered ``+05:45`` what a read of the same row answered ``Z``."""
    try:
        in_utc = moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "Input should be a moment between the years 1 and 9999 in UTC"
        ) from None
    if in_utc == _FIRST:
        return _FIRST + _MICROSECOND
    if in_utc == _LAST:
        return _LAST - _MICROSECOND
    return in_utc


def require_iso_timestamp(value: Any) -> Any:
    """An ISO 8601 string (or a datetime), never a number or a string of digits, which
    lax parsing would take as seconds since 1970."""
    if isinstance(value, datetime) or (isinstance(value, str) and not _NUMERIC.match(value)):
        return value
    raise PydanticCustomError(
        "datetime_type", "Input should be an ISO 8601 timestamp string, e.g. 2027-01-01T00:00:00Z")


def require_iso_day(value: Any) -> Any:
    """An ISO ``YYYY-MM-DD`` string (or a date), never a number (lax parsing reads ``0`` as
    1970-01-01) nor a timestamp.  A day that does not exist (``2027-02-30``) is left to
    Pydantic, which refuses it with its own message."""
    if (isinstance(value, date) and not isinstance(value, datetime)) or (
            isinstance(value, str) and _ISO_DAY.match(value)):
        return value
    raise PydanticCustomError("date_type", "Input should be an ISO 8601 date string, e.g. 2027-01-31")


def read_as_utc(moment: datetime) -> datetime:
    """A filter's bound: without an offset, UTC (not the server's local time, which is what
    the driver would make of a naive value)."""
    return in_utc_range(moment) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# For query parameters (always strings): ``?since=0.5`` is a mistake, not 1970; a bound
# without an offset is UTC.
IsoDatetime = Annotated[datetime, BeforeValidator(require_iso_timestamp),
                        AfterValidator(read_as_utc)]
# As given, for a service that refuses a time without an offset itself: in a calendar a
# bare time reads as a wall time in some zone, so guessing UTC would be wrong.
IsoDatetimeAsGiven = Annotated[datetime, BeforeValidator(require_iso_timestamp)]


_CONTROL: Final = frozenset({"Cc", "Zl", "Zp"})


def holds_control(value: str) -> bool:
    """Whether ``value`` holds a control character: Unicode categories Cc, Zl and Zp (the
    C0 and C1 controls such as BEL, ESC, DEL, CSI and NEL, and the line and paragraph
    separators), which a terminal, a log line or a mail header would act on."""
    return any(unicodedata.category(c) in _CONTROL for c in value)


def is_blank(value: str) -> bool:
    """Whether ``value`` shows nothing (:func:`is_invisible` characters only), which
    ``str.strip`` does not see: a name of three zero-width spaces passed as text."""
    return all(is_invisible(c) for c in value)


def strip_invisible(value: str) -> str:
    """``value`` without the :func:`is_invisible` characters around it (a pasted text's
    trailing zero-width space)."""
    return strip_where(value, is_invisible)


def strip_where(value: str, loose: Callable[[str], bool]) -> str:
    """``value`` without the characters ``loose`` picks at either end."""
    start, end = 0, len(value)
    while start < end and loose(value[start]):
        start += 1
    while end > start and loose(value[end - 1]):
        end -= 1
    return value[start:end]


def parsed_url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``value`` if it is a URL a client could open: one of ``schemes``, a host, a port in
    range.  A pattern such as ``^https?://\\S+$`` lets ``http://[::1`` or
    ``https://:99999/`` through, which every reader of the field then fails on; nor may
    it hold a control character (Unicode categories Cc, Zl, Zp: BEL, ESC, DEL, NEL...),
    which no URL holds unescaped and which a terminal or a log would act on."""
    if holds_control(value):
        raise PydanticCustomError(
            "url_parsing", "Input should be a valid URL: it holds a control character")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (reading it checks it: not a number, or out of range)
    except ValueError as exc:  # its words, not the value (which the message must not echo)
        reason = ("its port is not a number from 0 to 65535" if "Port" in str(exc) else
                  "its [IPv6 host] is malformed" if "IPv6" in str(exc) else "it does not parse")
        raise PydanticCustomError("url_parsing", "Input should be a valid URL: {reason}",
                                  {"reason": reason}) from None
    if parts.scheme.lower() not in schemes:
        raise PydanticCustomError("url_scheme", "URL scheme should be one of: {schemes}",
                                  {"schemes": ", ".join(schemes)})
    if not parts.hostname:
        raise PydanticCustomError("url_parsing", "Input should be a valid URL: it has no host")
    return value


def json_size(value: Any) -> int:
    """The bytes ``value`` takes as compact UTF-8 JSON: what an "at most N bytes of JSON"
    limit counts (not ``json.dumps``'s ASCII escapes, six bytes for an "é", nor its
    spaced separators)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


# An http(s) URL that parses (with a field's own length limit and pattern beside it).
WebUrl = AfterValidator(parsed_url)


_Model = TypeVar("_Model", bound=BaseModel)


def parse_tool_arguments(model: type[_Model], tool: str, arguments: dict[str, Any]) -> _Model:
    """A built-in tool's arguments as ``model``, or a 422 naming each bad field and why
    (at most five; never echoing the values, which a model may have copied from a
    conversation)."""
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise Unprocessable(f"{tool} arguments are not valid: {problems}"[:600]) from None
