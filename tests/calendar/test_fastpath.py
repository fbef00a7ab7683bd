"""The arithmetic expansion of simple DAILY/WEEKLY rules gives exactly dateutil's
occurrences: many random rules (INTERVAL, BYDAY, WKST, COUNT, UNTIL as an instant or a
date), in zones with DST changes (both hemispheres, a 30-minute one, a zone that changes
at midnight), timed and all-day events, EXDATE and RDATE, ranges across the changes."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from roost.calendar import recurrence
from roost.calendar.recurrence import Recurring, expand

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
         "America/Santiago", "Asia/Tokyo", "UTC", "America/Havana"]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


def _rule(rnd: random.Random, start: datetime) -> str:
    parts = [f"FREQ={rnd.choice(['DAILY', 'WEEKLY'])}"]
    if rnd.random() < 0.5:
        parts.append(f"INTERVAL={rnd.choice([1, 2, 3, 5, 7, 14])}")
    if rnd.random() < 0.6:
        parts.append("BYDAY=" + ",".join(rnd.sample(DAYS, rnd.randint(1, 5))))
    if rnd.random() < 0.3:
        parts.append(f"WKST={rnd.choice(DAYS)}")
    end = rnd.random()
    if end < 0.4:
        parts.append(f"COUNT={rnd.randint(1, 80)}")
    elif end < 0.7:
        until = start + timedelta(days=rnd.randrange(400), hours=rnd.randrange(-12, 12))
        parts.append("UNTIL=" + (until.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
                                 if rnd.random() < 0.5 else until.strftime("%Y%m%d")))
    rnd.shuffle(parts)
    return ";".join(parts)


def _event(rnd: random.Random) -> Recurring:
    name = rnd.choice(ZONES)
    tz = ZoneInfo(name)
    day = date(2026, 1, 1) + timedelta(days=rnd.randrange(900))
    if rnd.random() < 0.2:  # all-day: local midnights, whole days
        start_l = datetime.combine(day, datetime.min.time())
        end_l = start_l + timedelta(days=rnd.randint(1, 3))
        all_day = True
    else:  # times near the DST changes' hours (00:00-03:30) are the interesting ones
        start_l = datetime.combine(day, datetime.min.time()) + timedelta(
            minutes=rnd.choice([0, 30, 60, 90, 120, 150, 180, 210, 540, 1380, 1439]),
            seconds=rnd.choice([0, 0, 0, 7]))
        end_l = start_l + timedelta(minutes=rnd.choice([0, 15, 60, 180, 1440, 2000]))
        all_day = False
    start = recurrence.to_utc(start_l, tz)
    end = recurrence.to_utc(end_l, tz)
    rule = _rule(rnd, start_l)
    exdates = [recurrence.to_utc(start_l + timedelta(days=rnd.randrange(60)), tz)
               for _ in range(rnd.randrange(4))]
    rdates = [start + timedelta(days=rnd.randrange(90), hours=rnd.randrange(30))
              for _ in range(rnd.randrange(3))]
    return Recurring(start=start, end=end, timezone=name, rule=rule, exdates=exdates,
                     rdates=rdates, all_day=all_day)


@pytest.mark.parametrize("seed", range(4))
def test_the_arithmetic_expansion_equals_dateutils(seed: int) -> None:
    rnd = random.Random(seed)
    fast = 0
    for _ in range(250):
        ev = _event(rnd)
        assert ev.rule is not None
        fast += recurrence._plan(ev.rule, recurrence.local(ev.start, ev._tz),
                                 ev.timezone) is not None
        for _ in range(2):
            range_start = ev.start + timedelta(days=rnd.randrange(-20, 400),
                                               hours=rnd.randrange(24))
            range_end = range_start + timedelta(days=rnd.choice([1, 7, 31, 92]))
            got = expand(ev, range_start, range_end)
            want = expand(ev, range_start, range_end, fast=False)
            assert got == want, (ev, range_start, range_end)
    assert fast == 250  # every rule here took the arithmetic path


def test_other_rules_keep_dateutil() -> None:
    start = datetime(2027, 1, 29, 9, tzinfo=UTC)
    for rule in ("FREQ=MONTHLY;BYDAY=-1FR", "FREQ=WEEKLY;BYDAY=1MO", "FREQ=DAILY;BYHOUR=9,17",
                 "FREQ=WEEKLY;BYSETPOS=1;BYDAY=MO,TU", "FREQ=HOURLY;INTERVAL=5",
                 "FREQ=YEARLY"):
        assert recurrence._plan(rule, start.replace(tzinfo=None), "UTC") is None, rule
    ev = Recurring(start=start, end=start + timedelta(hours=1), rule="FREQ=MONTHLY;BYDAY=-1FR")
    got = [s for s, _ in expand(ev, datetime(2027, 1, 1, tzinfo=UTC),
                                datetime(2027, 5, 1, tzinfo=UTC))]
    assert got == [datetime(2027, m, d, 9, tzinfo=UTC) for m, d in
                   ((1, 29), (2, 26), (3, 26), (4, 30))]


def test_a_daily_event_since_years_costs_no_more_than_a_new_one() -> None:
    # The first occurrence in range is computed, not iterated to: a rule from 1990 with a
    # COUNT that ends in the range is expanded by division (same answer as dateutil).
    start = datetime(1990, 1, 1, 8, tzinfo=ZoneInfo("Europe/Berlin"))
    ev = Recurring(start=start, end=start + timedelta(minutes=30), timezone="Europe/Berlin",
                   rule="FREQ=DAILY;COUNT=13515")
    got = expand(ev, datetime(2026, 12, 28, tzinfo=UTC), datetime(2027, 1, 10, tzinfo=UTC))
    assert got == expand(ev, datetime(2026, 12, 28, tzinfo=UTC),
                         datetime(2027, 1, 10, tzinfo=UTC), fast=False)
    assert [s.date() for s, _ in got][-1] == date(1990, 1, 1) + timedelta(days=13514)


def _monthly_rule(rnd: random.Random, start_l: datetime) -> str:
    parts = ["FREQ=MONTHLY"]
    kind = rnd.randrange(3)
    if kind == 0:
        parts.append(f"BYMONTHDAY={rnd.choice([1, 2, 15, 28, -1, -2, -28, start_l.day])}")
    elif kind == 1:
        parts.append(f"BYDAY={rnd.choice([1, 2, 3, 4, -1, -2, -4])}{rnd.choice(DAYS)}")
    if rnd.random() < 0.5:
        parts.append(f"INTERVAL={rnd.choice([1, 2, 3, 5, 12, 13])}")
    end = rnd.random()
    if end < 0.4:
        parts.append(f"COUNT={rnd.randint(1, 40)}")
    elif end < 0.7:
        until = start_l + timedelta(days=rnd.randrange(800), hours=rnd.randrange(-12, 12))
        parts.append("UNTIL=" + until.strftime(rnd.choice(["%Y%m%d", "%Y%m%dT%H%M%S"])))
    rnd.shuffle(parts)
    return ";".join(parts)


@pytest.mark.parametrize("seed", range(3))
def test_monthly_plans_give_dateutils_dates(seed: int) -> None:
    """Month arithmetic (roost.calendar.batch's path for simple MONTHLY rules): the dates
    of every occurrence in a span are dateutil's, for DTSTARTs on any day, including ones
    after the month's occurrence (not counted by COUNT)."""
    rnd = random.Random(seed)
    planned = 0
    for _ in range(300):
        tz_name = rnd.choice(ZONES)
        day = date(2026, 1, 1) + timedelta(days=rnd.randrange(700))
        start_l = datetime.combine(day, datetime.min.time()) + timedelta(
            minutes=rnd.choice([0, 90, 540, 1439]))
        rule_text = _monthly_rule(rnd, start_l)
        plan = recurrence._month_plan(rule_text, start_l, tz_name)
        if plan is None:
            assert start_l.day > 28, rule_text  # DTSTART's day, which some months lack
            continue
        planned += 1
        rule = recurrence.parse_rule(rule_text)
        built = recurrence._build(rule, start_l, recurrence._local_until(rule, ZoneInfo(tz_name)))
        lo = day.toordinal() + rnd.randrange(-40, 900)
        hi = lo + rnd.choice([0, 6, 30, 120, 1000])
        want = [occ.toordinal() for occ in built.between(
            datetime.fromordinal(lo), datetime.fromordinal(hi + 1), inc=True)
            if occ.toordinal() <= hi]
        assert plan.days(lo, hi) == want, (rule_text, start_l, lo, hi)
    assert planned > 250


def test_monthly_rules_the_plan_leaves_to_dateutil() -> None:
    start = datetime(2027, 1, 29, 9)
    for rule in ("FREQ=MONTHLY;BYMONTHDAY=31", "FREQ=MONTHLY;BYDAY=5FR", "FREQ=MONTHLY;BYDAY=FR",
                 "FREQ=MONTHLY;BYDAY=1MO,-1FR", "FREQ=MONTHLY;BYMONTHDAY=1,15",
                 "FREQ=MONTHLY;BYSETPOS=-1;BYDAY=MO,TU,WE,TH,FR", "FREQ=MONTHLY"):
        assert recurrence._month_plan(rule, start, "UTC") is None, rule  # DTSTART on the 29th
    assert recurrence._month_plan("FREQ=MONTHLY;BYDAY=-1FR", start, "UTC") is not None
