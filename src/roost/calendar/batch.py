"""A range query's expansion of many events at once: the simple DAILY/WEEKLY rules of
``recurrence._Plan`` as numpy arithmetic over all events of a zone together, simple
MONTHLY rules (one day a month every month has) by ``recurrence._MonthPlan``'s month
arithmetic, the rest event by event as ``recurrence.occurrences`` does.

A one-week query over 50,000 recurring events meets ~13,000 candidate events and
~20,000 occurrences; expanded one event at a time in Python that was ~20 µs an occurrence
(docs/benchmarks.md, "Calendar").  Here each candidate costs one cached look-up in Python
and each occurrence a few array operations; only occurrences on a day with a DST change
(exact conversion) and rules neither plan can express (dateutil) take the per-event path.
The answer is exactly ``recurrence.occurrences`` per event, sorted by (start, end, event
id) (tests/calendar/test_batch.py compares them).

Instants are int64 microseconds since 0001-01-01 UTC inside; datetimes are made only for
the answer, one per distinct instant.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from roost.calendar.recurrence import (
    Window,
    _expand_dateutil,
    _month_plan,
    _MonthPlan,
    _overlaps,
    _Plan,
    _prepare,
    _Prepared,
    _zone,
    to_utc,
)

_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)  # date ordinal 1 at midnight UTC
_US = timedelta(microseconds=1)
DAY_US = 86_400_000_000

Ints = npt.NDArray[np.int64]


def micros(at: datetime) -> int:
    """An aware datetime as µs since 0001-01-01 UTC."""
    return (at - _ORIGIN) // _US


_us = micros


@lru_cache(maxsize=4096)
def _zone_days(tz_name: str, lo: int, hi: int) -> tuple[Ints, Ints]:
    """For the local dates ``lo..hi`` of a zone: each day's UTC offset at its midnight
    (µs) and for how many following days that offset holds (0: a DST change that day)."""
    tz = _zone(tz_name)
    offset = np.array([(datetime.fromordinal(d).replace(tzinfo=UTC)
                        - to_utc(datetime.fromordinal(d), tz)) // _US
                       for d in range(lo, hi + 2)], dtype=np.int64)
    steady = np.zeros(len(offset), dtype=np.int64)
    for i in range(len(offset) - 2, -1, -1):
        steady[i] = steady[i + 1] + 1 if offset[i] == offset[i + 1] else 0
    return offset, steady


@dataclass(frozen=True)
class _Compiled:
    """What a range query needs of one event, in µs, computed once per distinct event."""

    prep: _Prepared
    first_s: int  # DTSTART's occurrence
    first_e: int
    plan: _Plan | None  # a simple DAILY/WEEKLY rule's arithmetic
    month: _MonthPlan | None  # a simple MONTHLY rule's
    duration_us: int  # wall-clock
    by_dateutil: bool  # a rule neither plan can express
    plan_rows: tuple[tuple[int, int, int, int, int, int], ...]
    """The plan as ``_expand_zone``'s rows, one per day offset of its period: (anchor plus
    the offset, period, first, last (-1: never ends), time of day, duration), in µs and
    date ordinals."""


@lru_cache(maxsize=65536)
def _compiled(start: datetime, end: datetime, tz_name: str, rule: str | None) -> _Compiled:
    prep = _prepare(start, end, tz_name, rule, True)
    plan = prep.plan if prep.plan is not None and prep.plan.offsets else None
    month = (_month_plan(rule, prep.start_l, tz_name)
             if rule is not None and prep.plan is None else None)
    duration_us = prep.duration // _US
    rows = () if plan is None else tuple(
        (plan.anchor + o, plan.period, plan.first, -1 if plan.last is None else plan.last,
         plan.time // _US, duration_us) for o in plan.offsets)
    return _Compiled(prep, _us(prep.first[0]), _us(prep.first[1]), plan, month,
                     duration_us,
                     prep.rule is not None and prep.plan is None and month is None, rows)


_pause_lock = threading.Lock()
_pauses = 0
_collector_was_enabled = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a range query expands (threads that
    overlap share one pause; the last one out turns it back on).  An expansion makes
    tens of thousands of short-lived tuples, ints and datetimes, none of them cyclic;
    each young collection they trigger, and the full ones that follow, walk the process's
    heap (the per-event caches here alone hold ~10 objects an event): measured on the
    benchmark's 50,000 events, half of a query's time.  An expansion's allocations are
    bounded by the range a query may ask for."""
    global _pauses, _collector_was_enabled
    with _pause_lock:
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()


def expand_many(events: Sequence[Any], window: Window) -> tuple[Ints, Ints, Ints]:
    """The occurrences of ``events`` (rows with ``start_time``, ``end_time``, ``timezone``,
    ``recurrence_rule``, ``rdates``, ``exdates``) overlapping the window, as three arrays:
    start and end (µs since 0001-01-01 UTC) and the event's position in ``events``;
    unordered, each (event, start) once, EXDATEs removed."""
    range_start, range_end = window.start, window.end
    rs, re_ = _us(range_start), _us(range_end)
    # Occurrences found one by one (DTSTART, dateutil, RDATE, DST days).
    one_s: list[int] = []
    one_e: list[int] = []
    one_i: list[int] = []
    # Per zone: the plan rows of the simple rules and, for each row, its event's position.
    plans: dict[str, tuple[list[tuple[int, int, int, int, int, int]], list[int]]] = {}
    with_exdates: list[int] = []
    compiled = _compiled
    # The one Python pass over the candidates: a cached look-up and integer compares each.
    for i, ev in enumerate(events):
        c = compiled(ev.start_time, ev.end_time, ev.timezone, ev.recurrence_rule)
        fs, fe = c.first_s, c.first_e
        if fs < re_ and (fe > rs or (fs == fe and fs >= rs)):  # recurrence._overlaps
            one_s.append(fs)
            one_e.append(fe)
            one_i.append(i)
        if c.plan is not None:
            zone_plans = plans.get(c.plan.tz_name)
            if zone_plans is None:
                zone_plans = plans[c.plan.tz_name] = ([], [])
            zone_plans[0].extend(c.plan_rows)
            zone_plans[1].extend([i] * len(c.plan_rows))
        if c.month is not None:  # at most a few dates a query: converted exactly
            _expand_month(c, i, window, one_s, one_e, one_i)
        rdates = ev.rdates
        if rdates or c.by_dateutil:
            found: dict[datetime, datetime] = {}
            _expand_dateutil(c.prep, found, rdates or (), range_start, range_end)
            for s, e in found.items():
                one_s.append(_us(s))
                one_e.append(_us(e))
                one_i.append(i)
        if ev.exdates:
            with_exdates.append(i)

    parts_s: list[Ints] = []
    parts_e: list[Ints] = []
    parts_i: list[Ints] = []
    for tz_name, zone_plans in plans.items():
        zone_s, zone_e, zone_i, exact = _expand_zone(tz_name, zone_plans, window, rs, re_)
        parts_s.append(zone_s)
        parts_e.append(zone_e)
        parts_i.append(zone_i)
        tz = _zone(tz_name)
        for i, day, time_us, duration_us in exact:
            wall = datetime.fromordinal(day) + timedelta(microseconds=time_us)
            s_dt = to_utc(wall, tz)
            e_dt = to_utc(wall + timedelta(microseconds=duration_us), tz)
            if _overlaps(s_dt, e_dt, range_start, range_end):
                one_s.append(_us(s_dt))
                one_e.append(_us(e_dt))
                one_i.append(i)
    starts = np.concatenate([np.array(one_s, dtype=np.int64), *parts_s])
    ends = np.concatenate([np.array(one_e, dtype=np.int64), *parts_e])
    index = np.concatenate([np.array(one_i, dtype=np.int64), *parts_i])
    if len(starts) == 0:
        return starts, ends, index
    # Each (event, start) once.  Two ways to the same start (DTSTART and the rule, an
    # RDATE and the rule) convert the same wall time the same way: the same end.
    order = np.lexsort((index, starts))
    starts, ends, index = starts[order], ends[order], index[order]
    keep = np.ones(len(starts), dtype=bool)
    keep[:-1] = (starts[1:] != starts[:-1]) | (index[1:] != index[:-1])
    if with_exdates:
        # EXDATEs converted only for the events that have occurrences in the window.
        has_ex = np.zeros(len(events), dtype=bool)
        has_ex[with_exdates] = True
        positions = np.flatnonzero(has_ex[index] & keep)
        excluded = {(i, _us(x)) for i in set(index[positions].tolist())
                    for x in events[i].exdates}
        for pos in positions.tolist():
            if (int(index[pos]), int(starts[pos])) in excluded:
                keep[pos] = False
    return starts[keep], ends[keep], index[keep]


def _expand_month(c: _Compiled, i: int, window: Window, one_s: list[int], one_e: list[int],
                  one_i: list[int]) -> None:
    month, tz = c.month, c.prep.tz
    assert month is not None
    duration = c.prep.duration
    first_day, last_day = window.local_days(month.tz_name, tz)
    for day in month.days(first_day - (month.time + duration).days - 1, last_day):
        wall = datetime.fromordinal(day) + month.time
        s_dt, e_dt = to_utc(wall, tz), to_utc(wall + duration, tz)
        if _overlaps(s_dt, e_dt, window.start, window.end):
            one_s.append(_us(s_dt))
            one_e.append(_us(e_dt))
            one_i.append(i)


def _expand_zone(
    tz_name: str, compiled: tuple[list[tuple[int, int, int, int, int, int]], list[int]],
    window: Window, rs: int, re_: int,
) -> tuple[Ints, Ints, Ints, list[tuple[int, int, int, int]]]:
    """The plans of one zone's events expanded (``_Compiled.plan_rows``, with each row's
    event position); occurrences on a day whose offset changes within the occurrence are
    returned apart (event, day, time, duration) for the exact conversion."""
    first_day, last_day = window.local_days(tz_name, _zone(tz_name))
    table = np.array(compiled[0], dtype=np.int64).reshape(-1, 6)
    event = np.array(compiled[1], dtype=np.int64)
    anchor, period, first, last, time_us, duration_us = table.T
    span = (time_us + duration_us) // DAY_US  # local days an occurrence reaches past its own
    wlo = first_day - span - 1
    lo = np.maximum(first, wlo)
    hi = np.where(last < 0, last_day, np.minimum(last_day, last))
    n_min = -((anchor - lo) // period)  # ceil((lo - anchor) / period)
    n_max = (hi - anchor) // period
    counts = np.maximum(n_max - n_min + 1, 0)
    total = int(counts.sum())
    empty = np.zeros(0, dtype=np.int64)
    if total == 0:
        return empty, empty, empty, []
    row = np.repeat(np.arange(len(counts)), counts)
    k = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    day = anchor[row] + (n_min[row] + k) * period[row]
    base_day = int(wlo.min())
    offset, steady = _zone_days(tz_name, base_day, last_day + int(span.max()) + 1)
    at = day - base_day
    wall = (day - 1) * DAY_US + time_us[row]
    dur = duration_us[row]
    exact_mask = steady[at] <= span[row]
    s = wall - offset[at]
    e = s + dur
    hit = (s < re_) & ((e > rs) | ((s == e) & (s >= rs))) & ~exact_mask
    exact = [(int(event[r]), int(d), int(time_us[r]), int(duration_us[r]))
             for r, d in zip(row[exact_mask], day[exact_mask], strict=True)]
    return s[hit], e[hit], event[row[hit]], exact


def to_datetimes(values: Ints) -> list[datetime]:
    """µs since 0001-01-01 UTC as aware datetimes, one object per distinct instant."""
    made: dict[int, datetime] = {}
    out = []
    for v in values.tolist():
        at = made.get(v)
        if at is None:
            at = made[v] = _ORIGIN + timedelta(microseconds=v)
        out.append(at)
    return out


def by_start_end_id(starts: Ints, ends: Ints, index: Ints, events: Sequence[Any]) -> Ints:
    """The positions of the occurrences ordered by start, end, then the event's ``id``
    (ids are unique: the order is total).  Ids are looked at only when starts and ends
    tie: UUIDs (and integers) become two 64-bit sort keys."""
    order: Ints = np.lexsort((index, ends, starts))
    if len(order) < 2:
        return order
    s, e = starts[order], ends[order]
    if not ((s[1:] == s[:-1]) & (e[1:] == e[:-1])).any():
        return order
    present = np.unique(index)  # only the events with occurrences, not every candidate
    values = [ev.id.int if isinstance(ev.id, uuid.UUID) else ev.id
              for ev in (events[i] for i in present.tolist())]
    if not all(isinstance(v, int) and 0 <= v < 1 << 128 for v in values):
        ranks = {v: r for r, v in enumerate(sorted(set(values)))}
        values = [ranks[v] for v in values]
    at = np.searchsorted(present, index)
    high = np.array([v >> 64 for v in values], dtype=np.uint64)[at]
    low = np.array([v & 0xFFFF_FFFF_FFFF_FFFF for v in values], dtype=np.uint64)[at]
    ordered: Ints = np.lexsort((low, high, ends, starts))
    return ordered
