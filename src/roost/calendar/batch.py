"""A range query's expansion of many events at once: the simple DAILY/WEEKLY rules of
``recurrence._Plan`` and the simple MONTHLY rules (one day a month every month has) of
``recurrence._MonthPlan`` as numpy arithmetic over all events of a zone together, the rest
event by event as ``recurrence.occurrences`` does.

A one-week query over 50,000 recurring events meets ~13,000 candidate events and
~20,000 occurrences; expanded one event at a time in Python that was ~20 µs an occurrence
(docs/benchmarks.md, "Calendar").  Here each candidate costs one read of its plan in
Python (``plan_of``: integers stored with the event at each write, or compiled and cached
for rows without) and each occurrence a few array operations; only occurrences on a day
with a DST change (exact conversion) and rules neither arithmetic expresses (dateutil)
take the per-event path.  The answer is exactly ``recurrence.occurrences`` per event,
sorted by (start, end, event id) (tests/calendar/test_batch.py compares them).

Instants are int64 microseconds since 0001-01-01 UTC inside; datetimes are made only for
the answer, one per distinct instant.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import chain
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from roost.calendar.recurrence import (
    Window,
    _expand_dateutil,
    _month_plan,
    _overlaps,
    _prepare,
    _zone,
    representable_day,
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
                       for d in map(representable_day, range(lo, hi + 2))], dtype=np.int64)
    steady = np.zeros(len(offset), dtype=np.int64)
    for i in range(len(offset) - 2, -1, -1):
        steady[i] = steady[i + 1] + 1 if offset[i] == offset[i + 1] else 0
    return offset, steady


PLAN_VERSION: Final = 1
"""The layout of ``plan_of``'s integers; a stored plan of another version is ignored (the
event is compiled at query time instead), so changing the layout needs no migration."""
_NO_PLAN: Final = (0,)  # stands for a row without a stored plan
SINGLE, DAYS, MONTH, DATEUTIL = 0, 1, 2, 3  # what follows the plan's first four integers
KIND: Final = 3  # the bits of the plan's second integer that give the kind; the flags:
HAS_RDATES: Final = 4
HAS_EXDATES: Final = 8
_DAYS_ROW = 6
_MONTH_ROW = 9

Plan = tuple[int, ...]


def plan_of(start: datetime, end: datetime, tz_name: str, rule: str | None,
            rdates: Sequence[datetime] | None = (),
            exdates: Sequence[datetime] | None = ()) -> list[int]:
    """What a range query needs of an event, as integers: stored with the event at every
    write (``events.recurrence_plan``) so that a query does no per-event parsing, and
    computed (and cached) at query time for rows without one.  ``start``/``end`` are aware,
    ``rule`` valid (the write validated it).

    Layout: ``PLAN_VERSION``; the kind, plus ``HAS_RDATES`` and ``HAS_EXDATES``; DTSTART's
    occurrence (start and end, µs since 0001-01-01 UTC); then by kind: ``DAYS``: six
    integers per day offset of the period (anchor plus the offset, period, first, last
    (-1: never ends), time of day, duration; days as date ordinals, times in µs);
    ``MONTH``: the month rule (anchor month, interval, monthday, weekday, nth, first, last,
    time of day, duration); ``SINGLE`` (no rule, or none beyond DTSTART) and ``DATEUTIL``
    (a rule neither arithmetic expresses): nothing."""
    plan = list(_compiled(start, end, tz_name, rule))
    plan[1] |= (HAS_RDATES if rdates else 0) | (HAS_EXDATES if exdates else 0)
    return plan


@lru_cache(maxsize=65536)
def _compiled(start: datetime, end: datetime, tz_name: str, rule: str | None) -> Plan:
    prep = _prepare(start, end, tz_name, rule, True)
    head = (PLAN_VERSION, SINGLE, _us(prep.first[0]), _us(prep.first[1]))
    duration_us = prep.duration // _US
    if rule is None:
        return head
    plan = prep.plan
    if plan is not None:
        if not plan.offsets:
            return head
        last = -1 if plan.last is None else plan.last
        time_us = plan.time // _US
        rows = [(plan.anchor + o, plan.period, plan.first, last, time_us, duration_us)
                for o in plan.offsets]
        return (PLAN_VERSION, DAYS, head[2], head[3], *(x for row in rows for x in row))
    month = _month_plan(rule, prep.start_l, tz_name)
    if month is None:
        return (PLAN_VERSION, DATEUTIL, head[2], head[3])
    return (PLAN_VERSION, MONTH, head[2], head[3], month.anchor, month.interval,
            month.monthday, month.weekday, month.nth, month.first,
            -1 if month.last is None else month.last, month.time // _US, duration_us)


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


class TooManyOccurrences(Exception):
    """An expansion would make more occurrences than its budget."""

    def __init__(self, budget: int) -> None:
        super().__init__(f"more than {budget} occurrences")
        self.budget = budget


def _within(count: int, budget: int | None) -> None:
    if budget is not None and count > budget:
        raise TooManyOccurrences(budget)


def expand_many(events: Sequence[Any], window: Window,
                budget: int | None = None) -> tuple[Ints, Ints, Ints]:
    """The occurrences of ``events`` (rows with ``start_time``, ``end_time``, ``timezone``,
    ``recurrence_rule``, ``rdates``, ``exdates`` and optionally ``recurrence_plan``, what
    ``plan_of`` gave at the last write) overlapping the window, as three arrays: start and
    end (µs since 0001-01-01 UTC) and the event's position in ``events``; ordered by
    start, end and position, each (event, start) once, EXDATEs removed.  More than
    ``budget`` of them (counted as they are made, before any is built past it) raises
    :class:`TooManyOccurrences`."""
    range_start, range_end = window.start, window.end
    rs, re_ = _us(range_start), _us(range_end)
    # Each candidate's plan: stored with it, or compiled (and cached) for a row without;
    # all of them as one array (``at``: where each starts), read by numpy from here on.
    plans: list[Sequence[int]] = [getattr(ev, "recurrence_plan", None) or _NO_PLAN
                                  for ev in events]
    for i in [i for i, plan in enumerate(plans) if plan[0] != PLAN_VERSION]:
        ev = events[i]
        plans[i] = plan_of(ev.start_time, ev.end_time, ev.timezone, ev.recurrence_rule,
                           ev.rdates, ev.exdates)
    sizes = np.fromiter(map(len, plans), dtype=np.int64, count=len(plans))
    flat = np.fromiter(chain.from_iterable(plans), dtype=np.int64, count=int(sizes.sum()))
    at = np.cumsum(sizes) - sizes
    flags = flat[at + 1]
    kinds = flags & KIND
    fs, fe = flat[at + 2], flat[at + 3]
    hit = (fs < re_) & ((fe > rs) | ((fs == fe) & (fs >= rs)))  # recurrence._overlaps
    # DTSTART's occurrences, then those found one by one (dateutil, RDATE, DST days).
    parts_s: list[Ints] = [fs[hit]]
    parts_e: list[Ints] = [fe[hit]]
    parts_i: list[Ints] = [np.flatnonzero(hit)]
    one_s: list[int] = []
    one_e: list[int] = []
    one_i: list[int] = []
    for i in np.flatnonzero((kinds == DATEUTIL) | (flags & HAS_RDATES != 0)).tolist():
        ev = events[i]
        found: dict[datetime, datetime] = {}
        prep = _prepare(ev.start_time, ev.end_time, ev.timezone, ev.recurrence_rule, True)
        _expand_dateutil(prep, found, ev.rdates or (), range_start, range_end)
        _within(len(one_s) + len(found), budget)
        for s, e in found.items():
            one_s.append(_us(s))
            one_e.append(_us(e))
            one_i.append(i)
    # The arithmetic plans, per zone: their rows as one table each, and each row's event.
    zone_ids: dict[str, int] = {}
    zone_of = np.array([zone_ids.setdefault(ev.timezone, len(zone_ids)) for ev in events],
                       dtype=np.int64)
    tables: list[tuple[Ints, Ints]] = []
    for kind, width in ((DAYS, _DAYS_ROW), (MONTH, _MONTH_ROW)):
        chosen = np.flatnonzero(kinds == kind)
        event, k = _ranges((sizes[chosen] - 4) // width)  # a DAYS row per day offset
        event = chosen[event]
        cells = (at[event] + 4 + k * width)[:, None] + np.arange(width)
        tables.append((flat[cells].reshape(-1, width), event))
    for tz_name, zone_id in zone_ids.items():
        in_zone = []
        for table, event in tables:
            mine = zone_of[event] == zone_id
            in_zone.append((table[mine], event[mine]))
        if not any(len(event) for _, event in in_zone):
            continue
        made = len(one_s) + sum(map(len, parts_s))
        zone_s, zone_e, zone_i, exact = _expand_zone(
            tz_name, in_zone[0], in_zone[1], window, rs, re_,
            None if budget is None else budget - made)
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
    starts = np.concatenate([*parts_s, np.array(one_s, dtype=np.int64)])
    ends = np.concatenate([*parts_e, np.array(one_e, dtype=np.int64)])
    index = np.concatenate([*parts_i, np.array(one_i, dtype=np.int64)])
    if len(starts) == 0:
        return starts, ends, index
    # Each (event, start) once.  Two ways to the same start (DTSTART and the rule, an
    # RDATE and the rule) convert the same wall time the same way: the same end, so the
    # copies are neighbours in the answer's order (start, end, position), sorted here once.
    order = np.lexsort((index, ends, starts))
    starts, ends, index = starts[order], ends[order], index[order]
    keep = np.ones(len(starts), dtype=bool)
    keep[:-1] = (starts[1:] != starts[:-1]) | (index[1:] != index[:-1])
    starts, ends, index = starts[keep], ends[keep], index[keep]
    has_ex = flags & HAS_EXDATES != 0
    if has_ex.any():
        keep = np.ones(len(starts), dtype=bool)
        keep[_excluded(starts, index, has_ex, events)] = False
        starts, ends, index = starts[keep], ends[keep], index[keep]
    return starts, ends, index


def _excluded(starts: Ints, index: Ints, has_ex: npt.NDArray[np.bool_],
              events: Sequence[Any]) -> Ints:
    """The positions of the occurrences an EXDATE of their event removes (EXDATEs
    converted only for the events with occurrences here)."""
    mine = np.flatnonzero(has_ex[index])
    ex_i: list[int] = []
    ex_s: list[int] = []
    for i in np.unique(index[mine]).tolist():
        for x in events[i].exdates:
            ex_i.append(i)
            ex_s.append(_us(x))
    # Occurrences and EXDATEs in one order, an EXDATE right after the occurrence it names.
    at = np.concatenate([starts[mine], np.array(ex_s, dtype=np.int64)])
    of = np.concatenate([index[mine], np.array(ex_i, dtype=np.int64)])
    is_ex = np.concatenate([np.zeros(len(mine), dtype=np.int64),
                            np.ones(len(ex_s), dtype=np.int64)])
    order = np.lexsort((is_ex, at, of))
    at, of, is_ex = at[order], of[order], is_ex[order]
    named = (is_ex[:-1] == 0) & (is_ex[1:] == 1) & (at[:-1] == at[1:]) & (of[:-1] == of[1:])
    found: Ints = mine[order[:-1][named]]
    return found


WindowStart = Callable[[Ints, Ints], Ints]
"""A zone's earliest local date an occurrence may start on and still reach the window,
given the occurrences' time of day and duration."""

_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal(): numpy's datetime64 day 0
_EPOCH_MONTH = 1970 * 12  # months since year 0 of 1970-01


def _day_rows(table: Ints, wlo_of: WindowStart, last_day: int,
              budget: int | None) -> tuple[Ints, Ints, Ints, Ints]:
    """The DAYS plans' occurrence dates within each row's ``wlo..last_day``: (row, date
    ordinal), and the rows' time of day and duration."""
    anchor, period, first, last, time_us, duration_us = table.T
    lo = np.maximum(first, wlo_of(time_us, duration_us))
    hi = np.where(last < 0, last_day, np.minimum(last_day, last))
    n_min = -((anchor - lo) // period)  # ceil((lo - anchor) / period)
    n_max = (hi - anchor) // period
    row, k = _ranges(np.maximum(n_max - n_min + 1, 0), budget)
    return row, anchor[row] + (n_min[row] + k) * period[row], time_us, duration_us


def _month_rows(table: Ints, wlo_of: WindowStart, last_day: int,
                budget: int | None) -> tuple[Ints, Ints, Ints, Ints]:
    """The MONTH plans' occurrence dates (``recurrence._MonthPlan.days`` over arrays)."""
    anchor, interval, monthday, weekday, nth, first, last, time_us, duration_us = table.T
    lo = np.maximum(first, wlo_of(time_us, duration_us))
    hi = np.where(last < 0, last_day, np.minimum(last_day, last))
    month_lo, month_hi = _month_index(lo), _month_index(hi)
    k_min = np.maximum(0, -((anchor - month_lo) // interval))  # ceil, from the anchor on
    k_max = (month_hi - anchor) // interval
    row, k = _ranges(np.where(hi >= lo, np.maximum(k_max - k_min + 1, 0), 0), budget)
    month = anchor[row] + (k_min[row] + k) * interval[row]
    month_first = _month_start(month)
    length = _month_start(month + 1) - month_first
    md, wd, n = monthday[row], weekday[row], nth[row]
    month_last = month_first + length - 1
    day = np.where(md > 0, month_first + md - 1,
          np.where(md < 0, month_first + length + md,
          np.where(n > 0, month_first + (wd - (month_first - 1)) % 7 + 7 * (n - 1),
                   month_last - ((month_last - 1) - wd) % 7 - 7 * (-n - 1))))
    inside = (day >= lo[row]) & (day <= hi[row])
    return row[inside], day[inside], time_us, duration_us


def _month_index(ordinals: Ints) -> Ints:
    """Date ordinals as months since year 0 (year * 12 + month - 1)."""
    months: Ints = ((ordinals - _EPOCH_ORDINAL).astype("datetime64[D]")
                    .astype("datetime64[M]").astype(np.int64))
    return months + _EPOCH_MONTH


def _month_start(months: Ints) -> Ints:
    """The date ordinal of each month's first day (months since year 0)."""
    days: Ints = ((months - _EPOCH_MONTH).astype("datetime64[M]")
                  .astype("datetime64[D]").astype(np.int64))
    return days + _EPOCH_ORDINAL


def _ranges(counts: Ints, budget: int | None = None) -> tuple[Ints, Ints]:
    """For row r with counts[r] items: each item's row and its number within the row
    (:class:`TooManyOccurrences` when they are more than ``budget``)."""
    total = int(counts.sum())
    _within(total, budget)
    row = np.repeat(np.arange(len(counts)), counts)
    k = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return row, k


def _expand_zone(
    tz_name: str, day_plans: tuple[Ints, Ints], month_plans: tuple[Ints, Ints],
    window: Window, rs: int, re_: int, budget: int | None = None,
) -> tuple[Ints, Ints, Ints, list[tuple[int, int, int, int]]]:
    """One zone's DAYS and MONTH plans expanded (``plan_of``'s rows as tables, with each
    row's event position); occurrences on a day whose offset changes within the
    occurrence are returned apart (event, day, time, duration) for the exact conversion."""
    first_day, last_day = window.local_days(tz_name, _zone(tz_name))

    def wlo_of(time_us: Ints, duration_us: Ints) -> Ints:
        # the earliest local date an occurrence may start on and still reach the window
        return first_day - (time_us + duration_us) // DAY_US - 1

    found = []
    for (table, event), rows_of in ((day_plans, _day_rows), (month_plans, _month_rows)):
        if len(table):
            row, day, time_us, duration_us = rows_of(table, wlo_of, last_day, budget)
            if budget is not None:
                budget -= len(row)
            found.append((event[row], day, time_us[row], duration_us[row]))
    event = np.concatenate([f[0] for f in found])
    day = np.concatenate([f[1] for f in found])
    time_us = np.concatenate([f[2] for f in found])
    duration_us = np.concatenate([f[3] for f in found])
    empty = np.zeros(0, dtype=np.int64)
    if len(day) == 0:
        return empty, empty, empty, []
    span = (time_us + duration_us) // DAY_US  # local days an occurrence reaches past its own
    base_day = int((first_day - span - 1).min())
    offset, steady = _zone_days(tz_name, base_day, last_day + int(span.max()) + 1)
    at = day - base_day
    s = (day - 1) * DAY_US + time_us - offset[at]
    e = s + duration_us
    exact_mask = steady[at] <= span
    hit = (s < re_) & ((e > rs) | ((s == e) & (s >= rs))) & ~exact_mask
    exact = [(int(i), int(d), int(t), int(u)) for i, d, t, u in zip(
        event[exact_mask], day[exact_mask], time_us[exact_mask], duration_us[exact_mask],
        strict=True)]
    return s[hit], e[hit], event[hit], exact


def to_datetimes(values: Ints) -> list[datetime]:
    """µs since 0001-01-01 UTC as aware datetimes, one object per distinct instant (an
    answer has many occurrences at the same few hours: made once each, picked by numpy)."""
    if len(values) == 0:
        return []
    distinct, inverse = np.unique(values, return_inverse=True)
    made = np.empty(len(distinct), dtype=object)
    made[:] = [_ORIGIN + timedelta(microseconds=v) for v in distinct.tolist()]
    picked: list[datetime] = made[inverse].tolist()
    return picked


def by_start_end_id(starts: Ints, ends: Ints, index: Ints, events: Sequence[Any]) -> Ints:
    """The positions of the occurrences ordered by start, end, then the event's ``id``
    (ids are unique: the order is total).  Ids are looked at only for the events of
    occurrences whose start and end tie: UUIDs become two 64-bit sort keys."""
    if len(starts) < 2:
        return np.arange(len(starts))
    if _ordered(starts, ends, index):  # as expand_many answers, unless overrides were added
        order: Ints = np.arange(len(starts))
        s, e = starts, ends
    else:
        order = np.lexsort((index, ends, starts))
        s, e = starts[order], ends[order]
    same = (s[1:] == s[:-1]) & (e[1:] == e[:-1])
    if not same.any():
        return order
    tied = np.zeros(len(order), dtype=bool)
    tied[:-1] |= same
    tied[1:] |= same
    present = np.unique(index[order[tied]])  # not every event with occurrences
    high, low = _id_keys([events[i].id for i in present.tolist()])
    # Within each run of equal (start, end), by id; the runs stay where they are.
    by = index[order]
    slot = np.minimum(np.searchsorted(present, by), len(present) - 1)
    known = present[slot] == by  # the other occurrences are alone in their run
    run = np.concatenate([[0], np.cumsum(~same)])
    within: Ints = np.lexsort((np.where(known, low[slot], 0), np.where(known, high[slot], 0),
                               run))
    ordered: Ints = order[within]
    return ordered


def _ordered(starts: Ints, ends: Ints, index: Ints) -> bool:
    """Whether the occurrences are already ordered by start, end and position."""
    ds, de, di = np.diff(starts), np.diff(ends), np.diff(index)
    return bool(((ds > 0) | ((ds == 0) & ((de > 0) | ((de == 0) & (di >= 0))))).all())


def _id_keys(ids: list[Any]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Ids as two unsigned 64-bit keys that sort as the ids do: a UUID's 128 bits,
    integers as they are; anything else by its rank among ``ids``."""
    if all(type(v) is uuid.UUID for v in ids):
        keys = np.frombuffer(b"".join([v.bytes for v in ids]), dtype=">u8").reshape(-1, 2)
        return keys[:, 0].astype(np.uint64), keys[:, 1].astype(np.uint64)
    if all(type(v) is int for v in ids):
        with contextlib.suppress(OverflowError):  # negative or above 64 bits: below
            return np.zeros(len(ids), dtype=np.uint64), np.array(ids, dtype=np.uint64)
    values = [v.int if isinstance(v, uuid.UUID) else v for v in ids]
    if not all(isinstance(v, int) and 0 <= v < 1 << 128 for v in values):
        ranks = {v: r for r, v in enumerate(sorted(set(values)))}
        values = [ranks[v] for v in values]
    return (np.array([v >> 64 for v in values], dtype=np.uint64),
            np.array([v & 0xFFFF_FFFF_FFFF_FFFF for v in values], dtype=np.uint64))
