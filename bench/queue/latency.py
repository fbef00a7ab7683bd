"""Shared by every bench worker: record enqueue-to-start latency, dump it at exit.

A job's payload carries ``i`` (its number) and ``t``, the producer's ``time.time()`` just
before it called the queue's enqueue function; the handler records ``(i, t, start)``
with ``start = time.time()`` when it begins.  Same machine, same clock.
``BENCH_LATENCY_OUT`` names the JSON file written at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

samples: list[tuple[int, float, float]] = []


def observe(payload: Any) -> None:
    if isinstance(payload, dict) and "t" in payload:
        samples.append((int(payload["i"]), float(payload["t"]), time.time()))


def _dump() -> None:
    out = os.environ.get("BENCH_LATENCY_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(samples, handle)


atexit.register(_dump)
