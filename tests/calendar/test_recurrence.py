"""RRULE expansion: DST changes, EXDATE, RDATE, UNTIL, bad rules; compared with
recurring-ical-events (the oracle) on the same iCalendar data."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest
import recurring_ical_events

from roost.calendar import ical
from roost.calendar.recurrence import (
    RecurrenceError,
    Recurring,
    expand,
    merge,
    parse_rule,
    recurrence_end,
    validate,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_weekly_meeting_keeps_its_wall_clock_time_across_the_dst_change() -> None:
    # 09:00 New York every Monday; DST starts Sunday 2027-03-14.
    start = datetime(2027, 3, 1, 9, tzinfo=NY)
    ev = Recurring(start=start, end=start + timedelta(hours=1), timezone="America/New_York",
                   rule="FREQ=WEEKLY;BYDAY=MO")
    got = expand(ev, utc(2027, 3, 1), utc(2027, 3, 23))
    assert [s.astimezone(NY).hour for s, _ in got] == [9, 9, 9, 9]
    assert [s for s, _ in got] == [utc(2027, 3, 1, 14), utc(2027, 3, 8, 14),
                                   utc(2027, 3, 15, 13), utc(2027, 3, 22, 13)]
    assert all(e - s == timedelta(hours=1) for s, e in got)


def test_exdate_removes_an_occurrence_after_the_dst_change() -> None:
    start = datetime(2027, 10, 25, 9, tzinfo=BERLIN)  # CEST; CET from 2027-10-31
    ev = Recurring(start=start, end=start + timedelta(minutes=30), timezone="Europe/Berlin",
                   rule="FREQ=DAILY;COUNT=10",
                   exdates=[datetime(2027, 11, 1, 9, tzinfo=BERLIN)])
    got = [s.astimezone(BERLIN) for s, _ in expand(ev, utc(2027, 10, 1), utc(2027, 12, 1))]
    assert len(got) == 9
    assert datetime(2027, 11, 1, 9, tzinfo=BERLIN) not in got
    assert {g.hour for g in got} == {9}
    assert got[-1] == datetime(2027, 11, 3, 9, tzinfo=BERLIN)


def test_a_time_in_the_spring_gap_takes_the_offset_before_it() -> None:
    start = datetime(2027, 3, 13, 2, 30, tzinfo=NY)
    ev = Recurring(start=start, end=start + timedelta(minutes=15), timezone="America/New_York",
                   rule="FREQ=DAILY;COUNT=3")
    got = [s for s, _ in expand(ev, utc(2027, 3, 1), utc(2027, 4, 1))]
    # 2027-03-14 02:30 does not exist in New York: 02:30 EST = 07:30Z (03:30 EDT).
    assert got == [utc(2027, 3, 13, 7, 30), utc(2027, 3, 14, 7, 30), utc(2027, 3, 15, 6, 30)]


def test_rdate_until_and_range_bounds() -> None:
    start = utc(2027, 1, 4, 10)
    ev = Recurring(start=start, end=start + timedelta(hours=2), timezone="UTC",
                   rule="FREQ=WEEKLY;UNTIL=20270125T100000Z", rdates=[utc(2027, 2, 10, 15)])
    got = [s for s, _ in expand(ev, utc(2027, 1, 1), utc(2027, 3, 1))]
    assert got == [utc(2027, 1, 4, 10), utc(2027, 1, 11, 10), utc(2027, 1, 18, 10),
                   utc(2027, 1, 25, 10), utc(2027, 2, 10, 15)]
    # an occurrence overlapping the range start is included; one ending at it is not
    assert [s for s, _ in expand(ev, utc(2027, 1, 11, 11), utc(2027, 1, 12))] == [
        utc(2027, 1, 11, 10)]
    assert expand(ev, utc(2027, 1, 11, 12), utc(2027, 1, 12)) == []
    assert recurrence_end(ev) is not None and recurrence_end(ev) >= utc(2027, 2, 10, 17)


def test_a_rule_without_end_is_bounded_by_the_range() -> None:
    start = utc(2000, 1, 1, 8)
    ev = Recurring(start=start, end=start + timedelta(hours=1), rule="FREQ=DAILY")
    assert recurrence_end(ev) is None
    began = time.perf_counter()
    got = expand(ev, utc(2027, 6, 1), utc(2027, 6, 8))
    assert len(got) == 7
    assert time.perf_counter() - began < 0.5  # moved forward, not walked from 2000


@pytest.mark.parametrize(("rule", "message"), [
    ("FREQ=SOMETIMES", "FREQ=SOMETIMES"),
    ("FREQ=MINUTELY", "not supported"),
    ("BYDAY=MO", "FREQ is required"),
    ("FREQ=WEEKLY;BYDAY=XX", "BYDAY"),
    ("FREQ=DAILY;COUNT=0", "COUNT"),
    ("FREQ=DAILY;INTERVAL=-2", "INTERVAL"),
    ("FREQ=DAILY;COUNT=3;UNTIL=20270101", "COUNT and UNTIL"),
    ("FREQ=DAILY;UNTIL=2027-01-01", "UNTIL"),
    ("FREQ=DAILY;FOO=1", "FOO"),
    ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "no occurrence"),
    ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6", "no occurrence"),
])
def test_bad_rules_are_refused_naming_the_problem(rule: str, message: str) -> None:
    start = utc(2027, 1, 1, 9)
    with pytest.raises(RecurrenceError, match=message):
        validate(Recurring(start=start, end=start, rule=rule))


def test_an_impossible_rule_is_refused_quickly() -> None:
    start = utc(2027, 1, 1, 9)
    began = time.perf_counter()
    with pytest.raises(RecurrenceError):
        validate(Recurring(start=start, end=start, rule="FREQ=DAILY;BYMONTH=4;BYMONTHDAY=31"))
    assert time.perf_counter() - began < 5


def test_parse_rule_accepts_the_prefix_and_lower_case() -> None:
    assert parse_rule("RRULE:freq=weekly;byday=mo").parts == {"FREQ": "WEEKLY", "BYDAY": "MO"}


def test_merge_joins_overlapping_and_touching_intervals() -> None:
    a, b, c, d = utc(2027, 1, 1, 9), utc(2027, 1, 1, 10), utc(2027, 1, 1, 11), utc(2027, 1, 1, 12)
    assert merge([(c, d), (a, b), (b, c)]) == [(a, d)]
    assert merge([(a, b), (c, d)]) == [(a, b), (c, d)]


ORACLE_ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:a
DTSTART;TZID=America/New_York:20270301T090000
DTEND;TZID=America/New_York:20270301T100000
RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR
EXDATE;TZID=America/New_York:20270315T090000,20270317T090000
SUMMARY:standup
END:VEVENT
BEGIN:VEVENT
UID:b
DTSTART;TZID=Europe/Berlin:20270115T183000
DTEND;TZID=Europe/Berlin:20270115T200000
RRULE:FREQ=MONTHLY;BYDAY=-1FR;UNTIL=20271231T230000Z
SUMMARY:last friday
END:VEVENT
BEGIN:VEVENT
UID:c
DTSTART;VALUE=DATE:20270320
DTEND;VALUE=DATE:20270321
RRULE:FREQ=YEARLY
SUMMARY:birthday
END:VEVENT
BEGIN:VEVENT
UID:d
DTSTART:20270302T120000Z
DTEND:20270302T123000Z
RRULE:FREQ=DAILY;INTERVAL=3;COUNT=40
RDATE:20270401T080000Z
EXDATE:20270305T120000Z
SUMMARY:every third day
END:VEVENT
END:VCALENDAR
"""


def test_expansion_matches_recurring_ical_events() -> None:
    parsed = ical.parse(ORACLE_ICS.replace("\n", "\r\n").encode(), "Europe/Berlin")
    range_start, range_end = utc(2027, 1, 1), utc(2028, 1, 1)
    ours = sorted(
        (e.uid, s, end)
        for e in parsed.events
        for s, end in expand(Recurring(start=e.start_time, end=e.end_time, timezone=e.timezone,
                                       rule=e.recurrence_rule, rdates=e.rdates,
                                       exdates=e.exdates, all_day=e.all_day),
                             range_start, range_end))
    cal = icalendar.Calendar.from_ical(ORACLE_ICS)
    theirs = []
    for comp in recurring_ical_events.of(cal).between(range_start, range_end):
        s, e = comp.decoded("DTSTART"), comp.decoded("DTEND")
        theirs.append((str(comp["UID"]), _instant(s), _instant(e)))
    assert ours == sorted(theirs)
    assert len(ours) > 150


def _instant(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    # all-day: local midnight in the default zone the import used
    return datetime.combine(value, datetime.min.time(),  # type: ignore[arg-type]
                            tzinfo=BERLIN).astimezone(UTC)


_T0 = datetime(2027, 1, 4, 9, tzinfo=UTC)
_ALL_MINUTES = ",".join(str(i) for i in range(60))


@pytest.mark.parametrize("rule", [
    f"FREQ=HOURLY;BYMINUTE={_ALL_MINUTES};BYSECOND={_ALL_MINUTES}",  # every second
    "FREQ=DAILY;BYHOUR=" + ",".join(str(h) for h in range(24)) + f";BYMINUTE={_ALL_MINUTES}",
    "FREQ=YEARLY;BYMONTH=" + ",".join(str(m) for m in range(1, 13)) + ";BYMONTHDAY="
    + ",".join(str(d) for d in range(1, 32)) + ";BYHOUR=" + ",".join(str(h) for h in range(24))
    + f";BYMINUTE={_ALL_MINUTES}",  # every minute of every day
    "FREQ=HOURLY;BYMINUTE=0,30",
])
def test_rules_denser_than_hourly_are_refused(rule: str) -> None:
    """A rule whose BY* lists make it occur more than once an hour (SECONDLY or MINUTELY in
    disguise) is refused like FREQ=SECONDLY/MINUTELY: a month's query would expand
    millions of occurrences."""
    with pytest.raises(RecurrenceError, match="at most one occurrence an hour"):
        validate(Recurring(start=_T0, end=_T0 + timedelta(minutes=1), rule=rule))


@pytest.mark.parametrize("rule", [
    "FREQ=HOURLY", "FREQ=HOURLY;INTERVAL=2;BYMINUTE=0,30",
    "FREQ=DAILY;BYHOUR=" + ",".join(str(h) for h in range(24)),
    "FREQ=YEARLY;BYMONTH=" + ",".join(str(m) for m in range(1, 13)) + ";BYMONTHDAY="
    + ",".join(str(d) for d in range(1, 32)) + ";BYHOUR=" + ",".join(str(h) for h in range(24)),
    "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=9,10,11,12;BYMINUTE=0,15,30,45",
])
def test_rules_at_most_hourly_are_accepted(rule: str) -> None:
    """Up to one occurrence an hour on average over the rule's period is fine."""
    validate(Recurring(start=_T0, end=_T0 + timedelta(minutes=1), rule=rule))
