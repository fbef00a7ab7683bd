"""Fixtures for the knowledge tests: the pure pipeline's and the database-backed ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.knowledge.embeddings import LocalSentenceTransformerEmbedder
from tests.knowledge.helpers import LoopbackServer


@pytest.fixture(scope="session")
def _loopback_session() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def loopback(_loopback_session: LoopbackServer) -> LoopbackServer:
    """The session's loopback HTTP server, with behaviour and counters reset."""
    _loopback_session.reset()
    return _loopback_session


@pytest.fixture(scope="session")
def local_embedder() -> LocalSentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2 embedder, for tests marked ``needs_local`` (the hook in
    tests/conftest.py skips them without the ``roost[local]`` extra and refuses unmarked ones).

    The model itself is cached per process by the embeddings module, so every test
    that embeds locally shares one loaded model.
    """
    return LocalSentenceTransformerEmbedder()


# --------------------------------------------------------------------------- database-backed tests


@pytest.fixture
def ingest_root(tmp_path: Path) -> Path:
    root = tmp_path / "ingest"
    root.mkdir()
    return root


@pytest.fixture
def kcfg(ingest_root: Path) -> KnowledgeConfig:
    """Hash embeddings (fast, deterministic, not semantic), small chunks, one ingest root."""
    return KnowledgeConfig(
        ingest_roots=(ingest_root,), chunk_tokens=64, overlap_tokens=8,
        embedder=EmbedderSpec("hash", "dev-hashing-384", 384),
    )


@pytest.fixture
def ksettings(tmp_path: Path, ingest_root: Path) -> Settings:
    """App settings matching ``kcfg``: hash embeddings, the ingest root, a 64 KB upload cap."""
    return Settings(
        data_dir=tmp_path / "data", log_json=True, max_request_bytes=256 * 1024,
        knowledge_max_upload_bytes=64 * 1024, knowledge_ingest_roots=str(ingest_root),
        knowledge_embedding_provider="hash", knowledge_chunk_tokens=64,
        knowledge_chunk_overlap_tokens=8,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def kclient(
    ksettings: Settings, database: Database, test_keys: KeyMaterial
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ksettings, database=database, keys=test_keys, configure_logs=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as c:
        yield c
