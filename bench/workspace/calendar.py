"""Calendar benchmark: expanding recurring events for a range query, Roost's expansion
beside ``recurring-ical-events`` over the same data, in one run.

    .venv/bin/python -m bench.workspace.calendar [--events 50000] [--queries 40]
                     [--oracle-queries 5] [--range-days 7] [--seed 18] [--no-stored-plans]

Data: ``--events`` recurring events spread over one year (2027): each starts on a random
day and hour in one of five time zones, lasts 15-90 minutes and repeats by one of six
rules (weekly on one or two days with COUNT 4-12, daily COUNT 5-20, every other week
COUNT 6, monthly on the last Friday COUNT 3, daily with INTERVAL=3 and an UNTIL); a third
has an EXDATE.  The same events are built once as Roost rows (``roost.calendar.ical``
values, ``recurrence_end`` and ``recurrence_plan`` derived as a write does; without the
plans with ``--no-stored-plans``) and once as one ``icalendar.Calendar``.

A query is a ``--range-days`` range starting at a random day of the year.  **Roost**:
the candidate filter the SQL query applies (``start_time < end AND (recurrence_end IS NULL
OR recurrence_end >= start)``, here over a sorted list in memory: the database's part is
not timed) and ``roost.calendar.service.expand_events`` on the candidates.
**recurring-ical-events**: ``of(calendar).between(start, end)`` over the whole calendar
(it has no index).  Both answers are compared (the same occurrences) on every oracle
query.  p50/p95/max per query in ms; results in bench/results/calendar.json.  The first
query runs with Roost's per-event caches empty (``cold``); the timed queries follow it
(each meets some events for the first time), then the same queries again (``warm``: every
event already seen once).  Timed: the candidate filter and ``expand_events`` (the
``(uid, start, end)`` tuples the comparison with the oracle needs are built untimed).
The built data is frozen out of the garbage collector (``gc.freeze``) before timing.
"""

# ruff: noqa: E402 - sys.path is fixed before the imports

from __future__ import annotations

import os
import sys

# Run as a file, this folder would come first on sys.path and this module would shadow the
# standard library's ``calendar`` (which dateutil imports).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(__file__)]

import argparse
import gc
import json
import platform
import random
import statistics
import time
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from roost.calendar import batch, ical, recurrence
from roost.calendar.service import expand_events

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney"]
RESULTS = Path(__file__).resolve().parents[1] / "results" / "calendar.json"


@dataclass
class Row:
    """What expand_events reads of an ``events`` row."""

    id: int
    uid: str
    start_time: datetime
    end_time: datetime
    timezone: str
    recurrence_rule: str | None
    rdates: list[datetime]
    exdates: list[datetime]
    all_day: bool
    recurrence_end: datetime | None
    recurrence_plan: list[int] | None


def rule_for(rnd: random.Random) -> str:
    kind = rnd.randrange(6)
    if kind == 0:
        return f"FREQ=WEEKLY;COUNT={rnd.randint(4, 12)}"
    if kind == 1:
        return f"FREQ=WEEKLY;BYDAY={rnd.choice(['MO,WE', 'TU,TH', 'MO,FR'])};COUNT={rnd.randint(4, 12)}"
    if kind == 2:
        return f"FREQ=DAILY;COUNT={rnd.randint(5, 20)}"
    if kind == 3:
        return "FREQ=WEEKLY;INTERVAL=2;COUNT=6"
    if kind == 4:
        return "FREQ=MONTHLY;BYDAY=-1FR;COUNT=3"
    return "FREQ=DAILY;INTERVAL=3;UNTIL=20280101T000000Z"


def build(n: int, seed: int, stored_plans: bool = True) -> tuple[bytes, list[Row]]:
    rnd = random.Random(seed)
    cal = icalendar.Calendar()
    cal.add("PRODID", "-//Roost//bench//EN")
    cal.add("VERSION", "2.0")
    for i in range(n):
        tz = ZoneInfo(rnd.choice(ZONES))
        day = date(2027, 1, 1) + timedelta(days=rnd.randrange(365))
        start = datetime(day.year, day.month, day.day, rnd.randrange(7, 20),
                         rnd.choice([0, 15, 30, 45]), tzinfo=tz)
        ev = icalendar.Event()
        ev.add("UID", f"bench-{i}")
        ev.add("DTSTAMP", datetime(2027, 1, 1, tzinfo=UTC))
        ev.add("SUMMARY", f"event {i}")
        ev.add("DTSTART", start)
        ev.add("DTEND", start + timedelta(minutes=rnd.choice([15, 30, 60, 90])))
        rule = rule_for(rnd)
        if rule.startswith("FREQ=MONTHLY"):
            # synchronise DTSTART with the rule (RFC 5545: otherwise undefined)
            while not (start.weekday() == 4 and (start + timedelta(days=7)).month != start.month):
                start += timedelta(days=1)
            ev["DTSTART"] = icalendar.vDDDTypes(start)
            ev["DTEND"] = icalendar.vDDDTypes(start + timedelta(minutes=60))
        ev.add("RRULE", icalendar.vRecur.from_ical(rule))
        if i % 3 == 0:
            ev.add("EXDATE", [start + timedelta(days=7)])
        cal.add_component(ev)
    cal.add_missing_timezones()
    raw: bytes = cal.to_ical()
    parsed = ical.parse(raw, "UTC")
    rows = []
    for i, e in enumerate(parsed.events):
        rec = recurrence.Recurring(start=e.start_time, end=e.end_time, timezone=e.timezone,
                                   rule=e.recurrence_rule, rdates=e.rdates, exdates=e.exdates)
        rows.append(Row(i, e.uid, e.start_time, e.end_time, e.timezone, e.recurrence_rule,
                        e.rdates, e.exdates, False, recurrence.recurrence_end(rec),
                        batch.plan_of(e.start_time, e.end_time, e.timezone,
                                      e.recurrence_rule, e.rdates, e.exdates)
                        if stored_plans else None))
    rows.sort(key=lambda r: r.start_time)
    return raw, rows


def roost_query(rows: list[Row], starts: list[datetime], start: datetime,
                end: datetime) -> list[tuple[Any, datetime, datetime]]:
    """The timed part: the candidate filter and the expansion, whose (row, start, end)
    triples are what the API serialises."""
    candidates = [r for r in rows[:bisect_left(starts, end)]
                  if r.recurrence_end is None or r.recurrence_end >= start]
    return expand_events(candidates, start, end)


def comparable(found: list[tuple[Any, datetime, datetime]]) -> list[tuple[str, datetime, datetime]]:
    """Roost's answer in the oracle's terms (not timed: only the comparison needs it)."""
    return [(ev.uid, s, e) for ev, s, e in found]


def oracle_query(cal: Any, start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    found = []
    for comp in recurring_ical_events.of(cal).between(start, end):
        found.append((str(comp["UID"]), comp.decoded("DTSTART").astimezone(UTC),
                      comp.decoded("DTEND").astimezone(UTC)))
    return found


def stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(ms), "p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(p95, 2), "max_ms": round(ordered[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--oracle-queries", type=int, default=5)
    parser.add_argument("--range-days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--no-stored-plans", action="store_true",
                        help="rows without recurrence_plan (as rows written before "
                             "migration 0960): every plan compiled at query time")
    args = parser.parse_args()

    began = time.perf_counter()
    raw, rows = build(args.events, args.seed, not args.no_stored_plans)
    built_s = time.perf_counter() - began
    # The writes ran in this process: forget what computing the stored plans cached, as a
    # server process that did not write these events never had it.
    for cached in (batch._compiled, recurrence._prepare, recurrence._plan,
                   recurrence._month_plan):
        cached.cache_clear()
    starts = [r.start_time for r in rows]
    cal = icalendar.Calendar.from_ical(raw)
    # The data (and recurring-ical-events' parsed calendar: millions of objects) lives for
    # the whole run: out of the collector's sight, so that a full collection during a
    # query does not walk the benchmark's own data.
    gc.collect()
    gc.freeze()
    rnd = random.Random(args.seed + 1)
    ranges = []
    for _ in range(max(args.queries, args.oracle_queries) + 1):
        s = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=rnd.randrange(365 - args.range_days))
        ranges.append((s, s + timedelta(days=args.range_days)))

    t = time.perf_counter()
    roost_query(rows, starts, *ranges[-1])
    cold_ms = (time.perf_counter() - t) * 1000
    roost_ms, roost_cpu_ms, sizes = [], [], []
    for s, e in ranges[:args.queries]:
        t, cpu = time.perf_counter(), time.process_time()
        found = roost_query(rows, starts, s, e)
        roost_ms.append((time.perf_counter() - t) * 1000)
        roost_cpu_ms.append((time.process_time() - cpu) * 1000)  # less the machine's load
        sizes.append(len(found))
        del found
    # The same queries again: every event they meet has been seen once (its plan cached),
    # as in a server that has answered a few queries over these events.
    warm_ms = []
    for s, e in ranges[:args.queries]:
        t = time.perf_counter()
        found = roost_query(rows, starts, s, e)
        warm_ms.append((time.perf_counter() - t) * 1000)
        del found
    oracle_ms, mismatches = [], 0
    for s, e in ranges[:args.oracle_queries]:
        t = time.perf_counter()
        theirs = oracle_query(cal, s, e)
        oracle_ms.append((time.perf_counter() - t) * 1000)
        if sorted(theirs) != sorted(comparable(roost_query(rows, starts, s, e))):
            mismatches += 1

    result = {
        "benchmark": "calendar range query: recurring events expanded",
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "events": args.events, "range_days": args.range_days,
        "build_s": round(built_s, 1),
        "occurrences_per_query": {"mean": round(statistics.mean(sizes), 1), "max": max(sizes)},
        "roost": stats(roost_ms),
        "roost_cpu": stats(roost_cpu_ms),
        "roost_warm": stats(warm_ms),
        "roost_cold_first_query_ms": round(cold_ms, 2),
        "stored_plans": not args.no_stored_plans,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "recurring_ical_events": stats(oracle_ms),
        "answers_differ": mismatches,
        "target": "p95 < 100 ms",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
