"""Per-chunk metrics of a streamed answer (``streaming_analytics``).

A :class:`StreamMeter` is created when a streamed model call starts, told about each
chunk of text (:meth:`StreamMeter.on_chunk`) and the end (:meth:`StreamMeter.finish`);
:meth:`StreamMeter.rows` then gives the rows to add in the call's final transaction:

* one ``first_token`` row: chunk 1, latency = time to the first token, its token delta;
* ``chunk`` rows for chunks 2 to 20, then for every ``sample_every``-th chunk (40, 50...
  with 10), each with its own latency since the start and its own token delta;
* one ``done`` row: chunk_number = the number of chunks, latency = the whole stream,
  tokens_delta = all output tokens (the provider's count when it gave one, else the sum
  of the deltas).

Latencies are measured with :func:`time.perf_counter` from the meter's creation; the rows'
timestamps are the wall clock at creation plus that latency.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import ARRAY, Insert, Table, bindparam, func, insert, select

from roost.analytics.models import StreamingMetric
from roost.db.base import utcnow, uuid7

FULL_CHUNKS = 20  # every chunk up to this one is recorded


class StreamMeter:
    def __init__(self, sample_every: int = 10) -> None:
        if sample_every < 1:
            raise ValueError("sample_every must be at least 1")
        self.sample_every = sample_every
        self._started = time.perf_counter()
        self._started_at: datetime = utcnow()
        self._chunks = 0
        self._tokens_seen = 0
        self._samples: list[tuple[int, float, int]] = []  # (chunk number, ms, tokens delta)
        self._total_ms: float | None = None
        self._total_tokens: int | None = None

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000.0

    @property
    def chunks(self) -> int:
        return self._chunks

    @property
    def ttft_ms(self) -> float | None:
        """Time to the first chunk, or None before it."""
        return self._samples[0][1] if self._samples else None

    def on_chunk(self, tokens_delta: int) -> None:
        """One chunk of text arrived carrying ``tokens_delta`` tokens (0 if unknown)."""
        if self._total_ms is not None:
            return  # chunks after finish() are not part of the stream measured
        self._chunks += 1
        delta = max(0, int(tokens_delta))
        self._tokens_seen += delta
        n = self._chunks
        if n <= FULL_CHUNKS or n % self.sample_every == 0:
            self._samples.append((n, self._elapsed_ms(), delta))

    def finish(self, total_output_tokens: int | None = None) -> None:
        """The stream ended (the first call counts; later ones change nothing)."""
        if self._total_ms is not None:
            return
        self._total_ms = self._elapsed_ms()
        self._total_tokens = (max(0, int(total_output_tokens)) if total_output_tokens is not None
                              else self._tokens_seen)

    def rows(self, stream_id: str, user_id: uuid.UUID | None, model: str | None,
             provider: str | None) -> list[StreamingMetric]:
        """The rows to add (finishing the stream now if :meth:`finish` was not called)."""
        return [StreamingMetric(**values)
                for values in self.row_values(stream_id, user_id, model, provider)]

    def row_values(self, stream_id: str, user_id: uuid.UUID | None, model: str | None,
                   provider: str | None) -> list[dict[str, Any]]:
        """:meth:`rows` as column values (for roost.db.statements.insert_rows)."""
        self.finish()
        assert self._total_ms is not None and self._total_tokens is not None

        def row(kind: str, chunk: int, ms: float, tokens: int) -> dict[str, Any]:
            return {"id": uuid7(), "stream_id": stream_id, "event_type": kind,
                    "chunk_number": chunk, "latency_ms": round(ms), "tokens_delta": tokens,
                    "user_id": user_id, "model": model, "provider": provider,
                    "timestamp": self._started_at + timedelta(milliseconds=ms)}

        out = [row("first_token" if n == 1 else "chunk", n, ms, delta)
               for n, ms, delta in self._samples]
        out.append(row("done", self._chunks, self._total_ms, self._total_tokens))
        return out


# A stream's rows differ in these columns and share the others (row_values).
_PER_ROW: Final = ("id", "event_type", "chunk_number", "latency_ms", "tokens_delta", "timestamp")
_SHARED: Final = ("stream_id", "user_id", "model", "provider")


@functools.cache
def rows_insert() -> Insert:
    """``INSERT INTO streaming_analytics ... SELECT ... FROM unnest(...)``: a stream's rows
    (:meth:`StreamMeter.row_values`) as one statement with a fixed number of parameters
    (:func:`rows_params`), so it can be a CTE of the call's own record statement
    (``roost.llm.records.record_success``) instead of a round trip of its own."""
    table = cast(Table, StreamingMetric.__table__)
    rows = func.unnest(*(bindparam(f"m_{name}", type_=ARRAY(table.c[name].type))
                         for name in _PER_ROW)).table_valued(*_PER_ROW).render_derived("metric")
    shared = (bindparam(f"m_{name}", type_=table.c[name].type) for name in _SHARED)
    return insert(table).from_select(
        [*_PER_ROW, *_SHARED], select(*(rows.c[name] for name in _PER_ROW), *shared))


def rows_params(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of :func:`rows_insert` for ``rows`` (one stream's, at least one)."""
    params = {f"m_{name}": [row[name] for row in rows] for name in _PER_ROW}
    params.update({f"m_{name}": rows[0][name] for name in _SHARED})
    return params
