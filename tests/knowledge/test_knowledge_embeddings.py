from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

from roost.knowledge.embeddings import (
    DevHashingEmbedder,
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    EmbeddingTimeout,
    LocalSentenceTransformerEmbedder,
    OpenAICompatibleEmbedder,
)
from tests.knowledge.helpers import LoopbackServer


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


# --------------------------------------------------------------------------- local model


@pytest.mark.needs_local
async def test_local_embedder_ranks_paraphrase_above_unrelated(
    local_embedder: LocalSentenceTransformerEmbedder,
) -> None:
    question, paraphrase, unrelated = await local_embedder.embed(
        [
            "How do I reset my password?",
            "Steps to change a forgotten login credential",
            "The weather in Paris is sunny",
        ]
    )
    assert local_embedder.dimensions == 384
    assert local_embedder.model_name == "all-MiniLM-L6-v2"
    for vector in (question, paraphrase, unrelated):
        assert len(vector) == 384
        assert _norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert _cosine(question, paraphrase) > _cosine(question, unrelated) + 0.3


@pytest.mark.needs_local
async def test_local_model_loads_once_per_process(
    local_embedder: LocalSentenceTransformerEmbedder,
) -> None:
    other = LocalSentenceTransformerEmbedder(batch_size=2)
    first, second = await asyncio.gather(local_embedder.load(), other.load())
    assert first is second
    assert await other.load() is first


@pytest.mark.needs_local
async def test_local_batching_and_concurrency_do_not_change_vectors(
    local_embedder: LocalSentenceTransformerEmbedder,
) -> None:
    texts = [f"document number {i} about databases" for i in range(5)] + [""]
    whole = await local_embedder.embed(texts)
    small_batches = LocalSentenceTransformerEmbedder(batch_size=2)
    parts, again = await asyncio.gather(small_batches.embed(texts), local_embedder.embed(texts))
    for a, b, c in zip(whole, parts, again, strict=True):
        assert _cosine(a, b) == pytest.approx(1.0, abs=1e-5)
        assert _cosine(a, c) == pytest.approx(1.0, abs=1e-5)
    assert await local_embedder.embed([]) == []


@pytest.mark.needs_local
async def test_local_embedding_does_not_block_the_event_loop(
    local_embedder: LocalSentenceTransformerEmbedder,
) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await local_embedder.embed(["some text to embed"] * 64)
    ticks_during_embedding = ticks
    done.set()
    await task
    # The loop kept running other coroutines while the model worked in a thread.
    assert ticks_during_embedding > 0


@pytest.mark.needs_local
async def test_local_embedder_dimension_mismatch_is_reported(
    local_embedder: LocalSentenceTransformerEmbedder,
) -> None:
    wrong = LocalSentenceTransformerEmbedder(dimensions=768)
    with pytest.raises(EmbedderUnavailable, match="384-dimensional"):
        await wrong.embed(["x"])


async def test_local_embedder_missing_model_files(tmp_path: Path) -> None:
    embedder = LocalSentenceTransformerEmbedder(model_path=tmp_path / "nowhere")
    with pytest.raises(EmbedderUnavailable, match=r"roost\[local\]"):
        await embedder.embed(["x"])


async def test_missing_sentence_transformers_tells_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text("{}")
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    embedder = LocalSentenceTransformerEmbedder(model_path=tmp_path)
    with pytest.raises(EmbedderUnavailable) as info:
        await embedder.embed(["x"])
    assert "pip install 'roost[local]'" in info.value.detail
    assert info.value.status == 503


# --------------------------------------------------------------------------- remote model


def _remote(loopback: LoopbackServer, **kwargs: object) -> OpenAICompatibleEmbedder:
    options: dict[str, object] = {"batch_size": 3, "timeout": 5.0}
    options.update(kwargs)
    return OpenAICompatibleEmbedder(
        loopback.url("/v1"),
        "sk-test-secret",
        "stub-embed",
        8,
        **options,  # type: ignore[arg-type]
    )


async def test_openai_compatible_embedder_batches_and_orders(loopback: LoopbackServer) -> None:
    texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g"]
    async with _remote(loopback) as embedder:
        vectors = await embedder.embed(texts)
    assert [v[0] for v in vectors] == [float(len(t)) for t in texts]  # order preserved
    assert all(len(v) == 8 for v in vectors)
    requests = loopback.embeddings.requests
    assert [r["input"] for r in requests] == [texts[0:3], texts[3:6], texts[6:7]]
    assert all(r["model"] == "stub-embed" and "dimensions" not in r for r in requests)
    assert loopback.embeddings.auth_headers == ["Bearer sk-test-secret"] * 3


async def test_openai_compatible_embedder_validates_dimensions(loopback: LoopbackServer) -> None:
    loopback.embeddings.wrong_dimensions = True
    async with _remote(loopback) as embedder:
        with pytest.raises(EmbeddingError, match="9-dimensional vectors but 8"):
            await embedder.embed(["x"])


async def test_openai_compatible_embedder_retries_then_fails(loopback: LoopbackServer) -> None:
    loopback.embeddings.fail_status, loopback.embeddings.fail_times = 503, 1
    async with _remote(loopback, max_retries=2) as embedder:
        assert len(await embedder.embed(["x"])) == 1
    assert len(loopback.embeddings.requests) == 2

    loopback.reset()
    loopback.embeddings.fail_status, loopback.embeddings.fail_times = 500, 10
    async with _remote(loopback, max_retries=1) as embedder:
        with pytest.raises(EmbeddingError, match="HTTP 500") as info:
            await embedder.embed(["x"])
    assert "sk-test-secret" not in info.value.detail
    assert info.value.status == 502


async def test_openai_compatible_embedder_timeout(loopback: LoopbackServer) -> None:
    loopback.embeddings.sleep_s = 1.0
    async with _remote(loopback, timeout=0.2) as embedder:
        with pytest.raises(EmbeddingTimeout) as info:
            await embedder.embed(["x"])
    assert info.value.status == 504


async def test_openai_compatible_embedder_unreachable() -> None:
    embedder = OpenAICompatibleEmbedder("http://127.0.0.1:9/v1", None, "m", 8, max_retries=0)
    with pytest.raises(EmbeddingError, match="could not reach"):
        await embedder.embed(["x"])
    await embedder.aclose()


def test_openai_compatible_embedder_repr_hides_key() -> None:
    embedder = OpenAICompatibleEmbedder("http://127.0.0.1:1/v1", "sk-very-secret", "m", 8)
    assert "sk-very-secret" not in repr(embedder)


# --------------------------------------------------------------------------- dev stand-in


async def test_dev_hashing_embedder_is_deterministic_and_normalised() -> None:
    embedder = DevHashingEmbedder(64)
    a, b, c, empty = await embedder.embed(
        ["postgres vector index", "postgres vector search", "sunny weather in paris", ""]
    )
    assert a == (await DevHashingEmbedder(64).embed(["postgres vector index"]))[0]
    assert all(_norm(v) == pytest.approx(1.0) for v in (a, b, c, empty))
    assert _cosine(a, b) > _cosine(a, c)
    assert embedder.model_name == "dev-hashing-64"


def test_all_embedders_satisfy_the_protocol() -> None:
    # Checked by mypy (static) and isinstance (runtime).
    embedders: list[Embedder] = [
        DevHashingEmbedder(),
        LocalSentenceTransformerEmbedder(),
        OpenAICompatibleEmbedder("http://127.0.0.1:1", None, "m", 8),
    ]
    assert [e.dimensions for e in embedders] == [384, 384, 8]
    assert isinstance(DevHashingEmbedder(), Embedder)
    assert isinstance(LocalSentenceTransformerEmbedder(), Embedder)
    assert isinstance(OpenAICompatibleEmbedder("http://127.0.0.1:1", None, "m", 8), Embedder)


def test_batch_size_is_validated() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        LocalSentenceTransformerEmbedder(batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        OpenAICompatibleEmbedder("http://127.0.0.1:1", None, "m", 8, batch_size=0)
