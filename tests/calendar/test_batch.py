"""A range query's batch expansion (roost.calendar.batch, numpy over all events of a zone)
gives exactly what expanding each event on its own gives, in the same order: random
simple and complex rules in zones with DST changes, timed and all-day events, EXDATE and
RDATE, overrides, ties broken by event id, the limit."""

from __future__ import annotations

import gc
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from roost.calendar import batch, recurrence
from roost.calendar.service import expand_events
from tests.calendar.test_fastpath import _event


@dataclass
class Row:
    id: uuid.UUID
    start_time: datetime
    end_time: datetime
    timezone: str
    recurrence_rule: str | None
    rdates: list[datetime] = field(default_factory=list)
    exdates: list[datetime] = field(default_factory=list)
    calendar_id: int = 1
    uid: str = ""
    recurrence_id: datetime | None = None
    status: str = "confirmed"
    recurrence_plan: list[int] | None = None  # what a write stores (batch.plan_of)


def _one_by_one(events: list[Row], start: datetime, end: datetime,
                limit: int | None = None) -> list[tuple[Any, datetime, datetime]]:
    """The reference: each event expanded on its own, as the range query did before."""
    window = recurrence.Window(start, end)
    found: list[tuple[datetime, datetime, uuid.UUID, Row]] = []
    overrides = [ev for ev in events if ev.recurrence_id is not None]
    for ev in events:
        if ev.recurrence_id is not None:
            continue
        for s, e in recurrence.occurrences(ev.start_time, ev.end_time, ev.timezone,
                                           ev.recurrence_rule, ev.rdates, ev.exdates, window):
            found.append((s, e, ev.id, ev))
    replaced = {(ev.calendar_id, ev.uid, ev.recurrence_id) for ev in overrides}
    found = [f for f in found if (f[3].calendar_id, f[3].uid, f[0]) not in replaced]
    for ev in overrides:
        if ev.status != "cancelled":
            found.extend((s, e, ev.id, ev) for s, e in recurrence.occurrences(
                ev.start_time, ev.end_time, ev.timezone, None, (), (), window))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    return [(ev, s, e) for s, e, _, ev in found[:limit]]


def _rows(rnd: random.Random, n: int) -> list[Row]:
    rows = []
    for i in range(n):
        ev = _event(rnd)
        rule = ev.rule
        if rnd.random() < 0.15:  # rules the day arithmetic cannot express: MONTHLY ones
            # take the month arithmetic (DTSTART's day, when > 28, dateutil), others dateutil
            rule = rnd.choice(["FREQ=MONTHLY;BYDAY=-1FR", "FREQ=DAILY;BYHOUR=9,17",
                               "FREQ=YEARLY;COUNT=3", "FREQ=WEEKLY;BYDAY=1MO;COUNT=4",
                               "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=5",
                               "FREQ=MONTHLY;INTERVAL=2;BYDAY=2TU;UNTIL=20271231",
                               "FREQ=MONTHLY;COUNT=6", "FREQ=MONTHLY;BYMONTHDAY=31"])
        elif rnd.random() < 0.1:
            rule = None
        rows.append(Row(uuid.uuid4(), ev.start, ev.end, ev.timezone, rule, list(ev.rdates),
                        list(ev.exdates), uid=f"e{i}"))
    # Ties: copies of some events (same times, other ids), and overrides of occurrences.
    for row in rnd.sample(rows, n // 10):
        rows.append(Row(uuid.uuid4(), row.start_time, row.end_time, row.timezone,
                        row.recurrence_rule, uid=f"copy-{row.uid}"))
    for row in rnd.sample(rows, n // 10):
        occ = recurrence.occurrences(row.start_time, row.end_time, row.timezone,
                                     row.recurrence_rule, row.rdates, row.exdates,
                                     recurrence.Window(row.start_time,
                                                       row.start_time + timedelta(days=60)))
        if occ:
            at = rnd.choice(occ)[0]
            rows.append(Row(uuid.uuid4(), at + timedelta(hours=1), at + timedelta(hours=2),
                            "UTC", None, uid=row.uid, recurrence_id=at,
                            status=rnd.choice(["confirmed", "cancelled"])))
    rnd.shuffle(rows)
    return rows


@pytest.mark.parametrize(("seed", "plans"), [(0, "none"), (1, "stored"), (2, "stored"),
                                             (3, "stale")])
def test_the_batch_expansion_equals_one_event_at_a_time(seed: int, plans: str) -> None:
    """With the plans a write stores, without (rows from before migration 0960), and with
    plans of another layout version (ignored: compiled at query time)."""
    rnd = random.Random(seed)
    rows = _rows(rnd, 400)
    for row in rows:
        if plans != "none":
            row.recurrence_plan = batch.plan_of(row.start_time, row.end_time, row.timezone,
                                                row.recurrence_rule, row.rdates, row.exdates)
        if plans == "stale":  # a layout this code does not know, with nonsense after it
            row.recurrence_plan = [batch.PLAN_VERSION + 1, batch.DAYS, 0, 0, 1, 1, 1, 1, 1, 1]
    batch._compiled.cache_clear()  # the stored plans are read, not the cache
    for _ in range(12):
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=rnd.randrange(900),
                                                              hours=rnd.randrange(24))
        end = start + timedelta(days=rnd.choice([1, 7, 31, 92]))
        want = _one_by_one(rows, start, end)
        got = expand_events(rows, start, end)
        assert [(ev.id, s, e) for ev, s, e in got] == [(ev.id, s, e) for ev, s, e in want]
        assert all(s.tzinfo is not None and e.tzinfo is not None for _, s, e in got)
        # A limit is met expanding growing spans from the start: the same first ones.
        for limit in (5, len(want) // 2 + 1, len(want) + 1):
            limited = expand_events(rows, start, end, limit=limit)
            assert [(ev.id, s, e) for ev, s, e in limited] == \
                [(ev.id, s, e) for ev, s, e in want[:limit]]


def test_no_events_and_no_occurrences() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    assert expand_events([], start, start + timedelta(days=7)) == []
    later = Row(uuid.uuid4(), start + timedelta(days=30), start + timedelta(days=30, hours=1),
                "UTC", "FREQ=DAILY;COUNT=3")
    assert expand_events([later], start, start + timedelta(days=7)) == []


def test_the_collector_is_paused_during_an_expansion_and_restored_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    rule = "FREQ=DAILY;COUNT=3"
    row = Row(uuid.uuid4(), datetime(2027, 1, 4, 9, tzinfo=UTC),
              datetime(2027, 1, 4, 10, tzinfo=UTC), "UTC", rule)
    start, end = datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)
    assert gc.isenabled()
    original = batch.expand_many

    def watching(events: Any, window: Any, budget: int | None = None) -> Any:
        seen.append(gc.isenabled())
        return original(events, window, budget)

    monkeypatch.setattr(batch, "expand_many", watching)
    assert len(expand_events([row], start, end)) == 3
    # Overlapping pauses (two threads): on again only when the last one ends.
    first_in, release = threading.Event(), threading.Event()

    def hold() -> None:
        with batch.collector_paused():
            first_in.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    first_in.wait(10)
    expand_events([row], start, end)
    assert not gc.isenabled()  # the other pause still holds it
    release.set()
    holder.join(10)
    assert gc.isenabled()
    # An expansion that fails leaves it on.
    with pytest.raises(AttributeError):
        expand_events([object()], start, end)
    assert gc.isenabled()
    # A process that runs with the collector off keeps it off.
    gc.disable()
    try:
        expand_events([row], start, end)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert seen[:2] == [False, False]


@pytest.mark.parametrize("ids", [
    [uuid.UUID(int=(1 << 127) + 5), uuid.UUID(int=3), uuid.UUID(int=1 << 64)],
    [2**70, 7, -3],  # integers beyond 64 bits and below zero: ranked
    [9, 2, 5],
    ["b", "c", "a"],
])
def test_ties_are_ordered_by_the_events_id_whatever_its_type(ids: list[Any]) -> None:
    at = datetime(2027, 1, 4, 9, tzinfo=UTC)
    rows = [Row(i, at, at + timedelta(hours=1), "UTC", None) for i in ids]  # type: ignore[arg-type]
    got = expand_events(rows, at - timedelta(days=1), at + timedelta(days=1))
    assert [ev.id for ev, _, _ in got] == sorted(ids)
