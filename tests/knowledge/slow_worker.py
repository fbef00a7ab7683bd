"""Imported by ``roost worker --import tests.knowledge.slow_worker`` in the resume test:
the configured embedder sleeps before each call, so a test can kill the worker mid-run."""

from __future__ import annotations

import os
import time

from roost.config import get_settings
from roost.knowledge.config import KnowledgeConfig, get_embedder, set_embedder
from roost.knowledge.embeddings import Embedder

DELAY_S = float(os.environ.get("ROOST_TEST_EMBED_DELAY_S", "0.3"))


class SlowEmbedder:
    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dimensions = inner.dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        time.sleep(DELAY_S)  # noqa: ASYNC251 - blocks on purpose: the whole worker is slow
        return await self.inner.embed(texts)


_spec = KnowledgeConfig.from_settings(get_settings()).embedder
set_embedder(_spec, SlowEmbedder(get_embedder(_spec)))
