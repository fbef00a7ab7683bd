"""A pgqueuer or procrastinate worker process with a no-op job, stopped by SIGTERM.

usage: peer_worker.py pgqueuer|procrastinate DSN CONCURRENCY
Prints "ready" on stdout once it is listening for jobs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import latency


async def run_pgqueuer(dsn: str, concurrency: int) -> None:
    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        latency.observe(json.loads(job.payload) if job.payload else None)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)
    loop.call_later(0.5, lambda: print("ready", flush=True))
    # pgqueuer's own defaults (dequeue batch of 10, no cap on in-flight jobs), with
    # the batch matched to the concurrency every system gets.
    await qm.run(batch_size=concurrency)
    await conn.close()


async def run_procrastinate(dsn: str, concurrency: int) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(**payload: Any) -> None:
        latency.observe(payload)

    async with app.open_async():
        worker = asyncio.create_task(app.run_worker_async(
            concurrency=concurrency, install_signal_handlers=False, delete_jobs="never"))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await asyncio.sleep(0.5)
        print("ready", flush=True)
        await stop.wait()
        worker.cancel()  # procrastinate's documented way to stop an async worker
        try:
            await asyncio.wait_for(worker, 30)
        except (asyncio.CancelledError, TimeoutError):
            pass


def main() -> None:
    system, dsn, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    runner = {"pgqueuer": run_pgqueuer, "procrastinate": run_procrastinate}[system]
    asyncio.run(runner(dsn, concurrency))


if __name__ == "__main__":
    main()
