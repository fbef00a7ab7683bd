"""What each part of Roost's chunk table costs PostgreSQL at bulk-load time.

    .venv/bin/python bench/rag/schema_cost.py [--n 20000]

Server work only: the rows are encoded once, before any clock starts, and sent with
binary ``COPY`` as the table owner in batches of 5,000 (one transaction each) into
``document_chunks`` with no vector index.  Then the table's parts are dropped one at a
time (cumulatively) and the load repeated: what is left at the end is the work of the
four-column table that ``run.py``'s raw system loads.  Best of two loads per step.
Writes bench/results/rag_schema_cost.json.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as rag  # noqa: E402  (the benchmark's data and Roost set-up)

RESULTS = HERE.parent / "results" / "rag_schema_cost.json"
BATCH = 5000


def minimal_payload(data: dict[str, Any], lo: int, hi: int) -> bytes:
    """Binary COPY data for run.py's raw table (id, collection, content, embedding)."""
    dims = data["dims"]
    head = struct.pack("!ihh", 4 + 4 * dims, dims, 0)
    parts = [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)]
    for i in range(lo, hi):
        coll, text = f"c{data['coll'][i]}".encode(), rag.content(i).encode()
        parts += (struct.pack("!hiq", 4, 8, i), struct.pack("!i", len(coll)), coll,
                  struct.pack("!i", len(text)), text, head, data["x"][i].astype(">f4").tobytes())
    parts.append(struct.pack("!h", -1))
    return b"".join(parts)


async def measure(roost: rag.Roost, payloads: list[bytes], table: str, columns: list[str] | None,
                  ) -> float:
    from sqlalchemy import text

    best = float("inf")
    for _ in range(2):
        async with roost.db.transaction() as s:
            await s.execute(text(f"TRUNCATE {table}"))
        async with roost.db.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            t0 = time.perf_counter()
            for payload in payloads:
                async with driver.transaction():
                    await driver.copy_to_table(table, source=io.BytesIO(payload), columns=columns,
                                               format="binary")
            best = min(best, time.perf_counter() - t0)
    return best


async def ablate(roost: rag.Roost, data: dict[str, Any]) -> list[dict[str, Any]]:
    from sqlalchemy import text

    from roost.db.base import uuid7
    from roost.knowledge.bulk import COLUMNS, encode_rows

    n, x, coll = data["n"], data["x"], data["coll"]
    rows = [{"id": uuid7(), "document_id": roost.docs[i // 100], "user_id": roost.user_id,
             "collection": f"c{coll[i]}", "tags": [], "chunk_index": i % 100,
             "content": rag.content(i), "token_count": 12, "embedding": x[i],
             "embedding_model": roost.model, "embedding_dim": data["dims"],
             "metadata": {"page": 1}} for i in range(n)]
    payloads = [encode_rows(rows[lo:lo + BATCH]) for lo in range(0, n, BATCH)]
    columns = [name for name, _ in COLUMNS]

    async def ddl(*statements: str) -> None:
        async with roost.db.transaction() as s:
            for statement in statements:
                await s.execute(text(statement))

    async def names(kind: str) -> list[str]:
        async with roost.db.transaction() as s:
            return list((await s.execute(text(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'document_chunks'::regclass "
                "AND contype::text = :k"), {"k": kind})).scalars())

    steps: list[tuple[str, list[str]]] = [
        ("Roost's table as migrated", []),
        ("- foreign key to documents", [f"ALTER TABLE document_chunks DROP CONSTRAINT {c}"
                                        for c in await names("f")]),
        ("- GIN index on the tsvector", ["DROP INDEX ix_document_chunks_content_tsv"]),
        ("- generated tsvector column", ["ALTER TABLE document_chunks DROP COLUMN content_tsv"]),
        ("- owner/group/persona indexes", [f"DROP INDEX ix_document_chunks_{c}_id"
                                           for c in ("user", "group", "persona")]),
        ("- (document, chunk_index) uniques", ["DROP INDEX uq_document_chunks_document_index",
                                               "DROP INDEX uq_document_chunks_document_curated_index"]),
        ("- CHECK constraints", [f"ALTER TABLE document_chunks DROP CONSTRAINT {c}"
                                 for c in await names("c")]),
        ("- row-level security enabled", ["ALTER TABLE document_chunks DISABLE ROW LEVEL SECURITY"]),
    ]
    out = []
    for label, statements in steps:
        await ddl(*statements)
        seconds = await measure(roost, payloads, "document_chunks", columns)
        out.append({"step": label, "seconds": seconds, "rows_s": n / seconds})
        print(f"{label:<36} {seconds:6.2f} s  {n / seconds:9.0f} rows/s", flush=True)
    await ddl(f"CREATE TABLE chunks (id bigint PRIMARY KEY, collection text NOT NULL, "
              f"content text NOT NULL, embedding vector({data['dims']}) NOT NULL)")
    minimal = [minimal_payload(data, lo, min(n, lo + BATCH)) for lo in range(0, n, BATCH)]
    seconds = await measure(roost, minimal, "chunks", None)
    out.append({"step": "run.py's raw four-column table", "seconds": seconds, "rows_s": n / seconds})
    print(f"{out[-1]['step']:<36} {seconds:6.2f} s  {n / seconds:9.0f} rows/s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()

    from roost.db.embedded import start_embedded

    data = rag.make_data(args.n, 384, 1)
    with tempfile.TemporaryDirectory(prefix="roost-bench-rag-cost-") as tmp:
        server = start_embedded(Path(tmp) / "pg", delete_on_exit=True)
        try:
            admin = server.url("postgres").replace("postgresql+asyncpg://", "postgresql://", 1)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench_cost")
            roost = rag.Roost(server.url("bench_cost"), data)
            steps = roost.runner.run(ablate(roost, data))
            roost.close()
        finally:
            server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "rag_schema_cost", "n": args.n, "batch": BATCH,
                                   "steps": steps}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
