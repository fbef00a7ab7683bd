"""Learning: facts extracted from text (raw text, a chat session's transcript, an agent run)
by the model and reconciled with what the scope's memory already holds.

:func:`enqueue_learn` queues a ``memory.learn`` job, one per source: the idempotency key is a
hash of the scope, the source and the text, so the same source learned twice is one job.
:func:`learn` is what the job runs:

1. **extract** (``memory_extract``): the model's facts, validated strictly
   (``roost.memory.extraction``); junk fails here and nothing is stored;
2. **candidates**, per fact, among the *current* memories of exactly the learn call's scope
   (never a wider or another one): the same content (hash) is a no-op at once; otherwise
   the nearest by embedding (same model), full-text overlap and shared entities;
3. **reconcile** (``memory_reconcile``, only when some fact has candidates): the model's
   add / update / invalidate / no-op per fact.  A decision naming an id that is not one of
   that fact's candidates is ignored (the model cannot reach another scope's rows); a fact
   without a usable decision is added;
4. **apply**, in one transaction under the owner's row-level security: ``add`` stores the
   fact (source recorded); ``update`` rewrites the target, keeping the old text in
   ``memory_history``; ``invalidate`` stores the fact and closes the target's validity at the
   new fact's ``valid_from`` (``invalidated_by_id`` = the new fact), never deleting it;
   ``noop`` writes nothing.  One ``memory.learn`` audit record says what happened.

Re-running a learn job over the same text finds every fact already stored (same content):
at-least-once delivery changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, Field
from sqlalchemy import Float, Integer, String, bindparam, cast, func, literal_column, or_, select, type_coerce
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.chat.messages import list_messages
from roost.chat.sessions import get_session
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.db.vector import VectorType
from roost.errors import Conflict, NotFound, PayloadTooLarge, RoostError, Unprocessable
from roost.identity.tenancy import apply_principal
from roost.inputs import is_blank
from roost.knowledge.embeddings import Embedder, EmbedderUnavailable, EmbeddingError
from roost.llm.gateway import LLMGateway
from roost.memory import graph, service
from roost.memory.extraction import Decision, ExtractedFact, extract, reconcile
from roost.memory.models import SOURCE_TYPES, TEXT_SEARCH_CONFIG, Memory, MemoryHistory, MemoryRelation
from roost.memory.schemas import MAX_GRAPH_ITEMS, MAX_LEARN_CHARS, MemoryCreate, ScopeIn
from roost.memory.service import Scope
from roost.principal import Principal
from roost.security.crypto import MessageCipher
from roost.tasks import service as tasks
from roost.tasks.models import BackgroundTask

log = structlog.get_logger(__name__)

LEARN_TASK: Final = "memory.learn"
TRANSCRIPT_MAX_MESSAGES: Final = 200
VECTOR_CANDIDATES: Final = 5
TEXT_CANDIDATES: Final = 3
ENTITY_CANDIDATES: Final = 3
MAX_CANDIDATES: Final = 8
MAX_COSINE_DISTANCE: Final = 0.6
"""Vector candidates farther than this (cosine distance; 0 same direction) are not shown."""
_RESOURCE: Final = service.RESOURCE
_AUDITED_IDS: Final = 50


# --------------------------------------------------------------------------- queue


class LearnPayload(BaseModel):
    """The ``memory.learn`` job: whose memory, from what.  The text travels encrypted under
    the message keys when the caller has them (always from the API), as chat text is
    stored; otherwise in clear."""

    user_id: uuid.UUID
    persona_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    source_type: str = Field(max_length=32)
    source_id: uuid.UUID | None = None
    text: str | None = None
    text_encrypted: str | None = None
    text_sha256: str = Field(min_length=64, max_length=64)
    model: str | None = Field(default=None, max_length=255)
    requested_by: uuid.UUID | None = None

    def scope(self) -> Scope:
        return Scope(self.user_id, self.persona_id, self.agent_id, self.session_id)


def _check_source(source_type: str, text_: str) -> None:
    if source_type not in SOURCE_TYPES:
        raise Unprocessable(f"source_type must be one of {', '.join(SOURCE_TYPES)}",
                            extra={"field": "source_type"})
    if not text_.strip():
        raise Unprocessable("there is no text to learn from", extra={"field": "text"})
    if len(text_) > MAX_LEARN_CHARS:
        raise PayloadTooLarge(f"the text to learn from is {len(text_)} characters; "
                              f"at most {MAX_LEARN_CHARS}")


def clip_text(text: str, limit: int = MAX_LEARN_CHARS) -> str:
    """``text`` cut to its last ``limit`` characters (what a long transcript keeps)."""
    return text if len(text) <= limit else text[-limit:]


def _visible(content: str | None) -> str:
    """``content`` trimmed, or "" when it shows nothing (white space, zero-width
    characters): such an update is no content, and the fact's own text is kept."""
    text = (content or "").strip()
    return "" if is_blank(text) else text


def learn_key(scope: Scope, *, source_type: str, source_id: uuid.UUID | None, text_sha256: str,
              model: str | None, requested_by: uuid.UUID | None = None) -> str:
    """The job's idempotency key: one job per scope, source, text, model and requester (an
    administrator's job for a user is theirs: the user could not see it, so it must not
    stand in the user's way)."""
    parts = (scope.user_id, scope.persona_id, scope.agent_id, scope.session_id, source_type,
             source_id, text_sha256, model, requested_by)
    digest = hashlib.sha256("|".join("" if p is None else str(p) for p in parts).encode())
    return f"{LEARN_TASK}:{digest.hexdigest()}"


async def enqueue_learn(
    session: AsyncSession, actor: Principal, scope: Scope, *, source_type: str,
    source_id: uuid.UUID | None, text: str, cipher: MessageCipher | None = None,
    model: str | None = None,
) -> uuid.UUID:
    """Queue learning ``text`` into ``scope`` (resolved by the caller with
    ``service.resolve_scope``) in the caller's transaction; the task id.  The same source
    (type, id and text) into the same scope is the same job, whatever state it is in.
    ``cipher``: encrypt the text in the job's payload (the message keys)."""
    _check_source(source_type, text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    payload = LearnPayload(
        user_id=scope.user_id, persona_id=scope.persona_id, agent_id=scope.agent_id,
        session_id=scope.session_id, source_type=source_type, source_id=source_id,
        text=None if cipher is not None else text,
        text_encrypted=cipher.encrypt(text).decode("ascii") if cipher is not None else None,
        text_sha256=digest, model=model, requested_by=actor.user_id)
    job, created = await tasks.enqueue_or_existing(
        session, LEARN_TASK, payload,
        idempotency_key=learn_key(scope, source_type=source_type, source_id=source_id,
                                  text_sha256=digest, model=model, requested_by=actor.user_id))
    if created:
        await record(session, "memory.learn.request", user_id=actor.user_id,
                     persona_id=scope.persona_id, resource_type=_RESOURCE,
                     metadata={"task_id": str(job.id), "source_type": source_type,
                               "source_id": str(source_id) if source_id else None,
                               "user_id": str(scope.user_id), "characters": len(text)})
    return job.id


async def learn_task(session: AsyncSession, actor: Principal, task_id: uuid.UUID) -> BackgroundTask:
    """A ``memory.learn`` job the actor queued for themselves (administrators: any); 404
    otherwise, like an unknown id."""
    job = await session.scalar(select(BackgroundTask).where(
        BackgroundTask.id == task_id, BackgroundTask.task_type == LEARN_TASK))
    if job is None or not (actor.is_admin or (
            actor.user_id is not None and job.user_id == actor.user_id)):
        raise NotFound(f"no learn task with id {task_id}")
    return job


def payload_text(payload: LearnPayload, cipher: MessageCipher) -> str:
    if payload.text_encrypted is not None:
        return cipher.decrypt(payload.text_encrypted)
    if payload.text is None:
        raise Unprocessable("the learn job's payload has no text")
    return payload.text


async def chat_transcript(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, scope: Scope,
    chat_session_id: uuid.UUID,
) -> str:
    """The session's recent user and assistant messages as ``role: text`` lines (at most
    :data:`TRANSCRIPT_MAX_MESSAGES` messages and :data:`MAX_LEARN_CHARS` characters, the
    newest kept).  The session must be the scope user's (404 otherwise)."""
    chat = await get_session(session, actor, chat_session_id)
    if chat.user_id != scope.user_id:
        raise NotFound(f"no chat session with id {chat_session_id}")
    messages, _ = await list_messages(session, gateway, actor, chat_session_id,
                                      limit=TRANSCRIPT_MAX_MESSAGES)
    lines = [f"{m.role}: {m.content.strip()}" for m in reversed(messages)
             if m.role in ("user", "assistant") and m.content.strip()]
    if not lines:
        raise Conflict("the chat session has no messages to learn from")
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) + 1 > MAX_LEARN_CHARS:
            if not kept:  # one huge message: its end
                kept.append(line[-MAX_LEARN_CHARS:])
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


# --------------------------------------------------------------------------- learning


@dataclass
class LearnReport:
    """What one learn call did, as memory ids (``unchanged``: facts already known)."""

    added: list[uuid.UUID] = field(default_factory=list)
    updated: list[uuid.UUID] = field(default_factory=list)
    invalidated: list[uuid.UUID] = field(default_factory=list)
    unchanged: list[uuid.UUID] = field(default_factory=list)
    facts: int = 0  # extracted (before de-duplication)
    ignored: int = 0  # reconciliation decisions that named no candidate or no fact
    request_ids: list[uuid.UUID] = field(default_factory=list)  # the recorded LLM calls

    def as_json(self) -> dict[str, Any]:
        ids = ("added", "updated", "invalidated", "unchanged", "request_ids")
        out: dict[str, Any] = {k: [str(i) for i in getattr(self, k)] for k in ids}
        out.update(facts=self.facts, ignored=self.ignored)
        return out


@dataclass
class _Pending:
    fact: ExtractedFact
    vector: list[float] | None
    candidates: list[dict[str, Any]]  # as shown to the model
    candidate_ids: frozenset[uuid.UUID]


@dataclass
class _Plan:
    action: Literal["add", "update", "invalidate", "noop"]
    pending: _Pending
    targets: list[uuid.UUID] = field(default_factory=list)
    content: str | None = None  # update: the merged text
    reason: str | None = None
    vector: list[float] | None = None  # update: the merged text's embedding


@asynccontextmanager
async def _acting(database: Database, gateway: LLMGateway,
                  actor: Principal) -> AsyncIterator[AsyncSession]:
    async with database.transaction() as session:
        await apply_principal(session, actor, app_role=gateway.settings.db_app_role)
        yield session


async def learn(
    database: Database, gateway: LLMGateway, actor: Principal, scope: Scope, *,
    source_type: str, source_id: uuid.UUID | None, text: str, embedder: Embedder | None,
    model: str | None = None,
) -> LearnReport:
    """Extract facts from ``text`` and reconcile them with ``scope``'s memories (see the
    module's docstring).  Raises ``extraction.ModelOutputInvalid`` for junk answers (nothing
    stored), ``NotFound`` when the scope no longer exists, the gateway's errors for failed
    calls."""
    _check_source(source_type, text)
    async with _acting(database, gateway, actor) as session:  # before paying for a call
        scope = await service.resolve_scope(session, actor, ScopeIn(
            user_id=scope.user_id, persona_id=scope.persona_id, agent_id=scope.agent_id,
            session_id=scope.session_id))
    try:
        extracted, request_id = await extract(gateway, actor, text, source_type=source_type,
                                              model=model)
    except RoostError as exc:
        await _audit_failure(database, gateway, actor, scope, source_type, source_id, exc)
        raise
    report = LearnReport(facts=len(extracted), request_ids=[request_id])
    facts = list({service.content_hash(f.content): f for f in reversed(extracted)}.values())
    facts.reverse()  # first occurrence of each content, in the model's order
    if not facts:
        return report
    vectors = await _embed(embedder, [f.content for f in facts])

    pending: list[_Pending] = []
    async with _acting(database, gateway, actor) as session:
        known = await _known(session, scope, [f.content for f in facts])
        for fact, vector in zip(facts, vectors, strict=True):
            existing = known.get(service.content_hash(fact.content))
            if existing is not None:
                report.unchanged.append(existing)
                continue
            found = await _candidates(session, scope, fact, vector, embedder)
            pending.append(_Pending(fact, vector, [_shown(m) for m in found],
                                    frozenset(m.id for m in found)))
    if not pending:
        return report

    decisions: list[Decision] = []
    if any(p.candidates for p in pending):
        try:
            decisions, request_id = await reconcile(
                gateway, actor, [p.fact for p in pending], [p.candidates for p in pending],
                model=model)
        except RoostError as exc:
            await _audit_failure(database, gateway, actor, scope, source_type, source_id, exc)
            raise
        report.request_ids.append(request_id)
    plans = _plan(pending, decisions, report)
    merged = [p for p in plans if p.action == "update" and p.content != p.pending.fact.content]
    for plan, vector in zip(merged, await _embed(embedder, [p.content or "" for p in merged]),
                            strict=True):
        plan.vector = vector

    provenance: dict[str, Any] = {"learned": True,
                                  "llm_request_ids": [str(i) for i in report.request_ids]}
    async with _acting(database, gateway, actor) as session:
        # One learn at a time per scope from here to commit, so the content check below
        # sees what a concurrent learn of the same scope stored.
        await session.execute(sql("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                              {"key": learn_key(scope, source_type="", source_id=None,
                                                text_sha256="", model=None)})
        run_id = None  # a run that is still there: the memories point to it
        if source_type == "run" and source_id is not None and await session.scalar(
                sql("SELECT 1 FROM runs WHERE id = :id"), {"id": source_id}) is not None:
            run_id = source_id
        known = await _known(session, scope, [c for p in plans
                                              for c in (p.content, p.pending.fact.content) if c])
        for plan in plans:
            await _apply(session, actor, scope, plan, known, report, embedder,
                         source_type=source_type, source_id=source_id, run_id=run_id,
                         provenance=provenance)
        await record(session, "memory.learn", user_id=actor.user_id, persona_id=scope.persona_id,
                     resource_type=_RESOURCE, metadata={
                         "source_type": source_type,
                         "source_id": str(source_id) if source_id else None,
                         "user_id": str(scope.user_id), "facts": report.facts,
                         "ignored_decisions": report.ignored,
                         **{k: [str(i) for i in getattr(report, k)[:_AUDITED_IDS]]
                            for k in ("added", "updated", "invalidated", "unchanged")},
                         "request_ids": [str(i) for i in report.request_ids]})
    log.info("memory.learned", source_type=source_type, added=len(report.added),
             updated=len(report.updated), invalidated=len(report.invalidated),
             unchanged=len(report.unchanged), ignored=report.ignored)
    return report


async def _audit_failure(database: Database, gateway: LLMGateway, actor: Principal, scope: Scope,
                         source_type: str, source_id: uuid.UUID | None, exc: RoostError) -> None:
    async with _acting(database, gateway, actor) as session:
        await record(session, "memory.learn", user_id=actor.user_id, persona_id=scope.persona_id,
                     resource_type=_RESOURCE, success=False, error_message=exc.detail[:1000],
                     metadata={"source_type": source_type,
                               "source_id": str(source_id) if source_id else None,
                               "user_id": str(scope.user_id)})


async def _embed(embedder: Embedder | None, texts: list[str]) -> list[list[float] | None]:
    """One vector per text, or Nones when there is no embedder or it fails: learning then
    goes on with full-text and entity candidates (the ``memory.embed`` job fills the
    vectors in later)."""
    if embedder is None or not texts:
        return [None] * len(texts)
    try:
        vectors = await embedder.embed(texts)
        if len(vectors) != len(texts) or any(len(v) != embedder.dimensions for v in vectors):
            raise EmbeddingError(f"the embedder did not return {len(texts)} vectors of "
                                 f"{embedder.dimensions} dimensions")
    except (EmbeddingError, EmbedderUnavailable) as exc:
        log.warning("memory.learn.embedding_failed", error=exc.detail)
        return [None] * len(texts)
    return [[float(x) for x in v] for v in vectors]


def _current(scope: Scope, *columns: Any) -> Any:
    """The scope's memories that are true now (exactly this scope, active, not closed)."""
    return scope.where(select(*columns), exact=True).where(
        Memory.valid_to.is_(None), Memory.status == "active")


async def _known(session: AsyncSession, scope: Scope, contents: Sequence[str]) -> dict[str, uuid.UUID]:
    """Content hash -> a current memory of the scope with that content."""
    hashes = sorted({service.content_hash(c) for c in contents})
    rows = (await session.execute(
        _current(scope, Memory.content_sha256, Memory.id)
        .where(Memory.content_sha256.in_(hashes)).order_by(Memory.created_at))).all()
    known: dict[str, uuid.UUID] = {}
    for row in rows:
        known.setdefault(str(row.content_sha256), row.id)
    return known


async def _candidates(session: AsyncSession, scope: Scope, fact: ExtractedFact,
                      vector: list[float] | None, embedder: Embedder | None) -> list[Memory]:
    """Current memories of exactly ``scope`` that may concern the same thing as ``fact``:
    nearest by embedding, then full-text overlap, then shared entities (at most
    :data:`MAX_CANDIDATES`)."""
    ids: list[uuid.UUID] = []
    if vector is not None and embedder is not None:
        # Not roost.memory.recall.search: candidates are exactly this scope's (search adds
        # narrower scopes), nothing counts as accessed, a far neighbour is no candidate
        # (search ranks, it does not cut), and the fact's vector is already computed.
        # TODO(memory recall): share the vector query if recall grows an exact-scope form.
        ids += await _nearest(session, scope, vector, embedder.model_name)
    ids += await _text_overlap(session, scope, fact.content)
    about, others = await _shared_entities(session, scope, fact)
    # What the scope says about the fact's subject comes first, so the candidate limit
    # never drops it for other subjects' facts that share a value or words: it is where
    # the previous version of a changed fact is (learn "Ada's pet is Indigo" while the
    # scope holds "Ada's pet is Miso" and five other people's pets called Indigo).
    unique = list(dict.fromkeys([*about, *ids, *others]))[:MAX_CANDIDATES]
    if not unique:
        return []
    rows = {m.id: m for m in (await session.scalars(select(Memory).where(Memory.id.in_(unique))))}
    return [rows[i] for i in unique if i in rows]


async def _nearest(session: AsyncSession, scope: Scope, vector: list[float],
                   model_name: str) -> list[uuid.UUID]:
    dims = len(vector)
    query = cast(bindparam("query_vector", vector, type_=VectorType()), VectorType())
    distance = literal_column(f"(memories.embedding::vector({dims}))").op(
        "<=>", return_type=Float())(query)
    stmt = (_current(scope, Memory.id, distance.label("distance"))
            .where(Memory.embedding_model == model_name, Memory.embedding_dim == dims)
            .order_by(distance).limit(VECTOR_CANDIDATES))
    return [row.id for row in (await session.execute(stmt)).all()
            if row.distance is not None and float(row.distance) <= MAX_COSINE_DISTANCE]


async def _text_overlap(session: AsyncSession, scope: Scope, content: str) -> list[uuid.UUID]:
    # Any of the fact's words (plainto_tsquery's '&' turned into '|'), best ranked first.
    words = func.plainto_tsquery(literal_column(f"'{TEXT_SEARCH_CONFIG}'::regconfig"), content)
    query = cast(func.replace(cast(words, String), "&", "|"), TSQUERY)
    stmt = (_current(scope, Memory.id)
            .where(Memory.content_tsv.op("@@")(query))
            .order_by(func.ts_rank(Memory.content_tsv, query).desc(), Memory.created_at.desc())
            .limit(TEXT_CANDIDATES))
    return list((await session.scalars(stmt)).all())


# Names are compared as graph.normalize made them, in Python: a memory's stored
# ``entity_names`` (GIN-indexed) and its relations' entities' ``normalized_name``, never a
# name normalised in SQL (whose ``lower`` and ``\\s`` differ from casefold and Python's white
# space: ß, U+00A0).
_ENTITY_MATCH = sql("memories.entity_names && CAST(:entity_names AS text[])")


# 2: the memory states one of the fact's relations of the same subject (a previous
# version); 1: it names the subject (an entity or a relation's end); 0: it only shares
# another entity.
_SUBJECT_RANK = """(CASE
  WHEN EXISTS (SELECT 1 FROM memory_relations r
               JOIN memory_entities s ON s.id = r.source_entity_id
               WHERE r.memory_id = memories.id
                 AND s.normalized_name = ANY(CAST(:subjects AS text[]))
                 AND lower(btrim(r.relation)) = ANY(CAST(:relations AS text[]))) THEN 2
  WHEN memories.entity_names && CAST(:subjects AS text[]) THEN 1
  ELSE 0 END)"""


def fact_subject(fact: ExtractedFact) -> tuple[list[str], list[str]]:
    """The fact's subject (normalised names) and relations: its relationships' sources and
    their relation names, or, without relationships, its first entity."""
    subjects = {graph.normalize(r.source) for r in fact.relationships} - {""}
    # Spelt as stored (graph.clean: composed, invisible characters dropped, white space
    # collapsed), then lower-cased as the SQL's lower(btrim(...)) does: "épouse de" typed
    # decomposed or with a no-break space is the stored "épouse de".
    relations = {graph.clean(r.relation).lower() for r in fact.relationships} - {""}
    if not subjects and fact.entities:
        subjects = {graph.normalize(fact.entities[0].name)} - {""}
    return sorted(subjects), sorted(relations)


async def _shared_entities(session: AsyncSession, scope: Scope,
                           fact: ExtractedFact) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Up to ``ENTITY_CANDIDATES`` current memories sharing an entity with ``fact``: first
    those stating the same relation of its subject, then those naming its subject, then the
    rest, newest first in each.  Answered as (about the subject, the others)."""
    normalized = sorted({graph.normalize(e.name) for e in fact.entities} - {""})
    subjects, relations = fact_subject(fact)
    if not normalized and not subjects:
        return [], []
    rank = type_coerce(sql(_SUBJECT_RANK).bindparams(
        bindparam("subjects", subjects), bindparam("relations", relations)), Integer)
    about = rank.label("about")
    stmt = (_current(scope, Memory.id, about)
            .where(or_(_ENTITY_MATCH.bindparams(bindparam("entity_names", normalized)), rank > 0))
            .order_by(about.desc(), Memory.created_at.desc()).limit(ENTITY_CANDIDATES))
    found = (await session.execute(stmt)).all()
    return [r.id for r in found if r.about > 0], [r.id for r in found if r.about == 0]


def _shown(memory: Memory) -> dict[str, Any]:
    return {"id": str(memory.id), "content": memory.content, "memory_type": memory.memory_type,
            "valid_from": memory.valid_from.isoformat()}


def _plan(pending: list[_Pending], decisions: list[Decision], report: LearnReport) -> list[_Plan]:
    """One plan per pending fact from the model's decisions; a decision naming no fact or
    an id that is not among that fact's candidates is ignored (counted)."""
    usable: dict[int, list[Decision]] = {}
    for decision in decisions:
        if decision.fact_index >= len(pending):
            report.ignored += 1
            continue
        target = decision.target()
        if decision.action in ("update", "invalidate") and (
                target is None or target not in pending[decision.fact_index].candidate_ids):
            report.ignored += 1
            continue
        if decision.action == "noop" and target is not None and \
                target not in pending[decision.fact_index].candidate_ids:
            report.ignored += 1
            continue
        usable.setdefault(decision.fact_index, []).append(decision)
    plans: list[_Plan] = []
    for index, item in enumerate(pending):
        mine = usable.get(index, [])
        updates = [d for d in mine if d.action == "update"]
        invalidations = [d for d in mine if d.action == "invalidate"]
        noops = [d for d in mine if d.action == "noop"]
        if updates:
            first = updates[0]
            plans.append(_Plan("update", item, [_target(first)],
                               # a blank content is no content: the fact's own
                               content=_visible(first.content) or item.fact.content.strip(),
                               reason=first.reason, vector=item.vector))
        elif invalidations:
            targets = list(dict.fromkeys(_target(d) for d in invalidations))
            plans.append(_Plan("invalidate", item, targets, reason=invalidations[0].reason))
        elif noops:
            target = noops[0].target()
            plans.append(_Plan("noop", item, [target] if target else []))
        else:
            plans.append(_Plan("add", item))
    return plans


def _target(decision: Decision) -> uuid.UUID:
    target = decision.target()
    assert target is not None  # checked by _plan
    return target


def _why(source_type: str, source_id: uuid.UUID | None, reason: str | None) -> str:
    origin = f"learned from {source_type.replace('_', ' ')}" + (f" {source_id}" if source_id else "")
    return (f"{origin}: {reason.strip()}" if reason and reason.strip() else origin)[:1000]


async def _apply(
    session: AsyncSession, actor: Principal, scope: Scope, plan: _Plan, known: dict[str, uuid.UUID],
    report: LearnReport, embedder: Embedder | None, *, source_type: str,
    source_id: uuid.UUID | None, run_id: uuid.UUID | None, provenance: dict[str, Any],
) -> None:
    fact = plan.pending.fact
    if plan.action == "noop":
        if plan.targets:
            report.unchanged.append(plan.targets[0])
        return
    if plan.action == "update":
        target = await _lock_current(session, scope, plan.targets[0])
        content = plan.content or fact.content
        if target is not None:
            digest, old_digest = service.content_hash(content), target.content_sha256
            if digest == old_digest:
                report.unchanged.append(target.id)
                return
            if digest in known:  # another current memory says exactly that already
                report.unchanged.append(known[digest])
                return
            await _update(session, actor, target, content, fact, plan.vector, embedder,
                          reason=_why(source_type, source_id, plan.reason))
            if known.get(old_digest) == target.id:
                del known[old_digest]
            known[digest] = target.id
            report.updated.append(target.id)
            return
        # The target stopped being current meanwhile: the fact is new information.
    digest = service.content_hash(fact.content)
    existing = known.get(digest)
    memory: Memory | None
    if existing is not None:  # stored meanwhile (a re-run, or an earlier fact of this call)
        report.unchanged.append(existing)
        if plan.action != "invalidate":
            return
        memory = await _lock_current(session, scope, existing)
        if memory is None:
            return
    else:
        memory = await _add(session, actor, scope, fact, plan.pending.vector, embedder,
                            source_type=source_type, source_id=source_id, run_id=run_id,
                         provenance=provenance)
        known[digest] = memory.id
        report.added.append(memory.id)
        if plan.action != "invalidate":
            return
    for target_id in plan.targets:
        old = await _lock_current(session, scope, target_id)
        if old is None or old.id == memory.id:
            continue
        await service.invalidate(session, actor, old, at=memory.valid_from, by=memory.id,
                                 reason=_why(source_type, source_id, plan.reason))
        for digest_, memory_id in list(known.items()):
            if memory_id == old.id:
                del known[digest_]
        report.invalidated.append(old.id)


async def _lock_current(session: AsyncSession, scope: Scope, memory_id: uuid.UUID) -> Memory | None:
    """The memory, locked, if it is still a current memory of exactly ``scope``."""
    stmt = scope.where(select(Memory), exact=True).where(
        Memory.id == memory_id, Memory.valid_to.is_(None), Memory.status == "active")
    memory: Memory | None = await session.scalar(stmt.with_for_update())
    return memory


def _set_embedding(memory: Memory, vector: list[float] | None, embedder: Embedder | None) -> None:
    if vector is None or embedder is None:
        memory.embedding = memory.embedding_model = memory.embedding_dim = None
        return
    memory.embedding, memory.embedding_model, memory.embedding_dim = (
        vector, embedder.model_name, len(vector))


async def _add(session: AsyncSession, actor: Principal, scope: Scope, fact: ExtractedFact,
               vector: list[float] | None, embedder: Embedder | None, *, source_type: str,
               source_id: uuid.UUID | None, run_id: uuid.UUID | None,
               provenance: dict[str, Any]) -> Memory:
    body = MemoryCreate(content=fact.content, memory_type=fact.memory_type,
                        confidence=fact.confidence, entities=fact.entities,
                        relationships=fact.relationships, valid_from=fact.valid_from,
                        metadata=dict(provenance))
    memory = await service.add_memory(
        session, actor, scope, body, source_type=source_type, source_id=source_id,
        run_id=run_id, audit=False)
    _set_embedding(memory, vector, embedder)
    await session.flush()
    return memory


async def _update(session: AsyncSession, actor: Principal, memory: Memory, content: str,
                  fact: ExtractedFact, vector: list[float] | None, embedder: Embedder | None,
                  *, reason: str) -> None:
    """``memory`` rewritten to ``content`` (history kept); the fact's new entities and
    relationships join its graph, true from now."""
    old_content, old_confidence = memory.content, memory.confidence
    memory.content = content.strip()
    memory.content_sha256 = service.content_hash(content)
    memory.confidence = max(old_confidence, Decimal(str(round(fact.confidence, 4))))
    memory.updated_at = now = utcnow()
    _set_embedding(memory, vector, embedder)
    await _extend_graph(session, memory, fact, now)
    session.add(MemoryHistory(memory_id=memory.id, user_id=memory.user_id, event="update",
                              old_content=old_content, new_content=memory.content,
                              old_confidence=old_confidence, new_confidence=memory.confidence,
                              reason=reason, actor_id=actor.user_id))
    await session.flush()


async def _extend_graph(session: AsyncSession, memory: Memory, fact: ExtractedFact,
                        at: datetime) -> None:
    def names(items: list[Any]) -> set[str]:
        return {graph.normalize(str(i.get("name", ""))) for i in items if isinstance(i, dict)}

    def triples(items: list[Any]) -> set[tuple[str, str, str]]:
        return {(graph.normalize(str(i.get("source", ""))), graph.clean(str(i.get("relation", ""))),
                 graph.normalize(str(i.get("target", "")))) for i in items if isinstance(i, dict)}

    have_names, have_triples = names(memory.entities), triples(memory.relationships)
    # Blank names, ends and relations are skipped, as graph.attach does on add (no entity
    # to link; a relation of only format characters is blank, graph.clean).
    new_entities = [e.model_dump() for e in fact.entities
                    if graph.normalize(e.name) and graph.normalize(e.name) not in have_names]
    new_relations = [r for r in fact.relationships
                     if graph.normalize(r.source) and graph.clean(r.relation) and graph.normalize(r.target)
                     and (graph.normalize(r.source), graph.clean(r.relation), graph.normalize(r.target))
                     not in have_triples]
    # A memory names at most MAX_GRAPH_ITEMS entities and as many relationships, as one
    # POSTed or extracted: what it has stays, the new ones fill the room left (every list
    # page and search answer carries them; repeated updates must not grow them unbounded).
    offered = len(new_entities) + len(new_relations)
    new_entities = new_entities[:max(0, MAX_GRAPH_ITEMS - len(memory.entities))]
    new_relations = new_relations[:max(0, MAX_GRAPH_ITEMS - len(memory.relationships))]
    if dropped := offered - len(new_entities) - len(new_relations):
        log.info("memory.learn_graph_full", memory_id=str(memory.id), dropped=dropped)
    if not (new_entities or new_relations):
        return
    memory.entities = [*memory.entities, *new_entities]
    memory.relationships = [*memory.relationships, *(r.model_dump() for r in new_relations)]
    memory.entity_names = graph.names(memory.entities, memory.relationships)
    types = {graph.normalize(e.name): e.type for e in fact.entities}
    ids = await graph.upsert_entities(
        session, user_id=memory.user_id, persona_id=memory.persona_id,
        entities=[*((e["name"], e["type"]) for e in new_entities),
                  *((name, types.get(graph.normalize(name), "thing"))
                    for r in new_relations for name in (r.source, r.target))])
    for relation in new_relations:
        session.add(MemoryRelation(
            user_id=memory.user_id, persona_id=memory.persona_id,
            source_entity_id=ids[graph.normalize(relation.source)],
            target_entity_id=ids[graph.normalize(relation.target)],
            relation=graph.clean(relation.relation)[:128],
            memory_id=memory.id, valid_from=max(at, memory.valid_from)))
