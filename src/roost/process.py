"""What a long-running Roost process (``roost serve``, its ``--workers`` children,
``roost worker``) does to itself once it has started, and the threads it keeps for
CPU-bound work on user data (:func:`cpu_bound`)."""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Final, TypeVar


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, schemas, routes, the app) out of the garbage
    collector's sight: full collections while serving no longer walk it, nor does the
    collection at interpreter exit (measured here: a ``--workers`` child spent 1.5-2.5 s
    and ``roost worker`` up to 4 s in that last collection after SIGTERM)."""
    gc.collect()
    gc.freeze()


# --- CPU-bound work on user data ------------------------------------------------------

#: Threads for CPU-bound work whose size users decide (documents to parse, recurring
#: events to expand, iCalendar files, workflow graphs).  Pure Python holds the GIL, so
#: more threads would not finish sooner; what matters is that this work waits in its own
#: queue, not in the event loop's default executor, which every other ``to_thread`` of the
#: process needs (password hashing, file reads): a few slow requests once held all six
#: of its threads and logins waited minutes behind them.
CPU_THREADS: Final = 2
_cpu_pool = ThreadPoolExecutor(max_workers=CPU_THREADS, thread_name_prefix="roost-cpu")
T = TypeVar("T")


async def cpu_bound(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on the CPU threads (a call whose caller went away
    before its turn is dropped)."""
    return await on_executor(_cpu_pool, call, *args, **kwargs)


async def on_executor(executor: Executor, call: Callable[..., T], *args: Any,
                      **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on ``executor``'s threads, awaited: cancelling the await
    before a thread takes the call drops it (``asyncio.to_thread`` is this on the default
    executor, which the whole process shares)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(call, *args, **kwargs))
