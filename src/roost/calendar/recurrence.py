"""RFC 5545 recurrence: RRULE validation and the expansion of an event into its occurrences
within a bounded range: simple DAILY/WEEKLY rules by day arithmetic (``_Plan``), the others
by python-dateutil's ``rrule``; both give the same occurrences (tests/calendar/test_fastpath.py).

Semantics (docs/calendar.md, "Recurrence"):

- The rule is expanded in the event's time zone on *wall-clock* times: a weekly 09:00
  meeting in Europe/Berlin is at 09:00 local before and after a DST change (so at 08:00Z,
  then 07:00Z).  A local time that does not exist (in the spring gap) takes the offset
  before the gap, an ambiguous one (the autumn repeat) the first of its two instants
  (RFC 5545 3.3.5).
- DTSTART is always the first occurrence, even when it does not match the rule.
- Every occurrence lasts the event's wall-clock duration (``end - start`` in local time;
  an all-day event spans whole local days).
- EXDATE removes the occurrence that starts at that instant; RDATE adds one.
- UNTIL is inclusive; a UTC UNTIL is compared as an instant, a floating or DATE UNTIL in
  the event's zone (a DATE covers its whole day).  A rule without COUNT or UNTIL never
  ends: ranges are always bounded by the caller.
- SECONDLY and MINUTELY rules are refused, so is a rule that occurs more than once an
  hour on average over its period (``density_error``), and so is a rule with no occurrence in the
  first 370 years (e.g. BYMONTH=2;BYMONTHDAY=30), which dateutil would otherwise search
  up to the year 9999 on every query, and so is a COUNT rule dateutil walks (no
  arithmetic plan) whose occurrences are spread over more than ``MAX_COUNT`` of its
  periods (``_check_count_walk``).
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from math import gcd
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil.rrule import rrule, rrulestr

MAX_COUNT: Final = 50_000
MAX_INTERVAL: Final = 10_000
MAX_RULE_LENGTH: Final = 1000
# A range query meets every occurrence that overlaps it: with occurrences longer than this,
# a weekly series lasting millennia made every query of its calendar walk ~400,000 of them
# (17 s a request).  RFC 5545 sets no bound; a year and a day covers any real use.
MAX_OCCURRENCE: Final = timedelta(days=366)
PROBE_YEARS: Final = 400  # the Gregorian calendar repeats every 400 years, weekdays included

_FREQS: Final = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_WEEKDAYS: Final = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_BYDAY = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL = re.compile(r"^(\d{8})(T(\d{6})(Z?))?$")
_RANGES: Final = {  # BY* part: (lowest, highest) of the absolute value, zero refused
    "BYSECOND": (0, 60), "BYMINUTE": (0, 59), "BYHOUR": (0, 23),
    "BYMONTHDAY": (1, 31), "BYYEARDAY": (1, 366), "BYWEEKNO": (1, 53),
    "BYMONTH": (1, 12), "BYSETPOS": (1, 366),
}
_SIGNED: Final = ("BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS")


class RecurrenceError(ValueError):
    """A rule, zone or date that cannot be expanded; the message names the problem."""


# Events and ranges stay two days inside what Python's datetime can hold (years 1 to
# 9999), so that a wall time in any zone (UTC offsets up to 14 hours) and the day of
# slack the expansion looks around a range are representable.
EARLIEST: Final = datetime(1, 1, 3, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 30, tzinfo=UTC)
LIMITS_TEXT: Final = ("between 0001-01-03 and 9999-12-30 (UTC): the calendar's years are 1 "
                      "to 9999, with room for time zones")


_LAST_DAY: Final = date.max.toordinal() - 1  # its local midnight converts in every zone


def representable_day(day: int) -> int:
    """A date ordinal moved into the years 1..9999: the days just outside, which a range
    at the limits looks at around itself and on which no occurrence in it starts, take the
    nearest day's UTC offset."""
    return min(max(day, 1), _LAST_DAY)


def out_of_limits(*times: datetime) -> datetime | None:
    """The first of ``times`` (aware) outside ``EARLIEST..LATEST``, None when all are in."""
    return next((t for t in times if not EARLIEST <= t <= LATEST), None)


@lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    """The IANA zone names: what ZoneInfo opens less the host's own files beside them
    (``localtime``: the server's zone; ``right/``: leap-second clocks, wrong times;
    ``posix/``, ``posixrules``)."""
    return frozenset(name for name in available_timezones()
                     if name not in ("localtime", "posixrules")
                     and not name.startswith(("right/", "posix/")))


def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name (what a write or an import gives); RecurrenceError else.
    (Stored rows are expanded with ``_zone``: they were checked when written.)"""
    try:
        if name not in _iana_names():
            raise ValueError(name)
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("America")
        raise RecurrenceError(f"unknown time zone {name!r} (use an IANA name such as "
                              "Europe/Berlin or UTC)") from None


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    if not name or len(name) > 64 or ".." in name or name.startswith("/"):
        raise ValueError(name)
    return ZoneInfo(name)


@dataclass(frozen=True)
class Rule:
    """A parsed RRULE: the text dateutil gets (without UNTIL) and UNTIL on its own."""

    text: str
    parts: dict[str, str]
    until: tuple[datetime, str] | None  # (value, "utc" | "floating" | "date")

    @property
    def freq(self) -> str:
        return self.parts["FREQ"]

    @property
    def bounded(self) -> bool:
        return "COUNT" in self.parts or self.until is not None


def _int(name: str, value: str, low: int, high: int, *, signed: bool = False) -> int:
    if not re.fullmatch(r"[+-]?\d{1,6}", value):
        raise RecurrenceError(f"{name}: {value!r} is not a whole number")
    number = int(value)
    if (number < 0 and not signed) or (number == 0 and low > 0) or not low <= abs(number) <= high:
        raise RecurrenceError(f"{name}: {value} is out of range ({'±' if signed else ''}"
                              f"{low}..{high})")
    return number


@lru_cache(maxsize=4096)
def parse_rule(value: str) -> Rule:
    """Validate an RRULE value (``FREQ=WEEKLY;BYDAY=MO``; an ``RRULE:`` prefix is accepted)."""
    rule = value.strip()
    if rule.upper().startswith("RRULE:"):
        rule = rule[6:]
    if not rule:
        raise RecurrenceError("the recurrence rule is empty")
    if len(rule) > MAX_RULE_LENGTH:
        raise RecurrenceError(f"the recurrence rule is longer than {MAX_RULE_LENGTH} characters")
    if "\n" in rule or "\r" in rule:
        raise RecurrenceError("the recurrence rule must be one RRULE (no line breaks)")
    parts: dict[str, str] = {}
    for item in rule.upper().split(";"):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not val:
            raise RecurrenceError(f"{item!r} is not NAME=VALUE")
        if key in parts:
            raise RecurrenceError(f"{key} is given twice")
        parts[key] = val
    if "FREQ" not in parts:
        raise RecurrenceError("FREQ is required (e.g. FREQ=WEEKLY)")
    if parts["FREQ"] in ("SECONDLY", "MINUTELY"):
        raise RecurrenceError(f"FREQ={parts['FREQ']} is not supported (HOURLY at most)")
    if parts["FREQ"] not in _FREQS:
        raise RecurrenceError(f"FREQ={parts['FREQ']} is not one of {', '.join(_FREQS)}")
    if "COUNT" in parts and "UNTIL" in parts:
        raise RecurrenceError("COUNT and UNTIL must not both be given")
    until: tuple[datetime, str] | None = None
    kept: list[str] = []
    for key, val in parts.items():
        if key == "FREQ":
            pass
        elif key == "COUNT":
            _int(key, val, 1, MAX_COUNT)
        elif key == "INTERVAL":
            _int(key, val, 1, MAX_INTERVAL)
        elif key == "UNTIL":
            until = _parse_until(val)
            continue
        elif key == "WKST":
            if val not in _WEEKDAYS:
                raise RecurrenceError(f"WKST: {val!r} is not a weekday (MO..SU)")
        elif key == "BYDAY":
            for day in val.split(","):
                match = _BYDAY.match(day)
                if match is None:
                    raise RecurrenceError(f"BYDAY: {day!r} is not a weekday such as MO or -1FR")
                if match.group(1) is not None:
                    _int("BYDAY", match.group(1), 1, 53, signed=True)
        elif key in _RANGES:
            low, high = _RANGES[key]
            for number in val.split(","):
                _int(key, number, low, high, signed=key in _SIGNED)
        else:
            raise RecurrenceError(f"{key} is not an RRULE part RFC 5545 defines")
        kept.append(f"{key}={val}")
    return Rule(";".join(kept), parts, until)


def _parse_until(value: str) -> tuple[datetime, str]:
    match = _UNTIL.match(value)
    if match is None:
        raise RecurrenceError(f"UNTIL: {value!r} is not a DATE (20270101) or DATE-TIME "
                              "(20270101T090000Z)")
    try:
        if match.group(2) is None:
            return datetime.strptime(match.group(1), "%Y%m%d"), "date"
        at = datetime.strptime(match.group(1) + match.group(3), "%Y%m%d%H%M%S")
    except ValueError:
        raise RecurrenceError(f"UNTIL: {value!r} is not a valid date") from None
    return at, "utc" if match.group(4) else "floating"


@dataclass(frozen=True)
class Recurring:
    """What expansion needs of an event."""

    start: datetime  # aware
    end: datetime  # aware
    timezone: str = "UTC"
    rule: str | None = None
    rdates: Sequence[datetime] = ()
    exdates: Sequence[datetime] = ()
    all_day: bool = False
    # computed
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise RecurrenceError("start and end must carry a UTC offset")
        object.__setattr__(self, "_tz", zone(self.timezone))


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time in ``tz`` as a UTC instant (gap: offset before it; fold: first)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def local(at: datetime, tz: ZoneInfo) -> datetime:
    return at.astimezone(tz).replace(tzinfo=None)


def _local_until(rule: Rule, tz: ZoneInfo) -> datetime | None:
    if rule.until is None:
        return None
    value, kind = rule.until
    if kind == "utc":
        return local(value.replace(tzinfo=UTC), tz)
    if kind == "date":
        return value + timedelta(days=1) - timedelta(microseconds=1)
    return value


def _build(rule: Rule, dtstart: datetime, until: datetime | None) -> rrule:
    # Cached by value: a range query over thousands of events builds each event's rule
    # again on every query; a short COUNT rule also keeps its occurrences (cache=True).
    count = int(rule.parts.get("COUNT", MAX_COUNT))
    return _built(rule.text, dtstart, until, count <= CACHED_OCCURRENCES)


CACHED_OCCURRENCES: Final = 50  # bounds the memory: 16,384 rules x 50 datetimes


@lru_cache(maxsize=16384)
def _built(text: str, dtstart: datetime, until: datetime | None, keep: bool) -> rrule:
    built = rrulestr(text, dtstart=dtstart, cache=keep)
    if not isinstance(built, rrule):  # pragma: no cover - one RRULE always gives an rrule
        raise RecurrenceError("the recurrence rule could not be read")
    if until is not None:
        built = built.replace(until=until)
    return built


def _step(rule: Rule) -> timedelta | None:
    """How far DTSTART may be moved forward without changing the rule's later occurrences:
    whole periods of an HOURLY, DAILY or WEEKLY rule without COUNT (MONTHLY and YEARLY
    rules move by whole months: ``_moved_start``)."""
    if "COUNT" in rule.parts:
        return None
    interval = int(rule.parts.get("INTERVAL", "1"))
    unit = {"HOURLY": timedelta(hours=1), "DAILY": timedelta(days=1),
            "WEEKLY": timedelta(weeks=1)}.get(rule.freq)
    return None if unit is None else unit * interval


def _moved_start(rule: Rule, dtstart: datetime, after: datetime) -> tuple[Rule, datetime]:
    """The rule and DTSTART to expand from so that the walk starts near ``after`` (local
    times): DTSTART moved forward by whole periods (INTERVAL hours, days, weeks, months or
    years) to the last period start before ``after``.  A rule with COUNT is not moved (its
    count runs from DTSTART; it has at most ``MAX_COUNT`` occurrences).  Periods keep their
    alignment (BYSETPOS picks within each period as before); the occurrences before the new
    DTSTART in its first period are dropped, and they all lie before ``after``.  What
    dateutil takes from DTSTART when the rule does not say (the day of the month, the
    month) is written into the rule, since a month-start DTSTART would change it."""
    step = _step(rule)
    if step is not None:
        if dtstart < after - step:
            dtstart += step * ((after - dtstart) // step)
        return rule, dtstart
    if "COUNT" in rule.parts or rule.freq not in ("MONTHLY", "YEARLY"):
        return rule, dtstart
    interval = int(rule.parts.get("INTERVAL", "1"))
    months = 12 * interval if rule.freq == "YEARLY" else interval
    start_month, after_month = (dtstart.year * 12 + dtstart.month - 1,
                                after.year * 12 + after.month - 1)
    k = (after_month - start_month) // months - 1  # a whole period before ``after``'s
    if k <= 0:
        return rule, dtstart
    year, index = divmod(start_month + k * months, 12)
    if year < 1:  # pragma: no cover - after is later than dtstart
        return rule, dtstart
    return _with_defaults(rule, dtstart.month, dtstart.day), dtstart.replace(
        year=year, month=index + 1, day=1)


def _with_defaults(rule: Rule, month: int, day: int) -> Rule:
    """``rule`` with the parts dateutil would take from a DTSTART on ``month``/``day``
    written out (a MONTHLY or YEARLY rule without a day part: BYMONTHDAY, and BYMONTH
    for YEARLY)."""
    parts = rule.parts
    if any(p in parts for p in ("BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")):
        return rule
    extra = [f"BYMONTHDAY={day}"]
    if rule.freq == "YEARLY" and "BYMONTH" not in parts:
        extra.append(f"BYMONTH={month}")
    added = dict(parts) | dict(e.split("=") for e in extra)
    return Rule(";".join([rule.text, *extra]), added, rule.until)


def _sizes(rule: Rule, part: str, default: int = 1) -> int:
    value = rule.parts.get(part)
    return default if value is None else len(set(value.split(",")))


def density_error(rule: Rule) -> str | None:
    """Why a rule occurs more often than once an hour on average over one of its periods
    (its BY* lists finer than FREQ multiplied, an upper bound), None when it does not:
    ``FREQ=HOURLY;BYMINUTE=0,...,59`` is FREQ=MINUTELY in disguise and makes every range
    query expand 60 occurrences an hour."""
    freq = rule.freq
    interval = int(rule.parts.get("INTERVAL", "1"))
    per_hour = _sizes(rule, "BYMINUTE") * _sizes(rule, "BYSECOND")
    if freq == "HOURLY":
        count, hours = per_hour, interval
    else:
        days, period = 1, 1
        if freq == "WEEKLY":
            days, period = min(7, _sizes(rule, "BYDAY")), 7
        elif freq == "MONTHLY":
            days, period = min(31, _month_days_bound(rule)), 31
        elif freq == "YEARLY":
            period = 366
            if "BYYEARDAY" in rule.parts:
                days = _sizes(rule, "BYYEARDAY")
            elif "BYWEEKNO" in rule.parts:
                days = _sizes(rule, "BYWEEKNO") * _sizes(rule, "BYDAY", 7)
            elif any(p in rule.parts for p in ("BYMONTH", "BYMONTHDAY", "BYDAY")):
                months = _sizes(rule, "BYMONTH", 12 if "BYMONTHDAY" in rule.parts
                                or "BYDAY" in rule.parts else 1)
                days = months * _month_days_bound(rule)
            days = min(days, period)
        count, hours = days * _sizes(rule, "BYHOUR") * per_hour, 24 * period * interval
    if "BYSETPOS" in rule.parts:
        count = min(count, _sizes(rule, "BYSETPOS"))
    if count <= hours:
        return None
    return (f"the rule occurs up to {count} times in {hours} hours (its BY* lists "
            "multiplied): at most one occurrence an hour on average is supported")


def _month_days_bound(rule: Rule) -> int:
    """At most how many days of a month a rule's BYMONTHDAY or BYDAY picks (1: DTSTART's)."""
    if "BYMONTHDAY" in rule.parts:
        return _sizes(rule, "BYMONTHDAY")
    if "BYDAY" in rule.parts:
        return sum(5 if day in _WEEKDAYS else 1 for day in set(rule.parts["BYDAY"].split(",")))
    return 1


def validate(event: Recurring) -> None:
    """Refuse a rule that cannot be expanded or never occurs (see the module's notes)."""
    if event.end < event.start:
        raise RecurrenceError("the end is before the start")
    if event.rule is None and not event.rdates:
        return
    if event.end - event.start > MAX_OCCURRENCE:  # RDATEs alone make a series too
        raise RecurrenceError(
            f"an occurrence of a recurring event may last at most {MAX_OCCURRENCE.days} days "
            f"(this one lasts {(event.end - event.start).days} days)")
    for what, at in (("starts", event.start), ("ends", event.end)):
        # A series is its wall-clock times in its zone, and a wall time the end of
        # daylight saving repeats is read as its first instance (RFC 5545, 3.3.5, as
        # dateutil): one given as the second instance was listed an hour early, and its
        # own start was no occurrence of it.
        wall = local(at, event._tz)
        if to_utc(wall, event._tz) != at.astimezone(UTC):
            raise RecurrenceError(
                f"the series {what} at {wall:%Y-%m-%d %H:%M} {event.timezone} the second time "
                "that wall time comes round (the hour daylight saving's end repeats), which "
                "a recurring event cannot: a repeated wall time is its first instance "
                f"({to_utc(wall, event._tz).isoformat()}); move it out of that hour")
    if event.rule is None:
        return
    rule = parse_rule(event.rule)
    dense = density_error(rule)
    if dense is not None:
        raise RecurrenceError(dense)
    start = local(event.start, event._tz)
    # Probe in the last 400-year cycle before 9999 (moved by whole cycles, so the same
    # weekdays and leap years): dateutil stops at the year 9999, so a rule that never
    # occurs costs at most 400 years of search, once, here.
    shift = max(0, -(-(9999 - PROBE_YEARS - start.year) // PROBE_YEARS) * PROBE_YEARS)
    try:
        probe = _build(rule, start.replace(year=start.year + shift), None)
        first = probe.after(start.replace(year=start.year + shift), inc=True)
    except (ValueError, OverflowError) as exc:
        raise RecurrenceError(f"the recurrence rule cannot be expanded: {exc}") from None
    if first is None:
        raise RecurrenceError("the recurrence rule has no occurrence (check its BYMONTH, "
                              "BYMONTHDAY, BYSETPOS... combination)")
    _check_count_walk(event.rule, start, event.timezone)


def _walk_unit(rule: Rule) -> timedelta:
    """What dateutil steps through per candidate period of a rule: INTERVAL periods, an
    HOURLY rule's at least a day (it skips a day its BY* parts rule out at once; a MONTHLY
    or YEARLY period counts as 31 or 366 days)."""
    interval = int(rule.parts.get("INTERVAL", "1"))
    if rule.freq == "HOURLY":
        return max(timedelta(hours=interval), timedelta(days=1))
    return timedelta(days=interval * {"DAILY": 1, "WEEKLY": 7, "MONTHLY": 31,
                                      "YEARLY": 366}[rule.freq])


def _check_count_walk(value: str, start: datetime, tz_name: str) -> None:
    """Refuse a COUNT rule whose occurrences dateutil finds only by walking more than
    ``MAX_COUNT`` of its periods: a COUNT rule is walked from DTSTART on every query and at
    every write, and ``FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=0;COUNT=50000`` (one
    occurrence in four years) walked every day up to the year 9999: seconds of CPU each
    time.  Rules the arithmetic plans expand (``_plan``, ``_month_plan``) are not walked
    by queries and need no check.  This walk stops at the first occurrence past the
    limit: at most one gap of the rule beyond it (a 400-year cycle, as ``validate``'s
    probe)."""
    rule = parse_rule(value)
    if "COUNT" not in rule.parts or _plan(value, start, tz_name) is not None \
            or _month_plan(value, start, tz_name) is not None:
        return
    limit = _clamped(start, _walk_unit(rule) * MAX_COUNT)
    try:
        sparse = any(occ > limit for occ in rrulestr(rule.text, dtstart=start, cache=False))
    except (ValueError, OverflowError):
        return  # near the year 9999: dateutil stops there (recurrence_end does the same)
    if sparse:
        raise RecurrenceError(
            f"the rule's {rule.parts['COUNT']} occurrences (COUNT) are spread over more than "
            f"{MAX_COUNT} of its periods (FREQ and INTERVAL; days for HOURLY): a rule this "
            "sparse costs seconds on every query; use a coarser FREQ (such as YEARLY), a "
            "smaller COUNT or UNTIL")


def recurrence_end(event: Recurring) -> datetime | None:
    """The end of the last occurrence (an instant), None when the rule never ends."""
    tz = event._tz
    duration = local(event.end, tz) - local(event.start, tz)
    last = event.end
    if event.rdates:
        try:
            last = max(last, max(to_utc(local(r, tz) + duration, tz) for r in event.rdates))
        except OverflowError:  # an RDATE's occurrence ends after the year 9999: as below
            return None
    if event.rule is None:
        return last
    rule = parse_rule(event.rule)
    if not rule.bounded:
        return None
    start = local(event.start, tz)
    until = _local_until(rule, tz)
    try:
        if until is not None:
            # no need to walk: nothing starts after UNTIL
            return max(last, to_utc(max(until, start) + duration, tz) + timedelta(days=1))
        occurrences = list(_build(rule, start, None))
        if occurrences:
            last = max(last, to_utc(occurrences[-1] + duration, tz))
    except (OverflowError, ValueError):
        return None  # the last occurrence ends after the year 9999: as if it never ended
    return last


def expand(event: Recurring, range_start: datetime, range_end: datetime,
           limit: int | None = None, *, fast: bool = True) -> list[tuple[datetime, datetime]]:
    """The occurrences ``(start, end)`` (UTC instants, by start) that overlap
    ``[range_start, range_end)``: start before the range ends and end after it starts (an
    instantaneous one: starts within it).

    Simple DAILY/WEEKLY rules are expanded arithmetically (``_Plan``); every other rule, and
    all of them with ``fast=False`` (the differential tests' reference), by dateutil."""
    items = occurrences(event.start, event.end, event.timezone, event.rule, event.rdates,
                        event.exdates, Window(range_start, range_end), fast=fast)
    return items[:limit] if limit is not None else items


class Window:
    """A query's range, and per zone the local dates it spans (computed once per query,
    not once per event)."""

    __slots__ = ("_days", "end", "start")

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end
        self._days: dict[str, tuple[int, int]] = {}

    def local_days(self, tz_name: str, tz: ZoneInfo) -> tuple[int, int]:
        days = self._days.get(tz_name)
        if days is None:
            days = self._days[tz_name] = (self.start.astimezone(tz).toordinal(),
                                          self.end.astimezone(tz).toordinal())
        return days


def occurrences(start: datetime, end: datetime, tz_name: str, rule: str | None,
                rdates: Sequence[datetime] | None, exdates: Sequence[datetime] | None,
                window: Window, *, fast: bool = True,
                ordered: bool = True) -> list[tuple[datetime, datetime]]:
    """``expand`` on an event's stored columns (aware start and end, a valid rule): what a
    range query runs for each of thousands of events, so what depends on the event alone
    is prepared once per event (``_prepare``, cached by value).  ``ordered=False``: in
    any order (the caller sorts all events' occurrences anyway)."""
    prep = _prepare(start, end, tz_name, rule, fast)
    range_start, range_end = window.start, window.end
    found: dict[datetime, datetime] = {}
    s0, e0 = prep.first
    if _overlaps(s0, e0, range_start, range_end):
        found[s0] = e0
    if prep.plan is not None:
        prep.plan.expand(found, prep.duration, window, prep.tz)
    if rdates or (prep.rule is not None and prep.plan is None):
        _expand_dateutil(prep, found, rdates or (), range_start, range_end)
    if exdates:
        for x in exdates:
            found.pop(x.astimezone(UTC), None)
    return sorted(found.items()) if ordered else list(found.items())


def _expand_dateutil(prep: _Prepared, found: dict[datetime, datetime],
                     rdates: Sequence[datetime], range_start: datetime,
                     range_end: datetime) -> None:
    tz, duration = prep.tz, prep.duration

    def consider(occ_local: datetime) -> None:
        s = to_utc(occ_local, tz)
        if s >= range_end:  # cannot overlap; its end may lie past the year 9999
            return
        e = to_utc(occ_local + duration, tz)
        if _overlaps(s, e, range_start, range_end):
            found[s] = e

    for r in rdates:
        consider(local(r, tz))
    if prep.rule is None or prep.plan is not None:
        return
    # Local window with slack: a day for zone offsets and the DST change.
    start_l = prep.start_l
    after = _clamped(local(range_start, tz), -(duration + timedelta(days=1)))
    before = _clamped(local(range_end, tz), timedelta(days=1))
    if start_l <= before:
        rule, dtstart = _moved_start(prep.rule, start_l, after)
        built = _build(rule, dtstart, _local_until(prep.rule, tz))
        for occ in built.xafter(max(after, start_l), inc=True):
            if occ > before:
                break
            consider(occ)


def _clamped(at: datetime, delta: timedelta) -> datetime:
    """``at + delta``, or the first or last representable time when that is past the
    year 1 or 9999 (a window's slack near the calendar's ends)."""
    try:
        return at + delta
    except OverflowError:
        return (datetime.min if delta < timedelta(0) else datetime.max).replace(tzinfo=at.tzinfo)


@dataclass(frozen=True)
class _Prepared:
    tz: ZoneInfo
    start_l: datetime  # DTSTART, local wall-clock time
    duration: timedelta  # wall-clock
    first: tuple[datetime, datetime]  # DTSTART's occurrence
    rule: Rule | None
    plan: _Plan | None  # the rule's arithmetic expansion, if it is simple


@lru_cache(maxsize=65536)
def _prepare(start: datetime, end: datetime, tz_name: str, rule: str | None,
             fast: bool) -> _Prepared:
    if start.tzinfo is None or end.tzinfo is None:
        raise RecurrenceError("start and end must carry a UTC offset")
    tz = zone(tz_name)
    start_l = local(start, tz)
    duration = local(end, tz) - start_l
    first = (to_utc(start_l, tz), to_utc(start_l + duration, tz))
    parsed = parse_rule(rule) if rule is not None else None
    plan = _plan(rule, start_l, tz_name) if rule is not None and fast else None
    return _Prepared(tz, start_l, duration, first, parsed, plan)


# --- the arithmetic expansion of simple rules ----------------------------------------------

_SIMPLE_PARTS: Final = frozenset({"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST"})


@dataclass(frozen=True)
class _Plan:
    """A DAILY or WEEKLY rule (INTERVAL, BYDAY without ordinals, WKST, COUNT or UNTIL) as
    day arithmetic: the rule's occurrences are the local dates ``anchor + n * period + o``
    (``o`` in ``offsets``, n >= 0) from DTSTART's date up to ``last`` (COUNT and UNTIL
    both become a last date), each at DTSTART's wall-clock time.  Exactly the dates
    dateutil's ``rrule`` yields (tests/calendar/test_fastpath.py compares them), but the
    first date in a range is found by division instead of by iterating from DTSTART."""

    tz_name: str
    anchor: int  # date ordinal of the first period's first day
    period: int  # days
    offsets: tuple[int, ...]  # sorted day offsets in a period that match the rule
    first: int  # date ordinal of DTSTART (earlier dates of the first period do not count)
    last: int | None  # ordinal of the last occurrence's date; None: never ends
    time: timedelta  # DTSTART's time of day (dateutil drops microseconds)

    def expand(self, found: dict[datetime, datetime], duration: timedelta, window: Window,
               tz: ZoneInfo) -> None:
        range_start, range_end = window.start, window.end
        span = (self.time + duration).days  # local days an occurrence reaches past its own
        first_day, last_day = window.local_days(self.tz_name, tz)
        wlo = first_day - span - 1  # the window's days (the same for every event of a zone)
        lo, hi = max(self.first, wlo), last_day if self.last is None else min(last_day,
                                                                              self.last)
        if lo > hi or not self.offsets:
            return
        shift, steady = _offsets(self.tz_name, wlo, last_day + span + 1)
        base = _ORIGIN + timedelta(days=wlo - 1) + self.time  # day wlo's wall time, as UTC
        anchor, period, offsets, time = self.anchor, self.period, self.offsets, self.time
        for n in range((lo - anchor) // period, (hi - anchor) // period + 1):
            day0 = anchor + n * period
            for o in offsets:
                d = day0 + o
                if d < lo:
                    continue
                if d > hi:
                    break
                i = d - wlo
                if steady[i] > span:  # no offset change from its start to its end
                    s = base + shift[i]
                    e = s + duration
                else:  # a DST change within the occurrence's days: convert exactly
                    wall = datetime.fromordinal(d) + time
                    s, e = to_utc(wall, tz), to_utc(wall + duration, tz)
                if s < range_end and (e > range_start or (s == e and s >= range_start)):
                    found[s] = e


_ORIGIN: Final = datetime(1, 1, 1, tzinfo=UTC)  # date ordinal 1


@lru_cache(maxsize=8192)
def _offsets(tz_name: str, lo: int, hi: int) -> tuple[tuple[timedelta, ...], tuple[int, ...]]:
    """For the local dates ``lo..hi`` of a zone: how to turn a wall time on day ``lo + i``
    into UTC when the day's offset holds (``wall(lo) + shift[i]``: i days less the offset
    at its midnight), and for how many days from it on that offset holds (0: the day has a
    DST change).  One zone lookup per day and query instead of two per occurrence."""
    tz = _zone(tz_name)
    offset = [datetime.fromordinal(d).replace(tzinfo=UTC) - to_utc(datetime.fromordinal(d), tz)
              for d in map(representable_day, range(lo, hi + 2))]
    steady = [0] * len(offset)
    for i in range(len(offset) - 2, -1, -1):
        steady[i] = steady[i + 1] + 1 if offset[i] == offset[i + 1] else 0
    return tuple(timedelta(days=i) - o for i, o in enumerate(offset)), tuple(steady)


@lru_cache(maxsize=65536)
def _plan(rule_value: str, start_l: datetime, tz_name: str) -> _Plan | None:
    """The arithmetic plan of a simple rule from this (local, naive) DTSTART; None for a
    rule dateutil has to expand."""
    rule = parse_rule(rule_value)
    parts = rule.parts
    if rule.freq not in ("DAILY", "WEEKLY") or not _SIMPLE_PARTS.issuperset(parts):
        return None
    days = parts["BYDAY"].split(",") if "BYDAY" in parts else []
    if not all(d in _WEEKDAYS for d in days):
        return None  # an ordinal (1MO, -1FR): dateutil decides what it means here
    weekdays = sorted({_WEEKDAYS.index(d) for d in days})
    interval = int(parts.get("INTERVAL", "1"))
    first = start_l.toordinal()
    if rule.freq == "DAILY":
        anchor = first
        if weekdays:
            period = interval * 7 // gcd(interval, 7)
            offsets = tuple(k for k in range(0, period, interval)
                            if (start_l.weekday() + k) % 7 in weekdays)
        else:
            period, offsets = interval, (0,)
    else:
        wkst = _WEEKDAYS.index(parts.get("WKST", "MO"))
        anchor = first - (start_l.weekday() - wkst) % 7
        period = 7 * interval
        offsets = tuple(sorted((d - wkst) % 7 for d in (weekdays or [start_l.weekday()])))
    time = start_l.replace(microsecond=0) - start_l.replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
    last: int | None = None
    if "COUNT" in parts and offsets:
        # index of an occurrence = n * len(offsets) + j - (offsets of period 0 before DTSTART)
        skipped = sum(1 for o in offsets if anchor + o < first)
        n, j = divmod(int(parts["COUNT"]) - 1 + skipped, len(offsets))
        last = anchor + n * period + offsets[j]
    until = _local_until(rule, _zone(tz_name))
    if until is not None:
        last = until.toordinal() - (1 if time > until - until.replace(
            hour=0, minute=0, second=0, microsecond=0) else 0)
    return _Plan(tz_name, anchor, period, offsets, first, last, time)



_MONTHLY_PARTS: Final = frozenset({"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY",
                                   "WKST"})


@dataclass(frozen=True)
class _MonthPlan:
    """A MONTHLY rule with one day a month that every month has (BYMONTHDAY 1..28 or
    -1..-28, one ordinal weekday such as -1FR or 2TU with |n| <= 4, or DTSTART's day when it
    is at most 28), as month arithmetic: the month ``anchor + k * interval`` (months since
    year 0) has its occurrence on one computed date, at DTSTART's wall-clock time, from
    DTSTART's date up to ``last``.  Exactly dateutil's dates (tests/calendar/test_fastpath.py);
    range queries use its integers instead of iterating the rule (roost.calendar.batch)."""

    tz_name: str
    anchor: int  # DTSTART's month, as year * 12 + month - 1
    interval: int
    monthday: int  # 1..28 or -28..-1; 0 when ``weekday`` decides
    weekday: int  # 0 = Monday (with ``nth``)
    nth: int  # 1..4 or -4..-1; 0 when ``monthday`` decides
    first: int  # date ordinal of DTSTART
    last: int | None  # ordinal of the last occurrence's date; None: never ends
    time: timedelta  # DTSTART's time of day (dateutil drops microseconds)

    def day_of(self, month: int) -> int:
        """The date ordinal of the occurrence in ``month`` (year * 12 + month - 1)."""
        first_day, length = _month_days(month)
        if self.monthday > 0:
            return first_day + self.monthday - 1
        if self.monthday < 0:
            return first_day + length + self.monthday
        if self.nth > 0:
            return first_day + (self.weekday - (first_day - 1)) % 7 + 7 * (self.nth - 1)
        last_day = first_day + length - 1
        return last_day - ((last_day - 1) - self.weekday) % 7 - 7 * (-self.nth - 1)

    def days(self, lo: int, hi: int) -> list[int]:
        """The occurrences' date ordinals within ``lo..hi``: what ``batch._month_rows``
        computes for many rules at once (tests/calendar/test_fastpath.py checks this
        against dateutil, test_batch.py the arrays against dateutil)."""
        hi = hi if self.last is None else min(hi, self.last)
        lo = max(lo, self.first)
        if lo > hi:
            return []
        start, end = date.fromordinal(lo), date.fromordinal(hi)
        month_lo, month_hi = start.year * 12 + start.month - 1, end.year * 12 + end.month - 1
        k = max(0, -((self.anchor - month_lo) // self.interval))  # ceil, from the anchor on
        found = []
        for month in range(self.anchor + k * self.interval, month_hi + 1, self.interval):
            day = self.day_of(month)
            if lo <= day <= hi:
                found.append(day)
        return found


@lru_cache(maxsize=4096)
def _month_days(month: int) -> tuple[int, int]:
    """The ordinal of the month's first day and its number of days."""
    year, index = divmod(month, 12)
    # monthrange: December 9999 has no following month to subtract from
    return date(year, index + 1, 1).toordinal(), monthrange(year, index + 1)[1]


_LAST_MONTH: Final = 9999 * 12 + 11  # December 9999, as months since year 0


@lru_cache(maxsize=65536)
def _month_plan(rule_value: str, start_l: datetime, tz_name: str) -> _MonthPlan | None:
    """The month arithmetic of a simple MONTHLY rule from this (local, naive) DTSTART;
    None for a rule dateutil has to expand."""
    rule = parse_rule(rule_value)
    parts = rule.parts
    if rule.freq != "MONTHLY" or not _MONTHLY_PARTS.issuperset(parts):
        return None
    monthday, weekday, nth = 0, 0, 0
    if "BYDAY" in parts and "BYMONTHDAY" in parts:
        return None
    if "BYMONTHDAY" in parts:
        if "," in parts["BYMONTHDAY"]:
            return None
        monthday = int(parts["BYMONTHDAY"])
        if not 1 <= abs(monthday) <= 28:
            return None  # some months lack the day: dateutil skips them
    elif "BYDAY" in parts:
        match = _BYDAY.match(parts["BYDAY"])  # one value: a list has a comma, no match
        if match is None or match.group(1) is None:
            return None  # every such weekday of the month, or several days
        nth = int(match.group(1))
        if not 1 <= abs(nth) <= 4:
            return None  # a fifth weekday: some months lack it
        weekday = _WEEKDAYS.index(match.group(2))
    else:
        monthday = start_l.day
        if monthday > 28:
            return None
    interval = int(parts.get("INTERVAL", "1"))
    time = start_l.replace(microsecond=0) - start_l.replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
    first = start_l.toordinal()
    plan = _MonthPlan(tz_name, start_l.year * 12 + start_l.month - 1, interval, monthday,
                      weekday, nth, first, None, time)
    last: int | None = None
    if "COUNT" in parts:
        # DTSTART's month counts only when its occurrence is not before DTSTART's date.
        skipped = 1 if plan.day_of(plan.anchor) < first else 0
        month = plan.anchor + (int(parts["COUNT"]) - 1 + skipped) * interval
        # A COUNT reaching past the year 9999: the occurrences stop with the calendar
        # (dateutil's too), so there is no last date to stop at (one month's arithmetic,
        # not a walk: its date would not exist).
        last = plan.day_of(month) if month <= _LAST_MONTH else None
    until = _local_until(rule, _zone(tz_name))
    if until is not None:
        last = until.toordinal() - (1 if time > until - until.replace(
            hour=0, minute=0, second=0, microsecond=0) else 0)
    return _MonthPlan(tz_name, plan.anchor, interval, monthday, weekday, nth, first, last, time)

def _overlaps(s: datetime, e: datetime, range_start: datetime, range_end: datetime) -> bool:
    if s == e:
        return range_start <= s < range_end
    return s < range_end and e > range_start


def merge(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Busy intervals merged: sorted, overlapping or touching ones joined."""
    merged: list[tuple[datetime, datetime]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            if e > merged[-1][1]:
                merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def all_day_bounds(first: date, last_exclusive: date, tz_name: str) -> tuple[datetime, datetime]:
    """An all-day event's instants: local midnights in its zone."""
    tz = zone(tz_name)
    return (to_utc(datetime.combine(first, datetime.min.time()), tz),
            to_utc(datetime.combine(last_exclusive, datetime.min.time()), tz))
