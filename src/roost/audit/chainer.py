"""The chainer: links committed audit rows into the hash chain, off the request path.

``record`` inserts a row unlinked and takes no lock, so audited transactions no longer
serialise on the chain.  Every API process (the audit domain's start-up) and every queue
worker runs :func:`run_chainer`: every ``ROOST_AUDIT_CHAIN_INTERVAL_MS`` it calls
``roost_audit_link`` without waiting for the chain lock, so across any number of processes
one links and the others return at once.  A batch that filled its limit is followed by
the next straight away.  While any Roost process runs, a committed row stays unlinked for
about one interval (plus the time to link the rows before it); ``verify`` and retention
link whatever is pending first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

BATCH = 5_000
"""Rows linked per transaction: bounds how long one chainer holds the chain lock."""

LinkBatch = Callable[[int], Awaitable[int]]
"""Links up to N rows in its own transaction; the count, or -1 when another chainer runs."""


async def run_chainer(link: LinkBatch, interval_s: float, stop: asyncio.Event) -> None:
    """Link pending rows every ``interval_s`` until ``stop`` is set; errors (a database
    restart, a network blip) are logged and retried with backoff, never raised."""
    failures = 0
    delay = interval_s  # the first pass after one interval: start-up has enough to do
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return
        except TimeoutError:
            pass
        try:
            linked = await link(BATCH)
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the chainer must outlive a database blip
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("audit_chainer_failed", error=str(exc), failures=failures)
            linked = 0
        if linked >= BATCH:
            delay = 0  # more waiting: straight on
        elif failures:
            delay = interval_s * min(2 ** min(failures, 6), 64)
        else:
            delay = interval_s
