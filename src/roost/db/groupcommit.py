"""Group commit: concurrent writes of one kind coalesced into one statement.

Under load most of a small write's cost is not the write: it is the round trip, the
statement's start and the commit (a WAL flush), each paid once per request.
:class:`GroupCommit` lets the requests of one process that write the same kind of row
for the same caller at the same time share them: the first request's write is sent at
once (an idle server adds no wait), and the ones that arrive while it is in flight are
sent together as the next statement, in one implicit transaction.

Each request still gets its own answer.  A batch the database refuses as a whole (an
error, not a per-row "not found" the statement answers) is written again one item at a
time, so one bad item fails only its own request.  A request cancelled before its batch
was sent is left out; once sent, its write commits or not with the batch (as a request
cancelled mid-statement did before).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _Queue(Generic[ItemT, ResultT]):
    pending: deque[tuple[ItemT, asyncio.Future[ResultT]]] = field(default_factory=deque)
    writing: int = 0


class GroupCommit(Generic[ItemT, ResultT]):
    """Coalesces :meth:`submit` calls with equal keys into :func:`write_many` calls.

    ``write_many(key, items)`` answers one result per item, in order, in one statement;
    ``write_one(key, item)`` is the single item's statement (a batch of one, and the way
    back when a batch fails).  At most ``in_flight`` batches of one key are written at
    once, each of at most ``max_items``."""

    def __init__(
        self,
        write_many: Callable[[Hashable, list[ItemT]], Awaitable[list[ResultT]]],
        write_one: Callable[[Hashable, ItemT], Awaitable[ResultT]],
        *, max_items: int = 32, in_flight: int = 1,
    ) -> None:
        self._write_many = write_many
        self._write_one = write_one
        self._max_items = max_items
        self._in_flight = in_flight
        self._queues: dict[Hashable, _Queue[ItemT, ResultT]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.statements = 0
        """Statements sent so far (batches and single items): for tests and metrics."""
        self.items = 0
        """Items written so far."""

    @property
    def waiting(self) -> int:
        """Items submitted and not yet sent."""
        return sum(len(queue.pending) for queue in self._queues.values())

    async def submit(self, key: Hashable, item: ItemT) -> ResultT:
        """``item`` written (alone or with others of ``key``); its own result or error."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test's): nothing of the old carries
            self._loop, self._queues, self._tasks = loop, {}, set()
        queue = self._queues.setdefault(key, _Queue())
        future: asyncio.Future[ResultT] = loop.create_future()
        queue.pending.append((item, future))
        if queue.writing < self._in_flight:
            queue.writing += 1
            task = loop.create_task(self._drain(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, key: Hashable, queue: _Queue[ItemT, ResultT]) -> None:
        """Write the key's pending items, batch after batch, until none is left."""
        try:
            while queue.pending:
                batch: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
                while queue.pending and len(batch) < self._max_items:
                    item, future = queue.pending.popleft()
                    if not future.done():  # its request was cancelled: not written
                        batch.append((item, future))
                if batch:
                    await self._write(key, batch)
        except BaseException:
            # Cancelled (the loop shutting down): nobody will write the rest.
            for _, future in queue.pending:
                future.cancel()
            queue.pending.clear()
            raise
        finally:
            queue.writing -= 1
            if not queue.writing and not queue.pending and self._queues.get(key) is queue:
                del self._queues[key]

    async def _write(self, key: Hashable,
                     batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        self.statements += 1
        self.items += len(batch)
        if len(batch) == 1:
            await self._settle(batch[0][1], self._write_one(key, batch[0][0]))
            return
        try:
            results = await self._write_many(key, [item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception:  # each item again alone: its own error, if any
            self.statements += len(batch)
            await asyncio.gather(*(self._settle(future, self._write_one(key, item))
                                   for item, future in batch))
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    @staticmethod
    async def _settle(future: asyncio.Future[ResultT], write: Awaitable[ResultT]) -> None:
        try:
            result = await write
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:  # the request's own error
            if not future.done():
                future.set_exception(error)
            return
        if not future.done():
            future.set_result(result)
