"""iCalendar (RFC 5545) files: read a VCALENDAR into event values, write one from events
(the ``icalendar`` package parses and serialises; the rules are checked here).

Import reads each VEVENT's UID, DTSTART, DTEND or DURATION, SUMMARY, DESCRIPTION,
LOCATION, CATEGORIES (the first is ``category``, all of them ``semantic_tags``, unless
Roost's own X-ROOST-CATEGORY and X-ROOST-TAGS are there), RRULE,
RDATE, EXDATE, ATTENDEE, STATUS, TRANSP, the first VALARM's TRIGGER (``reminder_minutes``)
and Roost's own ``X-ROOST-*`` properties (what a Roost export writes for the columns
RFC 5545 has no property for).  A VEVENT with RECURRENCE-ID (one changed occurrence of a
series: moved, changed or STATUS:CANCELLED) is an override (``Parsed.overrides``), read
like any VEVENT, its RECURRENCE-ID like its DTSTART (TZID, floating; a DATE is a day of
its series' zone, resolved by the importer); one with RANGE=THISANDFUTURE or an RRULE/RDATE
of its own is listed in ``skipped``.  Export writes each override after its series, with a
RECURRENCE-ID of the series' type (DATE for an all-day series), and X-ROOST-TIMEZONE on an
all-day event whose zone is not the calendar's (DATE values carry no zone).  Anything
malformed raises :class:`ICalError` naming the component and the property.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import icalendar

from roost.calendar import recurrence
from roost.calendar.recurrence import RecurrenceError
from roost.calendar.schemas import (
    MAX_DESCRIPTION,
    MAX_EMAIL,
    MAX_EXDATES,
    MAX_RDATES,
    MAX_TAGS,
    NO_CONTROL,
    _lf,
)

PRODID: Final = "-//Roost//calendar//EN"
MAX_ATTENDEES: Final = 500
# A file's own time zones: the library turns every VTIMEZONE into transitions from the
# observance's DTSTART (often 1601) on; a rule repeating more often than a few times a
# month (FREQ=HOURLY, BYHOUR, ...) costs minutes of CPU for zones kept as UTC anyway.
MAX_VTIMEZONES: Final = 100
MAX_ZONE_RULES: Final = 200  # RRULEs of STANDARD/DAYLIGHT observances in one file
MAX_ZONE_RDATES: Final = 5_000  # and their RDATE values (each a transition too)
ZONE_FREQS: Final = ("YEARLY", "MONTHLY")
ZONE_RULE_PARTS: Final = frozenset(("FREQ", "UNTIL", "COUNT", "INTERVAL", "BYMONTH", "BYDAY",
                                    "BYMONTHDAY", "BYSETPOS", "WKST"))
ZONE_RULE_PER_YEAR: Final = 24  # a DST rule changes once or twice a year


class ICalError(ValueError):
    """The file is not an iCalendar file Roost can import; the message says where."""


@dataclass
class EventData:
    """An event's values as read from a file (or written to one)."""

    uid: str
    summary: str
    start_time: datetime
    end_time: datetime
    timezone: str = "UTC"
    all_day: bool = False
    description: str | None = None
    location: str | None = None
    category: str = "general"
    semantic_tags: list[str] | None = None
    recurrence_rule: str | None = None
    rdates: list[datetime] = field(default_factory=list)
    exdates: list[datetime] = field(default_factory=list)
    attendees: list[dict[str, Any]] | None = None
    reminder_minutes: int | None = None
    status: str = "confirmed"
    transparent: bool = False
    event_type: str = "meeting"
    movability_score: float = 0.5
    is_movable: bool = True
    importance_weight: float = 1.0
    google_event_id: str | None = None
    recurrence_id: datetime | None = None  # an override: the occurrence it replaces (UTC)


@dataclass
class Override:
    """A changed occurrence read from a file, and where it is (for ``skipped``)."""

    where: str
    data: EventData
    # A DATE RECURRENCE-ID: a day of the series' zone (the importer reads it in the zone
    # of the series, which may not be in this file; ``recurrence_id`` is its midnight in
    # the calendar's zone until then).
    day: date | None = None


@dataclass
class Parsed:
    name: str | None
    events: list[EventData]  # series and single events
    skipped: list[str]
    overrides: list[Override] = field(default_factory=list)


_FOLD_BYTES: Final = re.compile(rb"\r?\n[ \t]")


def _text(component: Any, name: str) -> str | None:
    """A TEXT property's value, line breaks as LF (as the API stores them: a CR kept
    here was exported as LF, and the file's own export then read as changed)."""
    value = component.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0]
    if isinstance(value, icalendar.vUnknown):  # an X- property: TEXT as it was written
        return _lf(_TEXT_ESCAPE.sub(_unescaped, str(value)))
    return _lf(str(value))


# RFC 5545 TEXT escapes (section 3.3.11): what the library undoes for the properties it
# knows, and leaves as written for extension ones.
_TEXT_ESCAPE = re.compile(r"\\([\\;,nN])")


def _unescaped(match: re.Match[str]) -> str:
    return "\n" if match.group(1) in "nN" else match.group(1)


def _zone_name(dt: datetime, default_tz: str) -> str:
    if dt.tzinfo is None:
        return default_tz
    key = getattr(dt.tzinfo, "key", None)
    if isinstance(key, str):
        try:
            recurrence.zone(key)
            return key
        except RecurrenceError:
            pass
    return "UTC"  # a custom VTIMEZONE without an IANA name: instants kept, in UTC


def _instant(value: date | datetime, tz_name: str) -> datetime:
    """A DATE-TIME (aware, or floating in ``tz_name``) or DATE (local midnight) as UTC."""
    tz = recurrence.zone(tz_name)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return recurrence.to_utc(value, tz)
        return value.astimezone(UTC)
    return recurrence.to_utc(datetime.combine(value, datetime.min.time()), tz)


def _dates(component: Any, name: str, tz_name: str, where: str, most: int) -> list[datetime]:
    """RDATE or EXDATE values as UTC instants, at most ``most`` of them (the API's limit)."""
    value = component.get(name)
    if value is None:
        return []
    found: list[datetime] = []
    for item in value if isinstance(value, list) else [value]:
        for dt in getattr(item, "dts", []):
            if isinstance(dt.dt, tuple | timedelta):
                raise ICalError(f"{where}: {name} with a PERIOD value is not supported")
            if len(found) == most:
                raise ICalError(f"{where}: more than {most} {name} values")
            found.append(_instant(dt.dt, tz_name))
    return found


_ADDRESS = re.compile(NO_CONTROL)


def _attendees(component: Any, where: str) -> list[dict[str, Any]] | None:
    value = component.get("ATTENDEE")
    if value is None:
        return None
    people: list[dict[str, Any]] = []
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_ATTENDEES:  # the API's limit of an event (they were cut silently)
        raise ICalError(f"{where}: more than {MAX_ATTENDEES} ATTENDEEs")
    for item in items:
        address = str(item)
        email = address[7:] if address.lower().startswith("mailto:") else address
        # The API's rules for an address (schemas.Attendee): export drops control
        # characters, so one kept here would not read back.
        if not email:
            # No address (``mailto:``): the API refuses an empty email, so the event read
            # back could not be saved again; there is no one to invite, the line is dropped.
            continue
        if len(email) > MAX_EMAIL or not _ADDRESS.fullmatch(email):
            raise ICalError(f"{where}: ATTENDEE address {email[:80]!r} holds a control "
                            f"character or is longer than {MAX_EMAIL} characters")
        person: dict[str, Any] = {"email": email}
        params = getattr(item, "params", {})
        for key, out in (("CN", "name"), ("ROLE", "role"), ("PARTSTAT", "status")):
            if params.get(key):
                person[out] = _lf(str(params[key]))
        people.append(person)
    return people


MAX_REMINDER_MINUTES = 40_320  # four weeks, as the API's reminder_minutes


def _reminder(component: Any, where: str) -> int | None:
    for alarm in component.walk("VALARM"):
        try:
            trigger = alarm.decoded("TRIGGER")
        except (KeyError, ValueError, TypeError, OverflowError):
            continue
        if isinstance(trigger, timedelta) and trigger <= timedelta(0):
            minutes = int(-trigger.total_seconds() // 60)
            if minutes > MAX_REMINDER_MINUTES:
                raise ICalError(f"{where}: VALARM TRIGGER is more than {MAX_REMINDER_MINUTES} "
                                "minutes (four weeks) before the event")
            return minutes
    return None


def _bounded(component: Any, name: str, most: int, where: str) -> str | None:
    """A property kept as it is (an id: cutting it would make another), or refused."""
    value = _text(component, name) or None
    if value is not None and len(value) > most:
        raise ICalError(f"{where}: {name} is longer than {most} characters")
    return value


def _float(component: Any, name: str, default: float, where: str,
           low: float = 0, high: float = 1e6) -> float:
    raw = _text(component, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ICalError(f"{where}: {name} {raw[:40]!r} is not a number") from None
    if not low <= value <= high:
        raise ICalError(f"{where}: {name} must be between {low} and {high}")
    return value


# The library keeps every custom VTIMEZONE it reads in one cache per process, by TZID, the
# first definition winning: a file's own "Corp Time" took the one another account imported
# earlier (its events' instants computed with someone else's offsets), and the cache grew
# with every import.  Each parse starts from an empty cache, one parse at a time (they run
# on the CPU threads, roost.process.cpu_bound).
_PARSING = threading.Lock()

# The VEVENT properties RFC 5545 (3.6.1) allows once, that import reads or that decide an
# event's meaning: the library keeps every copy as a list, and import read the first one
# (a second UID, SUMMARY) or none at all (two DURATIONs: an event of no length).
_ONCE: Final = ("UID", "DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "SUMMARY",
                "DESCRIPTION", "LOCATION", "STATUS", "TRANSP", "CLASS", "PRIORITY",
                "SEQUENCE", "ORGANIZER", "DTSTAMP")


def parse(raw: bytes, default_tz: str) -> Parsed:
    """Every VEVENT of a VCALENDAR; :class:`ICalError` when the file is malformed.  Only
    the file's own VTIMEZONEs define its custom zones."""
    with _PARSING:
        icalendar.timezone.tzp.use_zoneinfo()  # the default provider, with an empty cache
        return _parse(raw, default_tz)


def _parse(raw: bytes, default_tz: str) -> Parsed:
    # Unfolded before decoding (RFC 5545 3.1): a fold may split a UTF-8 character.
    raw = _FOLD_BYTES.sub(b"", raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ICalError("the file is not UTF-8 text") from None
    # A byte order mark (Windows tools write one) is no part of the first line.
    text = text.removeprefix("\ufeff")
    if "\x00" in text:  # no iCalendar value holds one, and PostgreSQL text cannot
        raise ICalError("the file holds a NUL character")
    if "BEGIN:VCALENDAR" not in text[:4096].upper():
        raise ICalError("not an iCalendar file: it must start with BEGIN:VCALENDAR")
    _check_timezones(text)
    try:
        cal = icalendar.Calendar.from_ical(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ICalError(f"malformed iCalendar: {str(exc)[:200]}") from None
    except OSError:  # the library opens a TZID naming a folder of zones ("America") as one
        raise ICalError("a TZID names a group of time zones (such as America), not a zone: "
                        "use an IANA name such as America/New_York") from None
    if getattr(cal, "name", None) != "VCALENDAR":
        raise ICalError("not an iCalendar file: the top component must be VCALENDAR")
    events: list[EventData] = []
    overrides: list[Override] = []
    skipped: list[str] = []
    seen: set[str] = set()
    seen_overrides: set[tuple[str, datetime]] = set()
    vevents = [c for c in cal.subcomponents if getattr(c, "name", None) == "VEVENT"]
    if len(cal.walk("VEVENT")) != len(vevents):
        # RFC 5545 places a VEVENT right in the VCALENDAR; one nested in another
        # component (a VEVENT, a VTODO) is a broken file, not an event to import as well.
        raise ICalError("a VEVENT is nested inside another component: events must be "
                        "components of the VCALENDAR itself")
    for index, component in enumerate(vevents, start=1):
        for prop in _ONCE:
            if isinstance(component.get(prop), list):
                raise ICalError(f"VEVENT #{index}: {prop} appears more than once (RFC 5545 "
                                "allows it once in an event)")
        uid = _text(component, "UID")
        where = f"VEVENT #{index}" + (f" (UID {uid[:80]})" if uid else "")
        if component.get("DTEND") is not None and component.get("DURATION") is not None:
            raise ICalError(f"{where}: DTEND and DURATION are both given (RFC 5545 allows "
                            "one of them)")
        errors = [(prop, msg) for prop, msg in getattr(component, "errors", [])
                  if prop in ("DTSTART", "DTEND", "DURATION", "RRULE", "EXDATE", "RDATE", "UID",
                              "RECURRENCE-ID")]
        if errors:
            raise ICalError(f"{where}: {errors[0][0]} is malformed ({str(errors[0][1])[:120]})")
        if not uid:
            raise ICalError(f"{where}: UID is required (import is idempotent by UID)")
        if len(uid) > 255:
            raise ICalError(f"{where}: UID is longer than 255 characters")
        if not _ADDRESS.fullmatch(uid):  # the API's rule (NO_CONTROL): export rewrote it
            raise ICalError(f"{where}: UID holds a control character")
        try:
            found = _override(component, uid, where, default_tz) \
                if component.get("RECURRENCE-ID") is not None else None
            event = _event(component, uid, where, default_tz) if found is None else None
        except OverflowError:  # a date plus a duration past year 9999 (or before year 1)
            raise ICalError(f"{where}: a date, or a date plus its DURATION, is outside the "
                            "years 1 to 9999") from None
        if found is not None:
            if isinstance(found, str):
                skipped.append(found)
                continue
            key = (uid, found.data.recurrence_id or found.data.start_time)
            if key in seen_overrides:
                raise ICalError(f"{where}: RECURRENCE-ID appears twice for this UID")
            seen_overrides.add(key)
            overrides.append(found)
            continue
        if uid in seen:
            raise ICalError(f"{where}: UID appears twice in the file")
        seen.add(uid)
        assert event is not None
        events.append(event)
    return Parsed(name=_text(cal, "X-WR-CALNAME"), events=events, skipped=skipped,
                  overrides=overrides)


_FOLD = re.compile(r"\r?\n[ \t]")
_LINES = re.compile(r"\r\n|\n|\r")


def _check_timezones(text: str) -> None:
    """Refuse, before the library reads them, VTIMEZONEs that would cost it minutes: more
    than ``MAX_VTIMEZONES``, more than ``MAX_ZONE_RULES`` observance RRULEs or
    ``MAX_ZONE_RDATES`` RDATE values, or a rule repeating more often than
    ``ZONE_RULE_PER_YEAR`` times a year (one pass over the unfolded lines)."""
    if "VTIMEZONE" not in text.upper():
        return
    zones = rules = rdates = 0
    in_zone = in_observance = False
    for line in _LINES.split(_FOLD.sub("", text)):
        upper = line.upper()
        if upper.startswith(("BEGIN:", "END:")):
            begin, name = upper.startswith("BEGIN:"), upper.split(":", 1)[1].strip()
            if name == "VTIMEZONE":
                in_zone, in_observance = begin, False
                zones += begin
                if zones > MAX_VTIMEZONES:
                    raise ICalError(f"more than {MAX_VTIMEZONES} VTIMEZONE components")
            elif in_zone and name in ("STANDARD", "DAYLIGHT"):
                in_observance = begin
            continue
        if in_observance and upper.startswith(("RRULE:", "RRULE;")):
            rules += 1
            if rules > MAX_ZONE_RULES:
                raise ICalError(f"more than {MAX_ZONE_RULES} RRULEs in VTIMEZONE components")
            _check_zone_rule(upper.split(":", 1)[1] if ":" in upper else "")
        elif in_observance and upper.startswith(("RDATE:", "RDATE;")):
            rdates += upper.count(",") + 1
            if rdates > MAX_ZONE_RDATES:
                raise ICalError(f"more than {MAX_ZONE_RDATES} RDATE values in VTIMEZONE "
                                "components")


def _check_zone_rule(value: str) -> None:
    where = f"VTIMEZONE: RRULE {value[:80]!r}"
    parts: dict[str, list[str]] = {}
    for part in value.split(";"):
        key, _, values = part.partition("=")
        parts[key.strip()] = values.split(",")
    freq = (parts.get("FREQ") or [""])[0]
    if freq not in ZONE_FREQS:
        raise ICalError(f"{where}: a time zone's rule must be FREQ=YEARLY or FREQ=MONTHLY")
    other = sorted(set(parts) - ZONE_RULE_PARTS)
    if other:
        raise ICalError(f"{where}: {other[0]} is not supported in a time zone's rule")
    # At most how often a year it changes the offset (BYSETPOS only selects).
    days = [len(parts[k]) if k == "BYMONTHDAY" else
            sum(1 if d.strip()[:-2] else 5 for d in parts[k])  # -1SU: one a month, SU: 5
            for k in ("BYMONTHDAY", "BYDAY") if k in parts]
    months = len(parts["BYMONTH"]) if "BYMONTH" in parts else \
        1 if freq == "YEARLY" and not days else 12
    if months * min(days, default=1) > ZONE_RULE_PER_YEAR:
        raise ICalError(f"{where}: a time zone's rule may change the offset at most "
                        f"{ZONE_RULE_PER_YEAR} times a year")


def _override(component: Any, uid: str, where: str, default_tz: str) -> Override | str:
    """A VEVENT with RECURRENCE-ID as an override, or why it is skipped."""
    prop = component.get("RECURRENCE-ID")
    if isinstance(prop, list):
        raise ICalError(f"{where}: RECURRENCE-ID appears more than once")
    value = getattr(prop, "dt", None)
    if not isinstance(value, date):
        raise ICalError(f"{where}: RECURRENCE-ID is not a date or date-time")
    tz_name = _zone_name(value, default_tz) if isinstance(value, datetime) else default_tz
    try:
        recurrence_id = _instant(value, tz_name)
    except RecurrenceError as exc:
        raise ICalError(f"{where}: RECURRENCE-ID: {exc}") from None
    stamp = recurrence_id.strftime("%Y%m%dT%H%M%SZ")
    what = f"{where}: the changed occurrence (RECURRENCE-ID {stamp})"
    if str(getattr(prop, "params", {}).get("RANGE", "")).upper() == "THISANDFUTURE":
        return (f"{what} applies to this and the following occurrences (RANGE=THISANDFUTURE):"
                " not supported, only single occurrences are imported")
    if any(component.get(name) is not None for name in ("RRULE", "RDATE", "EXDATE")):
        return f"{what} has a recurrence (RRULE, RDATE or EXDATE) of its own: not supported"
    data = _event(component, uid, where, default_tz)
    data.recurrence_id = recurrence_id
    return Override(where=where, data=data,
                    day=None if isinstance(value, datetime) else value)


def _event(component: Any, uid: str, where: str, default_tz: str) -> EventData:
    if component.get("DTSTART") is None:
        raise ICalError(f"{where}: DTSTART is required")
    try:
        start = component.decoded("DTSTART")
        end = component.decoded("DTEND") if component.get("DTEND") is not None else None
        duration = component.decoded("DURATION") if component.get("DURATION") is not None \
            else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ICalError(f"{where}: DTSTART/DTEND/DURATION: {str(exc)[:120]}") from None
    if not isinstance(start, date):
        raise ICalError(f"{where}: DTSTART is not a date or date-time")
    all_day = not isinstance(start, datetime)
    tz_name = _zone_name(start, default_tz) if isinstance(start, datetime) \
        else _all_day_zone(component, default_tz, where)
    if end is not None and (not isinstance(end, date)
                            or isinstance(end, datetime) == all_day):
        raise ICalError(f"{where}: DTEND must be of the same type as DTSTART (DATE or DATE-TIME)")
    try:
        start_time = _instant(start, tz_name)
        if end is not None:
            end_time = _instant(end, tz_name)
        elif isinstance(duration, timedelta):
            local_start = recurrence.local(start_time, recurrence.zone(tz_name))
            end_time = recurrence.to_utc(local_start + duration, recurrence.zone(tz_name))
        else:
            end_time = _instant(start + timedelta(days=1), tz_name) if all_day else start_time
    except RecurrenceError as exc:
        raise ICalError(f"{where}: {exc}") from None
    if end_time < start_time:
        raise ICalError(f"{where}: DTEND is before DTSTART")
    description = _text(component, "DESCRIPTION")
    if description is not None and len(description) > MAX_DESCRIPTION:  # the API's limit
        raise ICalError(f"{where}: DESCRIPTION is longer than {MAX_DESCRIPTION} characters")
    rule: str | None = None
    rrules = component.get("RRULE")
    if rrules is not None:
        if isinstance(rrules, list):
            if len(rrules) > 1:
                raise ICalError(f"{where}: more than one RRULE is not supported")
            rrules = rrules[0]
        rule = rrules.to_ical().decode()
    data = EventData(
        uid=uid, summary=(_text(component, "SUMMARY") or "(no title)")[:1000],
        start_time=start_time, end_time=end_time, timezone=tz_name, all_day=all_day,
        description=description,
        location=(_text(component, "LOCATION") or None),
        recurrence_rule=rule,
        rdates=_dates(component, "RDATE", tz_name, where, MAX_RDATES),
        exdates=_dates(component, "EXDATE", tz_name, where, MAX_EXDATES),
        attendees=_attendees(component, where), reminder_minutes=_reminder(component, where),
        status=(_text(component, "STATUS") or "CONFIRMED").lower(),
        transparent=(_text(component, "TRANSP") or "").upper() == "TRANSPARENT",
        event_type=(_text(component, "X-ROOST-EVENT-TYPE") or "meeting")[:50],
        movability_score=_float(component, "X-ROOST-MOVABILITY", 0.5, where, 0, 1),
        importance_weight=_float(component, "X-ROOST-IMPORTANCE", 1.0, where, 0, 1000),
        is_movable=(_text(component, "X-ROOST-MOVABLE") or "TRUE").upper() != "FALSE",
        google_event_id=_bounded(component, "X-GOOGLE-EVENT-ID", 255, where),
    )
    if data.location is not None:
        data.location = data.location[:1000]
    if data.status not in ("confirmed", "tentative", "cancelled"):
        data.status = "confirmed"
    _read_categories(component, data, where)
    outside = recurrence.out_of_limits(data.start_time, data.end_time, *data.rdates,
                                       *data.exdates)
    if outside is not None:
        raise ICalError(f"{where}: {outside.isoformat()} is not {recurrence.LIMITS_TEXT}")
    try:
        recurrence.validate(recurrence.Recurring(  # as the API does: RDATEs make a series
            start=data.start_time, end=data.end_time, timezone=tz_name, rule=rule,
            rdates=data.rdates, exdates=data.exdates))
    except RecurrenceError as exc:
        raise ICalError(f"{where}: {'RRULE' if rule else 'RDATE'}: {exc}") from None
    return data


def _all_day_zone(component: Any, default_tz: str, where: str) -> str:
    """The zone of an all-day event: Roost's own X-ROOST-TIMEZONE (what an export writes
    when it is not the calendar's: DATE values carry none), else the calendar's."""
    name = _text(component, "X-ROOST-TIMEZONE")
    if name is None:
        return default_tz
    try:
        recurrence.zone(name)
    except RecurrenceError as exc:
        raise ICalError(f"{where}: X-ROOST-TIMEZONE: {exc}") from None
    return name


def _read_categories(component: Any, data: EventData, where: str) -> None:
    """``category`` and ``semantic_tags``: from Roost's own X-ROOST-CATEGORY and
    X-ROOST-TAGS when the file has them (a Roost export: they read back exactly), else
    from CATEGORIES (the first is the category, all of them the tags)."""
    own = _text(component, "X-ROOST-CATEGORY")
    if own is None:
        categories = _categories(component)
        if len(categories) > MAX_TAGS:  # they become the tags, which export writes back
            raise ICalError(f"{where}: more than {MAX_TAGS} CATEGORIES (the API's limit of "
                            "semantic_tags)")
        if categories:
            data.category = categories[0][:50]
            data.semantic_tags = categories
        return
    data.category = own[:50] or "general"
    raw = _text(component, "X-ROOST-TAGS")
    if raw is None:
        return
    try:
        tags = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: lists nested thousands deep
        tags = None
    if (not isinstance(tags, list) or len(tags) > MAX_TAGS
            or not all(isinstance(t, str) and "\x00" not in t and _utf8(t) for t in tags)):
        raise ICalError(f"{where}: X-ROOST-TAGS must be a JSON list of at most {MAX_TAGS} "
                        "strings")
    data.semantic_tags = tags


def _utf8(text: str) -> bool:
    """Whether ``text`` is characters: a JSON escape of a lone surrogate (``\\ud800``) is
    not one, and PostgreSQL refuses it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _categories(component: Any) -> list[str]:
    value = component.get("CATEGORIES")
    if value is None:
        return []
    found: list[str] = []
    for item in value if isinstance(value, list) else [value]:
        cats = getattr(item, "cats", None)
        found.extend(str(c) for c in (cats if cats is not None else [item]))
    return [c for c in found if c]


def _when(at: datetime, tz_name: str, all_day: bool, *, in_zone: bool = False) -> date | datetime:
    """A stored instant as the event's zone writes it.  The second of a repeated local time
    (a fall-back's hour: 01:45 twice in Australia/Lord_Howe) is written in UTC: a local
    time cannot say which, and read back it is the first, an hour early (``in_zone``: a
    series' start, whose zone its rule is expanded in, stays in it)."""
    if all_day:
        return recurrence.local(at, recurrence.zone(tz_name)).date()
    if tz_name == "UTC" or (not in_zone and _second_of_two(at, tz_name)):
        return at.astimezone(UTC)
    return at.astimezone(recurrence.zone(tz_name))


def _second_of_two(at: datetime, tz_name: str) -> bool:
    local = at.astimezone(recurrence.zone(tz_name))
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _when_list(values: Sequence[datetime], tz_name: str, all_day: bool) -> list[date | datetime]:
    """RDATE and EXDATE values: one property holds one zone, so all in UTC when any must
    be (the second of a repeated local time)."""
    if not all_day and tz_name != "UTC" and any(_second_of_two(v, tz_name) for v in values):
        return [v.astimezone(UTC) for v in values]
    return [_when(v, tz_name, all_day) for v in values]


def build(name: str, events: Iterable[Any], *, description: str | None = None,
          timezone: str | None = None) -> bytes:
    """A VCALENDAR of ``events`` (rows with the columns of ``events``), with a VTIMEZONE
    for every zone used."""
    cal = icalendar.Calendar()
    cal.add("PRODID", PRODID)
    cal.add("VERSION", "2.0")
    cal.add("CALSCALE", "GREGORIAN")
    # X- properties have no declared type: vText escapes what a free text may hold (a
    # newline would break the content line).
    cal.add("X-WR-CALNAME", icalendar.vText(name))
    if description:
        cal.add("X-WR-CALDESC", icalendar.vText(description))
    if timezone:
        cal.add("X-WR-TIMEZONE", icalendar.vText(timezone))
    series: dict[str, Any] = {}
    changed: dict[str, list[Any]] = {}
    rows = list(events)
    for ev in rows:
        if getattr(ev, "recurrence_id", None) is None:
            series[ev.uid] = ev
        else:
            changed.setdefault(ev.uid, []).append(ev)
    for ev in rows:
        if getattr(ev, "recurrence_id", None) is not None:
            if ev.uid not in series:  # no series in this export: on its own
                cal.add_component(_component(ev, ev, timezone))
            continue
        cal.add_component(_component(ev, None, timezone))
        for over in sorted(changed.get(ev.uid, ()), key=lambda o: o.recurrence_id):
            cal.add_component(_component(over, ev, timezone))
    add_missing = getattr(cal, "add_missing_timezones", None)
    if add_missing is not None:
        add_missing()
    data: bytes = cal.to_ical()
    return data


def _occurrence_id(at: datetime, series: Any) -> date | datetime:
    """An override's RECURRENCE-ID in the series' type: a DATE for an all-day series only
    when ``at`` is that day's local midnight (what import reads a DATE as).  An override
    left from before the series became all-day (09:00Z) is written in UTC: as a DATE it
    read back as another occurrence, and export then import made a second override."""
    if series.all_day:
        day = recurrence.local(at, recurrence.zone(series.timezone)).date()
        if recurrence.all_day_bounds(day, day, series.timezone)[0] == at:
            return day
        return at.astimezone(UTC)
    return _when(at, series.timezone, False)


def _component(ev: Any, series: Any = None, timezone: str | None = None) -> icalendar.Event:
    """A VEVENT; with ``series``, an override of it (RECURRENCE-ID of the series' type).
    An all-day event whose zone is not the calendar's (``timezone``) gets X-ROOST-TIMEZONE:
    its DATE values are days of that zone, which import would read in the calendar's."""
    out = icalendar.Event()
    out.add("UID", ev.uid)
    out.add("DTSTAMP", (ev.updated_at or datetime.now(UTC)).astimezone(UTC))
    if series is not None:
        out.add("RECURRENCE-ID", _occurrence_id(ev.recurrence_id, series))
    series_start = bool(ev.recurrence_rule) or bool(ev.rdates)
    out.add("DTSTART", _when(ev.start_time, ev.timezone, ev.all_day, in_zone=series_start))
    out.add("DTEND", _when(ev.end_time, ev.timezone, ev.all_day, in_zone=series_start))
    if ev.all_day and ev.timezone != timezone:
        out.add("X-ROOST-TIMEZONE", icalendar.vText(ev.timezone))
    out.add("SUMMARY", ev.summary)
    if ev.description:
        out.add("DESCRIPTION", ev.description)
    if ev.location:
        out.add("LOCATION", ev.location)
    tags: Sequence[str] = ev.semantic_tags or []
    categories = [ev.category, *[t for t in tags if t != ev.category]] if tags else [ev.category]
    if tags or ev.category != "general":  # none read: "general" and no tags (import's default)
        out.add("CATEGORIES", [str(c) for c in categories])
    if ev.semantic_tags is not None or ev.category != "general":
        # CATEGORIES for other clients; these read back as they are (the category need
        # not be a tag, the tags need not hold it).
        out.add("X-ROOST-CATEGORY", icalendar.vText(ev.category))
        if ev.semantic_tags is not None:
            out.add("X-ROOST-TAGS", icalendar.vText(json.dumps(list(ev.semantic_tags))))
    if ev.recurrence_rule:
        out.add("RRULE", icalendar.vRecur.from_ical(ev.recurrence_rule))
    if ev.rdates:
        out.add("RDATE", _when_list(ev.rdates, ev.timezone, ev.all_day))
    if ev.exdates:
        out.add("EXDATE", _when_list(ev.exdates, ev.timezone, ev.all_day))
    for person in ev.attendees or []:
        params = {k: person[v] for k, v in (("CN", "name"), ("ROLE", "role"),
                                             ("PARTSTAT", "status")) if person.get(v)}
        email = "".join(ch for ch in str(person.get("email", "")) if ch >= " ")
        out.add("ATTENDEE", icalendar.vCalAddress(f"mailto:{email}"),
                parameters=params)
    out.add("STATUS", ev.status.upper())
    out.add("TRANSP", "TRANSPARENT" if ev.transparent else "OPAQUE")
    out.add("X-ROOST-EVENT-TYPE", icalendar.vText(ev.event_type))
    out.add("X-ROOST-MOVABILITY", repr(float(ev.movability_score)))
    out.add("X-ROOST-MOVABLE", "TRUE" if ev.is_movable else "FALSE")
    out.add("X-ROOST-IMPORTANCE", repr(float(ev.importance_weight)))
    if ev.google_event_id:
        out.add("X-GOOGLE-EVENT-ID", icalendar.vText(ev.google_event_id))
    if ev.reminder_minutes is not None:
        alarm = icalendar.Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", ev.summary)
        alarm.add("TRIGGER", timedelta(minutes=-ev.reminder_minutes))
        out.add_component(alarm)
    return out
