"""The process's provider instances, built from ``llm_providers`` rows and reused.

A provider instance holds an HTTP connection pool (or, for the local model, a loaded
llama.cpp context that takes seconds to load), so it is built once per row version and
kept: the pool rebuilds an instance when its row's ``updated_at`` changes and closes
instances whose rows are gone or disabled (in every process: routing hands the pool the
enabled rows it read, :meth:`ProviderPool.retain`), each once the calls using it have
ended (``roost.llm.leases``).  The API key is decrypted here, at build time, and lives
only inside the provider object.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from roost.llm import leases
from roost.llm.base import LLMProvider
from roost.llm.errors import ProviderError
from roost.llm.models import LLMProviderRow
from roost.llm.orchestration import ProviderRef
from roost.llm.provider_types import create_provider
from roost.security.crypto import DecryptionError, SecretBox

log = structlog.get_logger(__name__)


def api_key_aad(provider_id: uuid.UUID) -> bytes:
    """Associated data binding a provider's encrypted API key to its row."""
    return f"llm_providers:{provider_id}:api_key".encode()


def provider_ref(row: LLMProviderRow) -> ProviderRef:
    return ProviderRef(name=row.name, id=row.id, type=row.type, weight=float(row.weight))


@dataclass
class _Entry:
    version: datetime
    provider: LLMProvider
    built: int  # the pool's build count when it was built (see ProviderPool.retain)


class ProviderBuildError(Exception):
    """The row cannot become a working provider (missing extra, undecryptable key ...)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"provider {name!r}: {reason}")
        self.name = name
        self.reason = reason


class ProviderPool:
    def __init__(self, secret_box: SecretBox, *, local_threads: int | None = None,
                 max_answer_bytes: int | None = None) -> None:
        self._box = secret_box
        self._local_threads = local_threads
        self._max_answer_bytes = max_answer_bytes
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._built = 0
        self._lock = asyncio.Lock()

    def _build(self, row: LLMProviderRow) -> LLMProvider:
        api_key: str | None = None
        if row.api_key_encrypted:
            try:
                api_key = self._box.decrypt_str(row.api_key_encrypted, api_key_aad(row.id))
            except DecryptionError as exc:
                raise ProviderBuildError(
                    row.name, "its API key cannot be decrypted with ROOST_SECRETS_KEY; set the key again"
                ) from exc
        config: dict[str, Any] = dict(row.config or {})
        if row.type == "local" and self._local_threads and "n_threads" not in config:
            config["n_threads"] = self._local_threads
        try:
            return create_provider(
                row.type, name=row.name, base_url=row.base_url, api_key=api_key, model=row.model,
                config=config, max_answer_bytes=self._max_answer_bytes,
            )
        except ProviderError as exc:
            raise ProviderBuildError(row.name, exc.detail) from exc
        except (TypeError, ValueError) as exc:
            raise ProviderBuildError(row.name, f"invalid configuration ({exc})") from exc

    async def get(self, row: LLMProviderRow) -> LLMProvider:
        """The instance for this row version (built on first use, rebuilt after an edit)."""
        entry = self._entries.get(row.id)
        if entry is not None and entry.version == row.updated_at:
            return entry.provider
        async with self._lock:
            entry = self._entries.get(row.id)
            if entry is not None and entry.version == row.updated_at:
                return entry.provider
            provider = self._build(row)
            old = self._entries.get(row.id)
            self._built += 1
            self._entries[row.id] = _Entry(row.updated_at, provider, self._built)
        if old is not None:  # closed once the calls still using it end
            await leases.retire(old.provider)
        return provider

    async def members(
        self, rows: list[LLMProviderRow]
    ) -> tuple[list[tuple[ProviderRef, LLMProvider]], list[ProviderBuildError]]:
        """Instances for ``rows`` in order; rows that cannot be built are reported apart."""
        out: list[tuple[ProviderRef, LLMProvider]] = []
        failed: list[ProviderBuildError] = []
        for row in rows:
            try:
                out.append((provider_ref(row), await self.get(row)))
            except ProviderBuildError as exc:
                log.warning("llm.provider.unusable", provider=row.name, reason=exc.reason)
                failed.append(exc)
        return out, failed

    def mark(self) -> int:
        """Taken before reading the rows handed to :meth:`retain`."""
        return self._built

    async def retain(self, rows: list[LLMProviderRow], mark: int) -> None:
        """Retire the instances of providers not among ``rows`` (every enabled provider,
        read after :meth:`mark` gave ``mark``): a provider deleted or disabled through
        another process, whose ``forget`` ran there only.  An instance built since the
        mark is kept: a concurrent call read a newer row for it (a provider just added)
        than these rows.  An instance still in use is closed when its last call ends, an
        idle one after the grace period (``roost.llm.leases``)."""
        wanted = {row.id for row in rows}
        if wanted.issuperset(self._entries):
            return  # the usual case: nothing to lock
        async with self._lock:
            gone = [self._entries.pop(i) for i, entry in list(self._entries.items())
                    if i not in wanted and entry.built <= mark]
        for entry in gone:
            await leases.retire(entry.provider)

    async def forget(self, provider_id: uuid.UUID) -> None:
        async with self._lock:
            entry = self._entries.pop(provider_id, None)
        if entry is not None:  # closed once the calls still using it end
            await leases.retire(entry.provider)

    async def aclose(self) -> None:
        async with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await leases.close(entry.provider)
