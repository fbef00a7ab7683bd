"""The LLM gateway of one application: what every model call needs besides a database
session.  The database (calls run their own short transactions around the provider's
work), settings, the message cipher (prompts and answers are stored encrypted), the
secrets box (provider API keys) and the pool of provider instances.

Built once per process (``roost.llm.deps.app_gateway`` for the web app,
``roost.llm.jobs.job_gateway`` for workers) and passed to ``roost.llm.calls``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from roost.config import Settings, parse_fallback_kinds
from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.keyfiles import KeyMaterial
from roost.llm.provider_pool import ProviderPool
from roost.principal import Principal
from roost.security.crypto import MessageCipher, SecretBox


@dataclass
class LLMGateway:
    """Everything a recorded model call needs; see ``roost.llm.calls``."""

    db: Database
    settings: Settings
    cipher: MessageCipher
    secret_box: SecretBox
    pool: ProviderPool
    fallback_kinds: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def build(cls, db: Database, settings: Settings, keys: KeyMaterial) -> LLMGateway:
        return cls(
            db=db,
            settings=settings,
            cipher=MessageCipher(list(keys.message_keys)),
            secret_box=SecretBox.from_keys(keys.secrets_key),
            pool=ProviderPool(
                SecretBox.from_keys(keys.secrets_key), local_threads=settings.llm_local_threads,
                max_answer_bytes=settings.llm_max_answer_bytes,
            ),
            fallback_kinds=parse_fallback_kinds(settings.llm_fallback_on),
        )

    @asynccontextmanager
    async def transaction(self, principal: Principal | None) -> AsyncIterator[AsyncSession]:
        """One transaction, acting for ``principal`` (row-level security) when given."""
        async with self.db.transaction() as session:
            if principal is not None:
                await apply_principal(session, principal, app_role=self.settings.db_app_role)
            yield session
