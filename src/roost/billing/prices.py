"""Model prices: what a model's tokens cost, per million, and :func:`cost_for`.

A price's ``model_pattern`` is an exact model name or an fnmatch glob (``gpt-4o*``,
``claude-*sonnet*``); matching ignores case and Unicode normal form (NFC).  The most
specific price wins: an exact name beats every glob, and among matching globs the longest
pattern wins (ties: the alphabetically first).  A model nothing matches costs nothing (local models).

:func:`cost_for` runs on every LLM call, so it reads a per-process copy of the table:
reloaded after :data:`CACHE_TTL_S` seconds, or at once when a price changes through this
process.  A change made by another process shows within the TTL.  The copy is kept per
database (the engine's URL), so processes or tests that open several databases never
mix their tables.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
import uuid
import weakref
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.billing.models import ModelPrice
from roost.billing.schemas import PriceCreate, PriceUpdate
from roost.db.lookup import one_or_404
from roost.errors import BadRequest, Conflict, Forbidden, Unprocessable
from roost.identity.common import nfc
from roost.pagination import MALFORMED_CURSOR, decode_cursor, encode_cursor, page_of
from roost.principal import Principal

CACHE_TTL_S: Final = 5.0
MICRO: Final = Decimal("0.000001")
MILLION: Final = Decimal(1_000_000)
DEFAULT_CURRENCY: Final = "USD"
GLOB_CHARS: Final = frozenset("*?[")
PRICE_NOT_NULL: Final = ("input_per_million", "output_per_million", "currency")
_MAX_TABLES: Final = 16  # databases remembered per process
_MAX_MEMO: Final = 4096  # resolved model names remembered per table


def is_glob(pattern: str) -> bool:
    return any(c in GLOB_CHARS for c in pattern)


@dataclass(frozen=True)
class Rate:
    pattern: str
    input_per_million: Decimal
    output_per_million: Decimal
    currency: str


@dataclass
class _Table:
    loaded_at: float
    generation: int
    exact: dict[str, Rate]
    globs: list[Rate]  # longest pattern first
    memo: dict[str, Rate | None] = field(default_factory=dict)

    def match(self, model: str) -> Rate | None:
        name = nfc(model).lower()  # a name composed or not is one model (as the ledger's)
        if name in self.memo:
            return self.memo[name]
        found = self.exact.get(name)
        if found is None:
            found = next((r for r in self.globs
                          if fnmatch.fnmatchcase(name, nfc(r.pattern).lower())), None)
        if len(self.memo) >= _MAX_MEMO:
            self.memo.clear()
        self.memo[name] = found
        return found


_tables: dict[str, _Table] = {}
_generation = 0


def invalidate() -> None:
    """Forget every cached price table (the next :func:`cost_for` reloads)."""
    global _generation
    _generation += 1
    _tables.clear()


def _invalidate_on_commit(session: AsyncSession) -> None:
    """Drop the cache now and again when the writing transaction ends (so a reader that
    reloaded in between, seeing the old rows, does not keep them for the TTL)."""
    invalidate()
    sync = session.sync_session
    for name in ("after_commit", "after_rollback"):
        if not event.contains(sync, name, _on_end):
            event.listen(sync, name, _on_end)


def _on_end(_session: Any) -> None:
    invalidate()


_engine_keys: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _cache_key(session: AsyncSession) -> str:
    """The database's URL, rendered once per engine (rendering it per call cost ~80 µs,
    bench/billing)."""
    bind = session.bind  # an engine, or a connection (whose engine has the URL)
    engine = getattr(bind, "engine", bind)
    try:
        return _engine_keys[engine]
    except (KeyError, TypeError):
        key = str(getattr(engine, "url", "")) or "default"
        with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
            _engine_keys[engine] = key
        return key


async def _table(session: AsyncSession) -> _Table:
    key = _cache_key(session)
    now = time.monotonic()
    table = _tables.get(key)
    if table is not None and table.generation == _generation \
            and now - table.loaded_at < CACHE_TTL_S:
        return table
    generation = _generation
    rows = (await session.execute(select(
        ModelPrice.model_pattern, ModelPrice.input_per_million, ModelPrice.output_per_million,
        ModelPrice.currency))).all()
    rates = [Rate(*row) for row in rows]
    exact: dict[str, Rate] = {}
    for rate in sorted((r for r in rates if not is_glob(r.pattern)),
                       key=lambda r: r.pattern, reverse=True):
        exact[nfc(rate.pattern).lower()] = rate  # the alphabetically first wins a clash
    globs = sorted((r for r in rates if is_glob(r.pattern)),
                   key=lambda r: (-len(r.pattern), r.pattern))
    table = _Table(loaded_at=now, generation=generation, exact=exact, globs=globs)
    if generation == _generation:  # not invalidated while loading
        if len(_tables) >= _MAX_TABLES:
            _tables.clear()
        _tables[key] = table
    return table


async def price_for(session: AsyncSession, model: str | None) -> Rate | None:
    """The most specific price matching ``model``, or None."""
    if not model:
        return None
    return (await _table(session)).match(model)


def compute_cost(rate: Rate, tokens_input: int, tokens_output: int) -> Decimal:
    """(in * input_per_million + out * output_per_million) / 10^6, to 6 decimals
    (half up)."""
    total = (Decimal(tokens_input) * rate.input_per_million
             + Decimal(tokens_output) * rate.output_per_million) / MILLION
    return total.quantize(MICRO, rounding=ROUND_HALF_UP)


async def cost_for(session: AsyncSession, model: str | None, tokens_input: int,
                   tokens_output: int) -> tuple[Decimal, str]:
    """The cost and currency of a call: ``(Decimal(0), "USD")`` when no price matches
    ``model`` (or it is None)."""
    if tokens_input < 0 or tokens_output < 0:
        raise Unprocessable("token counts must not be negative")
    rate = await price_for(session, model)
    if rate is None:
        return Decimal(0).quantize(MICRO), DEFAULT_CURRENCY
    return compute_cost(rate, tokens_input, tokens_output), rate.currency


# --- the admin API -----------------------------------------------------------------------


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("only administrators change model prices")


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


async def list_prices(session: AsyncSession, *, limit: int = 500,
                      cursor: str | None = None) -> tuple[list[ModelPrice], str | None]:
    """Every price, by pattern."""
    stmt = select(ModelPrice)
    if cursor is not None:
        after = decode_cursor(cursor).get("p")
        if not isinstance(after, str):
            raise BadRequest(MALFORMED_CURSOR)
        stmt = stmt.where(ModelPrice.model_pattern > after)
    rows = (await session.scalars(stmt.order_by(ModelPrice.model_pattern)
                                  .limit(limit + 1))).all()
    return page_of(rows, limit, lambda p: encode_cursor({"p": p.model_pattern}))


async def get_price(session: AsyncSession, price_id: uuid.UUID, *,
                    lock: bool = False) -> ModelPrice:
    return await one_or_404(session, select(ModelPrice).where(ModelPrice.id == price_id),
                            lock=lock, missing=f"model price {price_id} does not exist")


async def create_price(session: AsyncSession, actor: Principal, body: PriceCreate) -> ModelPrice:
    _require_admin(actor)
    existing = await session.scalar(select(ModelPrice.id).where(
        ModelPrice.model_pattern == body.model_pattern))
    if existing is not None:
        raise Conflict(f"a price for {body.model_pattern!r} exists already ({existing}): "
                       "change it with PATCH", extra={"field": "model_pattern"})
    price = ModelPrice(model_pattern=body.model_pattern,
                       input_per_million=body.input_per_million,
                       output_per_million=body.output_per_million, currency=body.currency,
                       note=body.note)
    session.add(price)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a price for {body.model_pattern!r} exists already",
                       extra={"field": "model_pattern"}) from None
    await session.refresh(price)
    _invalidate_on_commit(session)
    await record(session, "billing.price.create", user_id=actor.user_id,
                 resource_type="model_price", resource_id=price.id,
                 changes={"model_pattern": price.model_pattern,
                          "input_per_million": str(price.input_per_million),
                          "output_per_million": str(price.output_per_million),
                          "currency": price.currency})
    return price


async def update_price(session: AsyncSession, actor: Principal, price_id: uuid.UUID,
                       body: PriceUpdate) -> ModelPrice:
    _require_admin(actor)
    price = await get_price(session, price_id, lock=True)
    given = body.model_fields_set
    for fld in PRICE_NOT_NULL:
        if fld in given and getattr(body, fld) is None:
            raise Unprocessable(f"{fld} cannot be null", extra={"field": fld})
    changes: dict[str, Any] = {}
    for fld in sorted(given):
        value = getattr(body, fld)
        if getattr(price, fld) != value:
            changes[fld] = _plain(value)
            setattr(price, fld, value)
    if changes:
        await session.flush()
        await session.refresh(price)
        _invalidate_on_commit(session)
        await record(session, "billing.price.update", user_id=actor.user_id,
                     resource_type="model_price", resource_id=price.id,
                     changes={"model_pattern": price.model_pattern, **changes})
    return price


async def set_price(session: AsyncSession, actor: Principal, pattern: str,
                    input_per_million: Decimal, output_per_million: Decimal,
                    currency: str | None = None, note: str | None = None) -> ModelPrice:
    """Create or change the price of ``pattern`` (the CLI's ``prices set``)."""
    _require_admin(actor)
    existing = await session.scalar(select(ModelPrice.id).where(
        ModelPrice.model_pattern == pattern))
    values: dict[str, Any] = {"input_per_million": input_per_million,
                              "output_per_million": output_per_million}
    if currency:
        values["currency"] = currency
    if note is not None:
        values["note"] = note
    try:
        if existing is None:
            return await create_price(session, actor, PriceCreate.model_validate(
                {"model_pattern": pattern, **values}))
        return await update_price(session, actor, existing, PriceUpdate.model_validate(values))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise Unprocessable(f"the price is not valid: {problems}") from None


async def delete_price(session: AsyncSession, actor: Principal, price_id: uuid.UUID) -> None:
    _require_admin(actor)
    price = await get_price(session, price_id, lock=True)
    await session.delete(price)
    await session.flush()
    _invalidate_on_commit(session)
    await record(session, "billing.price.delete", user_id=actor.user_id,
                 resource_type="model_price", resource_id=price_id,
                 changes={"model_pattern": price.model_pattern})
