"""Imported by ``roost worker --import tests.knowledge.no_local_extra``: the worker runs
as if the ``roost[local]`` extra were not installed (importing sentence-transformers
raises ImportError), whatever this machine has."""

from __future__ import annotations

import sys

from roost.knowledge import embeddings

sys.modules["sentence_transformers"] = None  # type: ignore[assignment]
embeddings._MODEL_CACHE.clear()
