"""roost.db.groupcommit.GroupCommit without a database: what a request sees of it."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from roost.db.groupcommit import GroupCommit


class Writer:
    """Writes that wait for ``release`` and record what was sent how."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.refuse_batches = False

    async def many(self, key: Hashable, items: list[int]) -> list[str]:
        await self.release.wait()
        self.batches.append(items)
        if self.refuse_batches:
            raise RuntimeError("the batch as a whole")
        return [f"{key}:{item}" for item in items]

    async def one(self, key: Hashable, item: int) -> str:
        await self.release.wait()
        self.alone.append(item)
        if item < 0:
            raise ValueError(f"bad item {item}")
        return f"{key}:{item}"


async def _queued(group: GroupCommit[int, str], count: int) -> None:
    for _ in range(1000):
        if group.waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{group.waiting} queued, not {count}")


async def test_an_idle_group_sends_at_once_and_the_ones_meanwhile_together() -> None:
    writer = Writer()
    group = GroupCommit(writer.many, writer.one, max_items=3)
    first = asyncio.create_task(group.submit("k", 1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert group.waiting == 0  # sent alone, not held for company
    rest = [asyncio.create_task(group.submit("k", i)) for i in range(2, 7)]
    other_key = asyncio.create_task(group.submit("j", 9))
    await _queued(group, 5)
    writer.release.set()
    assert await first == "k:1" and await other_key == "j:9"
    assert await asyncio.gather(*rest) == [f"k:{i}" for i in range(2, 7)]
    assert sorted(writer.alone) == [1, 9] and writer.batches == [[2, 3, 4], [5, 6]]
    assert (group.statements, group.items) == (4, 7)


async def test_a_refused_batch_is_written_again_item_by_item_each_with_its_own_answer() -> None:
    writer = Writer()
    writer.refuse_batches = True
    group = GroupCommit(writer.many, writer.one)
    first = asyncio.create_task(group.submit("k", 1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.submit("k", i)) for i in (2, -3, 4)]
    await _queued(group, 3)
    writer.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:2] == ["k:1", "k:2"] and results[3] == "k:4"
    assert isinstance(results[2], ValueError) and "bad item -3" in str(results[2])
    assert writer.batches == [[2, -3, 4]] and sorted(writer.alone) == [-3, 1, 2, 4]


async def test_a_request_cancelled_before_its_batch_is_sent_is_left_out() -> None:
    writer = Writer()
    group = GroupCommit(writer.many, writer.one)
    first = asyncio.create_task(group.submit("k", 1))
    await asyncio.sleep(0)
    gone = asyncio.create_task(group.submit("k", 2))
    kept = [asyncio.create_task(group.submit("k", i)) for i in (3, 4)]
    await _queued(group, 3)
    gone.cancel()
    writer.release.set()
    assert await first == "k:1" and await asyncio.gather(*kept) == ["k:3", "k:4"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert writer.batches == [[3, 4]]


async def test_a_new_event_loop_starts_afresh() -> None:
    writer = Writer()
    writer.release.set()
    group = GroupCommit(writer.many, writer.one)
    assert await group.submit("k", 1) == "k:1"

    def in_another_loop() -> str:
        other = Writer()
        group._write_one = other.one  # the old loop's Event cannot be awaited here
        other.release.set()
        return asyncio.run(group.submit("k", 2))

    assert await asyncio.to_thread(in_another_loop) == "k:2"
