"""Run events for ``GET /api/v1/runs/{id}/events``: one LISTEN connection per process,
woken by the ``pg_notify`` every run change sends on commit (``roost.agents.runs.notify``).

A subscriber is woken, then reads what changed from the tables, so nothing rides in a
notification but the run's id: events are the committed steps and the run's end, each
with an id naming where the stream stands (``<step>.0`` started, ``<step>.1`` finished,
then ``.<steps>`` still open below it, :class:`Cursor`; ``end``), and a client that
reconnects with ``Last-Event-ID`` gets exactly the events after it.  Without a LISTEN
connection (it dropped, or PgBouncer in transaction mode cannot hold one) subscribers
look again every ``FALLBACK_POLL_S``; with one, only on a notification (and every
``KEEPALIVE_S`` to send a keep-alive comment)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import structlog

from roost.agents.models import OPEN_STEP_STATUSES, TERMINAL_RUN_STATUSES, RunStep
from roost.agents.runs import EVENTS_CHANNEL
from roost.agents.schemas import RunOut, RunStepOut

log = structlog.get_logger(__name__)

KEEPALIVE_S: Final = 15.0
FALLBACK_POLL_S: Final = 2.0


class Subscription:
    """One client's interest in one run: woken on every change, handed the model's text
    as it streams (``delta`` notifications; not stored, so not resumable: the finished
    step holds the whole text)."""

    def __init__(self, listener: RunListener) -> None:
        self._listener = listener
        self._event = asyncio.Event()
        self._deltas: list[tuple[int, str]] = []

    def _deliver(self, what: str) -> None:
        if what.startswith("delta:"):
            _, step, text = what.split(":", 2)
            with contextlib.suppress(ValueError):
                self._deltas.append((int(step), text))
        self._event.set()

    def wake(self) -> None:
        self._event.set()

    def take_deltas(self) -> list[tuple[int, str]]:
        taken, self._deltas = self._deltas, []
        return taken

    async def wait(self) -> bool:
        """True when woken, false after the keep-alive (or fallback poll) interval."""
        timeout = KEEPALIVE_S if self._listener.listening else FALLBACK_POLL_S
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()


class RunListener:
    """The process's LISTEN connection and the runs its subscribers wait on."""

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.listening = False

    async def start(self) -> None:
        if self._dsn is not None and self._task is None:
            self._task = asyncio.create_task(self._listen_loop(), name="roost-run-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        run_id, _, what = payload.partition(":")
        for subscription in self._subscribers.get(run_id, ()):
            subscription._deliver(what)

    def _wake_all(self) -> None:
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.wake()

    async def _listen_loop(self) -> None:
        pause = 0.5
        assert self._dsn is not None
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "roost-run-events"})
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=closed: ev.set())
                await conn.add_listener(EVENTS_CHANNEL, self._on_notify)
                self.listening, pause = True, 0.5
                self._wake_all()  # whatever changed while nobody listened
                await closed.wait()
                log.warning("agents.events_connection_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("agents.events_listen_failed", error=type(exc).__name__,
                            retry_in_s=pause)
            finally:
                self.listening = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: uuid.UUID) -> AsyncIterator[Subscription]:
        subscription = Subscription(self)
        key = str(run_id)
        self._subscribers[key].add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers[key].discard(subscription)
            if not self._subscribers[key]:
                del self._subscribers[key]


_END_STEP: Final = 1 << 30  # after any step a run can have (the column is an integer)
# The most open steps an event id names (a run has far fewer at once: a workflow's
# parallel branches); an id naming more is unreadable.
_MAX_OPEN: Final = 100_000


@dataclass(frozen=True)
class Cursor:
    """Where a stream stands: the highest step announced (``step``), whether its finish
    was sent (``phase`` 1), and the lower steps announced started whose finish was not
    (``open``: a workflow's parallel branches finish in any order)."""

    step: int = 0
    phase: int = 1
    open: frozenset[int] = frozenset()

    def first_unsent(self) -> int:
        """The lowest step that may still have a frame to send."""
        return min(self.open, default=self.step if self.phase == 0 else self.step + 1)

    def is_running(self, step: int) -> bool:
        """Announced started, its finish not sent."""
        return step in self.open or (step, 0) == (self.step, self.phase)

    def event_id(self) -> str:
        """``<step>.<phase>``, then ``.<open steps>`` when some are (``3-5,7``)."""
        if not self.open:
            return f"{self.step}.{self.phase}"
        numbers, ranges = sorted(self.open), []
        first = last = numbers[0]
        for number in numbers[1:]:
            if number != last + 1:
                ranges.append(f"{first}-{last}" if last > first else str(first))
                first = number
            last = number
        ranges.append(f"{first}-{last}" if last > first else str(first))
        return f"{self.step}.{self.phase}.{','.join(ranges)}"


def parse_last_event_id(value: str | None) -> Cursor:
    """``Last-Event-ID`` as a :class:`Cursor`; anything unreadable starts from the
    beginning, a step past any a run can have reads as ``end`` (a number beyond the
    column's range broke the stream once it had started)."""
    if not value:
        return Cursor()
    value = value.strip(" \t")  # a header's own white space only
    if value == "end":
        return Cursor(_END_STEP, 1)
    step, _, rest = value.partition(".")
    phase, _, listed = rest.partition(".")
    # ASCII digits only, as the server writes them: int() also reads "1_0", "+2" and
    # other scripts' digits, ids it never sent, and the client missed the steps between.
    if not _ASCII_NUMBER.fullmatch(step) or phase not in ("", "0", "1"):
        return Cursor()
    number = int(step) if len(step) <= 10 else _END_STEP  # (int() refuses 4,300 digits)
    if number >= _END_STEP:
        return Cursor(_END_STEP, 1)
    if number <= 0 or not phase:
        # A step without its phase ("2", "2.") is no id the server sent: it was read as
        # "2.0", and a resumed stream skipped step 1 and step 2's start.
        return Cursor()
    cursor = Cursor(number, 1 if phase == "1" else 0)
    if not listed:
        return cursor
    open_steps = _open_steps(listed, below=cursor.step)
    return Cursor() if open_steps is None else Cursor(cursor.step, cursor.phase, open_steps)


_DIGITS: Final = re.compile(r"[0-9]{1,10}")
_ASCII_NUMBER: Final = re.compile(r"[0-9]+")  # any length: one past any step reads as end


def _open_steps(listed: str, *, below: int) -> frozenset[int] | None:
    """``3-5,7`` as its steps; None when unreadable (or naming steps not below ``below``)."""
    found: set[int] = set()
    for part in listed.split(","):
        low, dash, high = part.partition("-")
        # ASCII digits only: "²".isdigit() is true and int("²") a ValueError (a 500).
        if not _DIGITS.fullmatch(low) or (dash and not _DIGITS.fullmatch(high)):
            return None
        first, last = int(low), int(high) if dash else int(low)
        if not 1 <= first <= last < below or len(found) + last - first >= _MAX_OPEN:
            return None
        found.update(range(first, last + 1))
    return frozenset(found)


def _frame(event_id: str, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def step_frames(steps: list[RunStep], after: Cursor) -> tuple[list[str], Cursor]:
    """The frames of ``steps`` (in number order, from ``after.first_unsent()``) not sent
    yet, and the new cursor.  A step's finish is sent when it closes, even after a higher
    step's frames (parallel branches)."""
    frames: list[str] = []
    cursor = after
    for step in steps:
        number, closed = step.step_number, step.status not in OPEN_STEP_STATUSES
        out = RunStepOut.model_validate(step).model_dump(mode="json")
        if number > cursor.step:
            below = cursor.open | ({cursor.step} if cursor.phase == 0 else set())
            cursor = Cursor(number, 0, frozenset(below))
            frames.append(_frame(cursor.event_id(), "step", {**out, "phase": "started"}))
        if closed and (number, 0) == (cursor.step, cursor.phase):
            cursor = Cursor(number, 1, cursor.open)
        elif closed and number in cursor.open:
            cursor = Cursor(cursor.step, cursor.phase, cursor.open - {number})
        else:
            continue
        frames.append(_frame(cursor.event_id(), "step", {**out, "phase": "finished"}))
    return frames, cursor


def end_frame(run: Any) -> str | None:
    if run.status not in TERMINAL_RUN_STATUSES:
        return None
    return _frame("end", "end", RunOut.model_validate(run).model_dump(mode="json"))


def gone_frame(detail: str) -> str:
    """The stream's last frame when the run can no longer be read (deleted, or no longer
    visible to the caller): an ``error`` event, then the stream ends."""
    return f"event: error\ndata: {json.dumps({'status': 404, 'detail': detail})}\n\n"


def signed_out_frame() -> str:
    """The stream's last frame when the credential it was opened with has ended
    (revoked, expired, its user suspended) or stands for other rights now (role or
    groups changed): an ``error`` event with 401, then the stream ends; reconnecting
    with a valid credential resumes it (``Last-Event-ID``)."""
    detail = "your credential has ended or changed since this stream opened; reconnect"
    return f"event: error\ndata: {json.dumps({'status': 401, 'detail': detail})}\n\n"


def keepalive() -> str:
    return ": keep-alive\n\n"


def sendable_deltas(pending: list[tuple[int, str]], cursor: Cursor,
                    ) -> tuple[list[str], list[tuple[int, str]]]:
    """The model's text received so far, as frames for the steps ``cursor`` has announced
    and not finished, and what to keep: the text of steps this stream has not announced
    yet (a step's start and its first text can arrive in one wake-up, before the stream
    reads the step; that text was dropped).  Text of finished steps goes: the finished
    step's frame holds all of it."""
    frames = [delta_frame(step, text) for step, text in pending if cursor.is_running(step)]
    return frames, [(step, text) for step, text in pending if step > cursor.step]


def delta_frame(step: int, text: str) -> str:
    """The model's text as it streams: no id (not resumable; the step has it all)."""
    return f"event: delta\ndata: {json.dumps({'step_number': step, 'text': text})}\n\n"
