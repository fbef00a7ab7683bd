"""Routing: which providers answer a call, from the model name asked for.

The enabled providers whose default model is the name, or whose synced ``models`` have
it enabled, in ``priority`` order (then name); without a name, every enabled provider
with a default model.  A model disabled in ``models`` is not routed, the default one
included.  ``prefer`` (an agent's and its persona's providers) moves the providers it
names to the front, in its order: a preference, not a restriction.  An ensemble narrows
that list to the providers it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing import credits, limits
from roost.errors import BadRequest
from roost.llm import leases
from roost.llm.base import LLMProvider
from roost.llm.errors import ModelCannotEmbed, ModelNotFound, NoProvider
from roost.llm.gateway import LLMGateway
from roost.llm.models import LLMProviderRow
from roost.llm.orchestration import ProviderRef, Strategy
from roost.llm.provider_types import OPENAI_COMPATIBLE_TYPES
from roost.llm.schemas import EnsembleSpec
from roost.principal import Principal
from roost.system_settings import runtime

ADD_PROVIDER_HINT = (
    "no LLM provider is configured. An administrator can add one with "
    "POST /api/v1/llm/providers (e.g. {\"name\": \"ollama\", \"type\": \"openai\", "
    "\"base_url\": \"http://127.0.0.1:11434/v1\", \"model\": \"llama3.2\"}), or install the "
    "local model with pip install 'roost[local]' and restart Roost"
)


@dataclass
class Route:
    members: list[tuple[ProviderRef, LLMProvider]]
    mode: Literal["fallback", "ensemble"]
    model: str | None  # the model name asked for (None: each provider's default)
    strategy: Strategy | None = None
    ensemble_config: dict[str, Any] | None = None

    def refs(self) -> list[ProviderRef]:
        return [ref for ref, _ in self.members]

    def narrowed(self, keep: Sequence[bool]) -> Route:
        """The route with only the members ``keep`` says (one flag per member, in order);
        an ensemble's config names those left."""
        members = [member for member, kept in zip(self.members, keep, strict=True) if kept]
        if len(members) == len(self.members):
            return self
        config = self.ensemble_config
        if config is not None:
            config = {**config, "providers": [ref.name for ref, _ in members]}
        return replace(self, members=members, ensemble_config=config)

    def stale(self) -> bool:
        """A member's provider was edited or removed since the route was resolved (its
        instance retired): a caller that keeps a route across calls (an agent run's
        steps) resolves it again, so it uses the edited providers."""
        return any(leases.retired(provider) for _, provider in self.members)


def serves(row: LLMProviderRow, model: str) -> bool:
    """``model`` is the row's default model or a synced one, and not disabled
    (``disabled_models`` turns off the default model too)."""
    enabled = (row.models or {}).get(model)
    return enabled is not False and (row.model == model or bool(enabled))


def default_model(row: LLMProviderRow) -> str | None:
    """The row's default model, unless it is disabled."""
    return row.model if row.model and serves(row, row.model) else None


def embeds(row: LLMProviderRow) -> bool:
    """The row's type has an embeddings API (Anthropic's and the local model's have none)."""
    return row.type in OPENAI_COMPATIBLE_TYPES


# The enabled providers in routing order, per process: one entry, kept by NOTIFY
# roost_llm_providers (migration 0990's triggers: not a health check) and by this
# process's own writes to llm_providers; used only while the process listens
# (roost.system_settings.runtime).  A model call's route then costs no statement.  The
# rows are copies attached to no session: nothing a transaction does changes them.
PROVIDERS: Final = runtime.NotifiedCache[None, tuple[LLMProviderRow, ...]](
    "roost_llm_providers", 1, tables=("llm_providers",))
_COLUMNS: Final = tuple(LLMProviderRow.__mapper__.columns.keys())


def _detached(row: LLMProviderRow) -> LLMProviderRow:
    return LLMProviderRow(**{key: getattr(row, key) for key in _COLUMNS})


async def enabled_providers(session: AsyncSession) -> list[LLMProviderRow]:
    """The enabled providers, by ``priority`` then name."""
    cached = runtime.serves(session)
    if cached:
        hit, rows = PROVIDERS.get(None)
        if hit and rows is not None:
            return list(rows)
    generation = PROVIDERS.generation
    found = tuple(_detached(row) for row in (await session.scalars(
        select(LLMProviderRow).where(LLMProviderRow.enabled)
        .order_by(LLMProviderRow.priority, LLMProviderRow.name))).all())
    if cached:
        PROVIDERS.put(None, found, generation)
    return list(found)


async def resolve_route(
    session: AsyncSession, gateway: LLMGateway, model: str | None,
    ensemble_spec: EnsembleSpec | None = None, *, embeddings: bool = False,
    prefer: Sequence[str] = (),
) -> Route:
    """Which providers to ask, in order.  409 without providers, 404 for an unknown model;
    for ``embeddings`` only the providers with an embeddings API (400 when none is left).
    ``prefer``: those of the providers serving the model that it names (case-insensitively)
    come first, in its order, then the others in theirs; a name no provider serving the
    model has (deleted, disabled since) is skipped."""
    mark = gateway.pool.mark()
    rows = await enabled_providers(session)
    # Instances of providers deleted or disabled since (through whichever process) are
    # closed: this process's own deletions are the only ones it is told about otherwise.
    await gateway.pool.retain(rows, mark)
    if not rows:
        raise NoProvider(ADD_PROVIDER_HINT)
    if model:
        candidates = [r for r in rows if serves(r, model)]
        if not candidates:
            raise _unknown_model(model)
    else:
        candidates = [r for r in rows if default_model(r)]
        if not candidates:
            raise NoProvider(
                "no enabled LLM provider has a default model: name a model, or give a "
                "provider a default model"
            )
    if embeddings:  # the caller's mistake, before anything is recorded: not a 502
        candidates = [r for r in candidates if embeds(r)]
        if not candidates:
            raise ModelCannotEmbed(
                f"model {model!r} has no provider with an embeddings API (Anthropic's and "
                "the local model's have none); GET /v1/models lists the models available")
    if prefer:
        rank: dict[str, int] = {}
        for name in prefer:
            rank.setdefault(name.lower(), len(rank))
        candidates.sort(key=lambda r: rank.get(r.name.lower(), len(rank)))  # stable
    mode: Literal["fallback", "ensemble"] = "fallback"
    config = None
    if ensemble_spec is not None:
        mode = "ensemble"
        if ensemble_spec.providers:
            wanted = {n.lower() for n in ensemble_spec.providers}
            unknown = wanted - {r.name.lower() for r in candidates}
            if unknown:
                raise BadRequest(
                    f"ensemble names providers that are unknown, disabled or do not serve "
                    f"the model: {sorted(unknown)}"
                )
            candidates = [r for r in candidates if r.name.lower() in wanted]
            # Every provider named is asked, or the call is refused: never fewer, silently.
            most = gateway.settings.llm_max_ensemble
            if len(wanted) > most:
                raise BadRequest(f"the ensemble names {len(wanted)} providers; at most {most} "
                                 "may be asked at once (ROOST_LLM_MAX_ENSEMBLE)",
                                 extra={"param": "ensemble.providers"})
            if ensemble_spec.n is not None and ensemble_spec.n < len(wanted):
                raise BadRequest(f"the ensemble names {len(wanted)} providers but n is "
                                 f"{ensemble_spec.n}: leave n out, or name {ensemble_spec.n}",
                                 extra={"param": "ensemble.n"})
        limit = min(ensemble_spec.n or gateway.settings.llm_max_ensemble,
                    gateway.settings.llm_max_ensemble)
        candidates = candidates[:limit]
    members, failed = await gateway.pool.members(candidates)
    reasons = "; ".join(f"{e.name}: {e.reason}" for e in failed)
    if not members:
        raise NoProvider(f"no configured LLM provider can be used ({reasons})")
    if failed and ensemble_spec is not None and ensemble_spec.providers:
        # An ensemble asks every provider it names, or is refused: never fewer, silently.
        raise NoProvider(f"the ensemble names providers that cannot be used ({reasons})")
    if ensemble_spec is not None:  # the members asked, not the rows they were built from
        config = {"strategy": ensemble_spec.strategy,
                  "providers": [ref.name for ref, _ in members]}
    return Route(
        members=members, mode=mode, model=model,
        strategy=ensemble_spec.strategy if ensemble_spec else None, ensemble_config=config,
    )


async def list_models(session: AsyncSession) -> list[tuple[str, str, datetime]]:
    """(model id, provider name, provider created_at) for every routable model."""
    seen: dict[str, tuple[str, str, datetime]] = {}
    for row in await enabled_providers(session):
        names = [m for m, on in (row.models or {}).items() if on]
        default = default_model(row)
        if default and default not in names:
            names.insert(0, default)
        for name in names:
            seen.setdefault(name, (name, row.name, row.created_at))
    return list(seen.values())


def _unknown_model(model: str) -> ModelNotFound:
    return ModelNotFound(
        f"no enabled LLM provider serves model {model!r}; GET /v1/models lists the models "
        "available"
    )


async def available_models(
    gateway: LLMGateway, principal: Principal
) -> list[tuple[str, str, datetime]]:
    """:func:`list_models` in a transaction of its own (``GET /v1/models``), without the
    models the caller's plan leaves out (``models_allowed``): a client picking from the
    list was offered models whose call is a 403."""
    async with gateway.transaction(principal) as session:
        models = await list_models(session)
        payer = await credits.payer_for(session, principal.user_id)
    return [m for m in models if limits.plan_includes(payer, m[0])]


async def get_model(
    gateway: LLMGateway, principal: Principal, model: str
) -> tuple[str, str, datetime]:
    """One routable model (``GET /v1/models/{model}``); 404 when no provider serves it."""
    for listed in await available_models(gateway, principal):
        if listed[0] == model:
            return listed
    raise _unknown_model(model)
