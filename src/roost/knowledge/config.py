"""What the knowledge services need from settings, and the process's embedders.

Embedders are built once per process and model (the local model loads its weights
once, on first use, in a worker thread), so every request, job and CLI command in a
process shares them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from roost.config import Settings
from roost.errors import Conflict, Unprocessable
from roost.knowledge.embeddings import (
    LOCAL_MODEL_DIMENSIONS,
    LOCAL_MODEL_NAME,
    DevHashingEmbedder,
    Embedder,
    EmbedderUnavailable,
    LocalSentenceTransformerEmbedder,
    OpenAICompatibleEmbedder,
    local_model_problem,
)
from roost.knowledge.parsing import PARSE_TIME_LIMIT_S


@dataclass(frozen=True)
class EmbedderSpec:
    """One configured embedding model: how to build it and what it produces."""

    provider: str  # "local" | "openai" | "hash"
    model: str
    dimensions: int
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    batch_size: int = 32


@dataclass(frozen=True)
class KnowledgeConfig:
    ingest_roots: tuple[Path, ...] = ()
    allow_private_fetch: bool = False
    fetch_timeout_s: float = 30.0
    fetch_max_bytes: int = 20 * 1024 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024
    parse_time_limit_s: float = PARSE_TIME_LIMIT_S
    chunk_tokens: int = 256
    overlap_tokens: int = 32
    ef_search: int = 64
    embedder: EmbedderSpec = field(
        default_factory=lambda: EmbedderSpec("local", LOCAL_MODEL_NAME, LOCAL_MODEL_DIMENSIONS)
    )
    curation_enabled: bool = False
    curation_model: str | None = None  # None: the LLM providers' default model
    curation_group_size: int = 4
    app_role: str = "roost_app"
    # Behind PgBouncer in transaction mode: an embedding model's index is registered in
    # one transaction (a session-level lock would land on any server connection).
    pgbouncer: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> KnowledgeConfig:
        roots = tuple(
            Path(part.strip()) for part in settings.knowledge_ingest_roots.split(",") if part.strip()
        )
        provider = settings.knowledge_embedding_provider
        dims = settings.knowledge_embedding_dimensions
        if provider == "local":
            spec = EmbedderSpec(
                "local", settings.knowledge_embedding_model or LOCAL_MODEL_NAME,
                dims or LOCAL_MODEL_DIMENSIONS, batch_size=settings.knowledge_embedding_batch_size,
            )
        elif provider == "hash":
            dims = dims or LOCAL_MODEL_DIMENSIONS
            spec = EmbedderSpec("hash", settings.knowledge_embedding_model or f"dev-hashing-{dims}",
                                dims)
        else:
            if not (settings.knowledge_embedding_model and dims and
                    settings.knowledge_embedding_base_url):
                raise EmbedderUnavailable(
                    "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER=openai needs ROOST_KNOWLEDGE_EMBEDDING_MODEL, "
                    "ROOST_KNOWLEDGE_EMBEDDING_DIMENSIONS and ROOST_KNOWLEDGE_EMBEDDING_BASE_URL"
                )
            key = settings.knowledge_embedding_api_key
            spec = EmbedderSpec(
                "openai", settings.knowledge_embedding_model, dims,
                base_url=settings.knowledge_embedding_base_url,
                api_key=key.get_secret_value() if key else None,
                batch_size=settings.knowledge_embedding_batch_size,
            )
        return cls(
            ingest_roots=roots,
            allow_private_fetch=settings.knowledge_allow_private_fetch,
            fetch_timeout_s=settings.knowledge_fetch_timeout_s,
            fetch_max_bytes=settings.knowledge_fetch_max_bytes,
            max_upload_bytes=settings.knowledge_max_upload_bytes,
            parse_time_limit_s=settings.knowledge_parse_time_limit_s,
            chunk_tokens=settings.knowledge_chunk_tokens,
            overlap_tokens=min(settings.knowledge_chunk_overlap_tokens,
                               settings.knowledge_chunk_tokens // 2),
            ef_search=settings.knowledge_ef_search,
            embedder=spec,
            curation_enabled=settings.knowledge_curation,
            curation_model=settings.knowledge_curation_model,
            pgbouncer=settings.pgbouncer,
            curation_group_size=settings.knowledge_curation_group_size,
            app_role=settings.db_app_role,
        )

    def spec_for(self, model: str | None) -> EmbedderSpec:
        """The configured embedder for ``model`` (None: the default)."""
        if model is None or model == self.embedder.model:
            return self.embedder
        raise Unprocessable(
            f"embedding model {model!r} is not configured on this server; "
            f"the configured model is {self.embedder.model!r}"
        )


_embedders: dict[EmbedderSpec, Embedder] = {}
_lock = threading.Lock()


def get_embedder(spec: EmbedderSpec) -> Embedder:
    """The process's embedder for ``spec`` (built on first use)."""
    with _lock:
        existing = _embedders.get(spec)
        if existing is not None:
            return existing
        embedder: Embedder
        if spec.provider == "local":
            embedder = LocalSentenceTransformerEmbedder(
                model_name=spec.model, dimensions=spec.dimensions, batch_size=spec.batch_size
            )
        elif spec.provider == "hash":
            embedder = DevHashingEmbedder(spec.dimensions)
            embedder.model_name = spec.model
        else:
            assert spec.base_url is not None
            embedder = OpenAICompatibleEmbedder(
                spec.base_url, spec.api_key, spec.model, spec.dimensions, batch_size=spec.batch_size
            )
        _embedders[spec] = embedder
        return embedder


class EmbedderNotReady(Conflict):
    """The configured embedder cannot work in this process: nothing is accepted that
    would only fail later in a worker."""

    title, type_slug = "Embedder unavailable", "embedder-unavailable"


def check_embedder(spec: EmbedderSpec) -> None:
    """Raise :class:`EmbedderNotReady` (409) when ``spec``'s embedder cannot run here.

    Only the local model can be checked without calling anything (a package and files);
    a remote embedder's problems show when the job calls it, and are retried then.
    """
    with _lock:
        existing = _embedders.get(spec)
    if spec.provider != "local" or (
        existing is not None and not isinstance(existing, LocalSentenceTransformerEmbedder)
    ):
        return
    problem = local_model_problem()
    if problem is not None:
        raise EmbedderNotReady(
            f"{problem}; or set ROOST_KNOWLEDGE_EMBEDDING_PROVIDER=openai with an embeddings "
            "server. Documents cannot be ingested until then"
        )


def set_embedder(spec: EmbedderSpec, embedder: Embedder) -> None:
    """Use ``embedder`` for ``spec`` in this process (tests and benchmarks)."""
    with _lock:
        _embedders[spec] = embedder
