"""CPU-bound work on user data waits on threads of its own (roost.process.cpu_bound)."""

from __future__ import annotations

import asyncio
import threading

from roost.process import CPU_THREADS, cpu_bound


async def test_cpu_work_waits_on_its_own_threads_and_leaves_the_default_executor_free() -> None:
    """Forty slow jobs (documents to parse, calendars to expand) queue on the CPU threads;
    the event loop's default executor, which logins and file reads need, stays free, and
    the jobs all finish once they may."""
    release = threading.Event()
    running = threading.Semaphore(0)

    def slow(n: int) -> int:
        running.release()
        release.wait(30)
        return n

    waiting = [asyncio.create_task(cpu_bound(slow, n)) for n in range(40)]
    try:
        for _ in range(CPU_THREADS):
            assert await asyncio.to_thread(running.acquire, True, 30)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), timeout=30) == 42
        assert not any(task.done() for task in waiting)
    finally:
        release.set()
    assert await asyncio.gather(*waiting) == list(range(40))


async def test_a_call_whose_caller_left_before_its_turn_is_not_run() -> None:
    release = threading.Event()
    ran: list[int] = []

    def record(n: int) -> None:
        release.wait(30)
        ran.append(n)

    busy = [asyncio.create_task(cpu_bound(record, n)) for n in range(CPU_THREADS)]
    late = asyncio.create_task(cpu_bound(record, 99))
    await asyncio.sleep(0.1)
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)  # the cancellation reaches the pool
    release.set()
    await asyncio.gather(*busy)
    await asyncio.sleep(0.2)
    assert 99 not in ran and sorted(ran) == list(range(CPU_THREADS))
