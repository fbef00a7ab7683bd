"""System prompts: publish versions, move labels, resolve a key for a user, render, and
the usage counters chat replies and agent runs feed.

**Scopes.**  A version belongs to a user, a group (Roost's tenant: its members use it) or
the factory.  Anyone publishes for themselves; a group's administrators (and Roost's) for
a group; only Roost's administrators for the factory.  Another user's version, or a group
the actor is not in, is a 404.

**Resolution** (:func:`resolve`): the version the ``label`` points at in the user's own
scope, else in one of their groups' (several groups with one: the group the user joined
first), else the factory's; a scope whose labelled version is inactive is skipped.  One
statement on the labels' unique index (docs/prompts.md, bench/workspace/prompts.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, func, literal, select, text, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import uuid7
from roost.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.models import Group, UserGroupMembership
from roost.pagination import (
    MALFORMED_CURSOR,
    cursor_uuid,
    decode_cursor,
    encode_cursor,
    newest_first,
    page_of,
    where_equal,
)
from roost.principal import Principal
from roost.prompts import cache
from roost.prompts.models import NIL_SCOPE, SystemPrompt, SystemPromptLabel
from roost.prompts.render import check_definitions, placeholders, render
from roost.prompts.schemas import (
    KEY_PATTERN,
    LABEL_PATTERN,
    KeyOut,
    LabelOut,
    PromptCreate,
    PromptOut,
    Scope,
    composed,
)
from roost.system_settings import runtime

DEFAULT_LABEL: Final = "production"
RESOURCE: Final = "system_prompt"
MAX_LABELS: Final = 100
"""Labels of one key in one scope: what /keys answers per key stays bounded."""

# Both lookups rank the same way: the user's scope, then their groups' (oldest membership
# first), then the factory's.  :uid may be NULL (the operator): the factory only.
RESOLVE_SQL: Final = text("""
  WITH g AS (SELECT group_id, joined_at FROM user_group_memberships
              WHERE user_id = CAST(:uid AS uuid))
  SELECT p.* FROM system_prompt_labels l
    JOIN system_prompts p ON p.id = l.prompt_id
    LEFT JOIN g ON g.group_id = l.group_id
   WHERE l.prompt_key = :key AND l.label = :label AND p.is_active
     AND l.scope_id = ANY (ARRAY(SELECT group_id FROM g)
                           || ARRAY[CAST(:uid AS uuid), CAST(:nil AS uuid)])
   ORDER BY l.user_id IS NULL, l.group_id IS NULL, g.joined_at, l.group_id
   LIMIT 1""")
VERSION_SQL: Final = text("""
  WITH g AS (SELECT group_id, joined_at FROM user_group_memberships
              WHERE user_id = CAST(:uid AS uuid))
  SELECT p.* FROM system_prompts p
    LEFT JOIN g ON g.group_id = p.group_id
   WHERE p.prompt_key = :key AND p.version = :version
     AND p.scope_id = ANY (ARRAY(SELECT group_id FROM g)
                           || ARRAY[CAST(:uid AS uuid), CAST(:nil AS uuid)])
   ORDER BY p.user_id IS NULL, p.group_id IS NULL, g.joined_at, p.group_id
   LIMIT 1""")


def scope_of(row: SystemPrompt | SystemPromptLabel) -> Scope:
    if row.user_id is not None:
        return "user"
    return "group" if row.group_id is not None else "factory"


def prompt_out(row: SystemPrompt, labels: Sequence[str] = ()) -> PromptOut:
    data = {c: getattr(row, c) for c in PromptOut.model_fields if c not in ("scope", "labels")}
    return PromptOut(**data, scope=scope_of(row), labels=sorted(labels))


async def labels_of(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID,
                                                                             list[str]]:
    found: dict[uuid.UUID, list[str]] = {i: [] for i in ids}
    if ids:
        rows = await session.execute(select(SystemPromptLabel.prompt_id, SystemPromptLabel.label)
                                     .where(SystemPromptLabel.prompt_id.in_(list(ids))))
        for prompt_id, label in rows:
            found[prompt_id].append(label)
    return found


# --- who may write where ----------------------------------------------------------------


async def _check_group(session: AsyncSession, actor: Principal, group_id: uuid.UUID, *,
                       write: bool) -> None:
    """The actor is in the group (else 404, as for a group that does not exist) and, to
    write, administers it or Roost (else 403)."""
    if actor.is_admin:
        if await session.get(Group, group_id) is None:
            raise NotFound(f"group {group_id} does not exist")
        return
    role = None
    if actor.user_id is not None:
        role = await session.scalar(select(UserGroupMembership.role).where(
            UserGroupMembership.user_id == actor.user_id,
            UserGroupMembership.group_id == group_id))
    if role is None:
        raise NotFound(f"group {group_id} does not exist")
    if write and role != "admin":
        raise Forbidden("only the group's administrators publish its prompts")


async def _check_write(session: AsyncSession, actor: Principal, *, user_id: uuid.UUID | None,
                       group_id: uuid.UUID | None) -> None:
    if user_id is not None:
        if user_id != actor.user_id and not actor.is_admin:
            raise NotFound("no such prompt")
    elif group_id is not None:
        await _check_group(session, actor, group_id, write=True)
    elif not actor.is_admin:
        raise Forbidden("only administrators publish factory defaults")


# --- versions ---------------------------------------------------------------------------


async def create_version(session: AsyncSession, actor: Principal,
                         body: PromptCreate) -> tuple[SystemPrompt, list[str]]:
    """A new immutable version (the scope's next number) and, with ``label``, the label
    moved to it, in one transaction."""
    user_id = group_id = None
    if body.scope == "user":
        if actor.user_id is None:
            raise Unprocessable("the operator token has no user: publish with scope "
                                "'factory' or 'group'", extra={"field": "scope"})
        if body.group_id is not None:
            raise Unprocessable("group_id goes with scope 'group'", extra={"field": "group_id"})
        user_id = actor.user_id
    elif body.scope == "group":
        if body.group_id is None:
            raise Unprocessable("scope 'group' needs group_id", extra={"field": "group_id"})
        group_id = body.group_id
    elif body.group_id is not None:
        raise Unprocessable("group_id goes with scope 'group'", extra={"field": "group_id"})
    await _check_write(session, actor, user_id=user_id, group_id=group_id)
    variables = [v.model_dump() for v in body.variables]
    check_definitions(body.prompt_text, variables)
    row = await _insert_version(
        session, user_id=user_id, group_id=group_id, key=body.prompt_key,
        text_=body.prompt_text, name=body.prompt_name or body.prompt_key,
        category=body.prompt_category, description=body.description, variables=variables,
        created_by=actor.user_id)
    labels = []
    if body.label is not None:
        await _move_label(session, row, body.label)
        labels.append(body.label)
    await record(session, "prompt.publish", user_id=actor.user_id, resource_type=RESOURCE,
                 resource_id=row.id, changes={"prompt_key": row.prompt_key,
                                              "version": row.version, "scope": scope_of(row),
                                              "label": body.label})
    return row, labels


async def _lock(session: AsyncSession, scope: uuid.UUID, key: str) -> None:
    """Publishes and label moves of one key in one scope take turns: for the next number
    (the unique index would otherwise turn the loser into a 409) and for a label's
    previous version (``FOR UPDATE`` locks nothing while the label does not exist yet);
    held to commit."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                          {"k": f"system_prompts:{scope}:{key}"})


async def _insert_version(session: AsyncSession, *, user_id: uuid.UUID | None,
                          group_id: uuid.UUID | None, key: str, text_: str, name: str,
                          category: str, description: str | None,
                          variables: list[dict[str, Any]],
                          created_by: uuid.UUID | None) -> SystemPrompt:
    scope = user_id or group_id or NIL_SCOPE
    await _lock(session, scope, key)
    latest = await session.scalar(select(func.max(SystemPrompt.version)).where(
        SystemPrompt.scope_id == scope, SystemPrompt.prompt_key == key))
    row = SystemPrompt(user_id=user_id, group_id=group_id, prompt_key=key, prompt_text=text_,
                       prompt_name=name, prompt_category=category, description=description,
                       variables=variables, is_factory_default=scope == NIL_SCOPE,
                       version=(latest or 0) + 1, created_by=created_by)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def get_version(session: AsyncSession, actor: Principal,
                      prompt_id: uuid.UUID) -> SystemPrompt:
    """A version the actor may read: theirs, their groups', the factory's (admins: any)."""
    row = await session.get(SystemPrompt, prompt_id)
    if row is None or not _readable(actor, row):
        raise NotFound(f"prompt {prompt_id} does not exist")
    return row


def _readable(actor: Principal, row: SystemPrompt | SystemPromptLabel) -> bool:
    if actor.is_admin or (row.user_id is None and row.group_id is None):
        return True
    if row.user_id is not None:
        return row.user_id == actor.user_id
    return row.group_id in actor.group_ids


def _own_scopes(actor: Principal, column: Any) -> Any:
    """Lists cover the actor's resolution scopes: their own, their groups', the factory."""
    scopes = [NIL_SCOPE, *actor.group_ids]
    if actor.user_id is not None:
        scopes.append(actor.user_id)
    return column.in_(scopes)


async def list_versions(session: AsyncSession, actor: Principal, *, key: str | None = None,
                        category: str | None = None, scope: Scope | None = None,
                        group_id: uuid.UUID | None = None, limit: int,
                        cursor: str | None) -> tuple[list[tuple[SystemPrompt, list[str]]],
                                                     str | None]:
    category = composed(category) if category is not None else None  # as stored
    stmt = where_equal(select(SystemPrompt).where(_own_scopes(actor, SystemPrompt.scope_id)),
                       (SystemPrompt.prompt_key, key), (SystemPrompt.prompt_category, category),
                       (SystemPrompt.group_id, group_id))
    if scope is not None:
        stmt = stmt.where({"user": SystemPrompt.user_id.is_not(None),
                           "group": SystemPrompt.group_id.is_not(None),
                           "factory": SystemPrompt.is_factory_default}[scope])
    rows, next_cursor = await newest_first(session, stmt, SystemPrompt.created_at,
                                           SystemPrompt.id, limit=limit, cursor=cursor)
    labels = await labels_of(session, [r.id for r in rows])
    return [(r, labels[r.id]) for r in rows], next_cursor


async def set_active(session: AsyncSession, actor: Principal, prompt_id: uuid.UUID,
                     active: bool) -> SystemPrompt:
    row = await get_version(session, actor, prompt_id)
    await _check_write(session, actor, user_id=row.user_id, group_id=row.group_id)
    row.is_active = active
    await session.flush()
    await session.refresh(row)
    await record(session, "prompt.activate" if active else "prompt.deactivate",
                 user_id=actor.user_id, resource_type=RESOURCE, resource_id=row.id,
                 changes={"prompt_key": row.prompt_key, "version": row.version,
                          "is_active": active})
    return row


# --- labels -----------------------------------------------------------------------------


async def _move_label(session: AsyncSession, row: SystemPrompt, label: str) -> uuid.UUID | None:
    """Point ``label`` of the version's scope and key at it: one upsert, so readers see the
    old version or the new one, never none.  Returns the version it pointed at before.
    A scope's key has at most ``MAX_LABELS`` labels (409 for a new one past that)."""
    await _lock(session, row.scope_id, row.prompt_key)
    of_key = (SystemPromptLabel.scope_id == row.scope_id,
              SystemPromptLabel.prompt_key == row.prompt_key)
    before = await session.scalar(select(SystemPromptLabel.prompt_id).where(
        *of_key, SystemPromptLabel.label == label))
    if before is None and (await session.scalar(
            select(func.count()).where(*of_key)) or 0) >= MAX_LABELS:
        raise Conflict(f"prompt {row.prompt_key!r} has {MAX_LABELS} labels in this scope, the "
                       "most it may have: move one of them instead",
                       extra={"limit": MAX_LABELS})
    await session.execute(insert(SystemPromptLabel).values(
        id=uuid7(), user_id=row.user_id, group_id=row.group_id, prompt_key=row.prompt_key,
        label=label, prompt_id=row.id,
    ).on_conflict_do_update(index_elements=["scope_id", "prompt_key", "label"],
                            set_={"prompt_id": row.id, "updated_at": func.now()}))
    return before


async def set_label(session: AsyncSession, actor: Principal, prompt_id: uuid.UUID,
                    label: str) -> LabelOut:
    row = await get_version(session, actor, prompt_id)
    await _check_write(session, actor, user_id=row.user_id, group_id=row.group_id)
    before = await _move_label(session, row, label)
    previous = await session.get(SystemPrompt, before) if before is not None else None
    await record(session, "prompt.label", user_id=actor.user_id, resource_type=RESOURCE,
                 resource_id=row.id, changes={
                     "prompt_key": row.prompt_key, "label": label, "scope": scope_of(row),
                     "from_version": previous.version if previous else None,
                     "to_version": row.version})
    # The label just moved, read by its key: a listing covers the actor's own scopes, and an
    # administrator may label a version of someone else's.
    moved = await session.scalar(select(SystemPromptLabel).where(
        SystemPromptLabel.scope_id == row.scope_id, SystemPromptLabel.prompt_key == row.prompt_key,
        SystemPromptLabel.label == label).execution_options(populate_existing=True))
    assert moved is not None
    return _label_out(moved, row.version)


def _label_out(lab: SystemPromptLabel, version: int) -> LabelOut:
    return LabelOut(scope=scope_of(lab), user_id=lab.user_id, group_id=lab.group_id,
                    prompt_key=lab.prompt_key, label=lab.label, prompt_id=lab.prompt_id,
                    version=version, updated_at=lab.updated_at)


def _label_cursor(lab: LabelOut) -> str:
    return encode_cursor({"k": lab.prompt_key, "s": str(lab.user_id or lab.group_id or NIL_SCOPE),
                          "l": lab.label})


def _after_label(cursor: str) -> ColumnElement[bool]:
    """Labels after the cursor's, in (key, scope, label) order; its key and label must be
    ones a label can have (400 otherwise, never a value the database chokes on)."""
    after = decode_cursor(cursor)
    key, label = after.get("k"), after.get("l")
    if not (isinstance(key, str) and re.fullmatch(KEY_PATTERN, key)
            and isinstance(label, str) and re.fullmatch(LABEL_PATTERN, label)):
        raise BadRequest(MALFORMED_CURSOR)
    lab = SystemPromptLabel
    return (tuple_(lab.prompt_key, lab.scope_id, lab.label)
            > tuple_(literal(key), literal(cursor_uuid(cursor, "s")), literal(label)))


async def list_labels(session: AsyncSession, actor: Principal, *, key: str | None = None,
                      limit: int, cursor: str | None) -> tuple[list[LabelOut], str | None]:
    """One page of the labels of the actor's scopes, by key, scope and label."""
    stmt = (select(SystemPromptLabel, SystemPrompt.version)
            .join(SystemPrompt, SystemPrompt.id == SystemPromptLabel.prompt_id)
            .where(_own_scopes(actor, SystemPromptLabel.scope_id)))
    if key is not None:
        stmt = stmt.where(SystemPromptLabel.prompt_key == key)
    if cursor is not None:
        stmt = stmt.where(_after_label(cursor))
    rows = (await session.execute(stmt.order_by(SystemPromptLabel.prompt_key,
                                                SystemPromptLabel.scope_id,
                                                SystemPromptLabel.label).limit(limit + 1))).all()
    return page_of([_label_out(lab, version) for lab, version in rows], limit, _label_cursor)


async def list_keys(session: AsyncSession, actor: Principal, *,
                    category: str | None = None) -> list[KeyOut]:
    """Each key of the actor's scopes: versions, labels and usage per scope."""
    p = SystemPrompt
    # A key's category is its latest version's; ``category`` picks whole keys by it (the
    # counts and labels are always of all the key's versions, never of some).
    latest_category: ColumnElement[str] = func.array_agg(
        aggregate_order_by(p.prompt_category, p.version.desc()))[1]
    stmt = (select(p.prompt_key, p.user_id, p.group_id, func.count(),
                   func.max(p.version), func.sum(p.usage_count),
                   func.sum(p.success_rate * p.outcome_count),
                   func.sum(p.outcome_count), latest_category)
            .where(_own_scopes(actor, p.scope_id))
            .group_by(p.prompt_key, p.user_id, p.group_id)
            .order_by(p.prompt_key, p.user_id.is_(None), p.group_id.is_(None)).limit(1000))
    if category is not None:
        stmt = stmt.having(latest_category == composed(category))  # as stored
    rows = (await session.execute(stmt)).all()
    # The labels of the keys listed (at most MAX_LABELS each), not the first so many of all.
    labels: dict[tuple[str, uuid.UUID | None, uuid.UUID | None], dict[str, int]] = {}
    if rows:
        scoped = [(r[1] or r[2] or NIL_SCOPE, r[0]) for r in rows]
        found = await session.execute(
            select(SystemPromptLabel.prompt_key, SystemPromptLabel.user_id,
                   SystemPromptLabel.group_id, SystemPromptLabel.label, SystemPrompt.version)
            .join(SystemPrompt, SystemPrompt.id == SystemPromptLabel.prompt_id)
            .where(tuple_(SystemPromptLabel.scope_id, SystemPromptLabel.prompt_key)
                   .in_(scoped)))
        for key, user_id, group_id, label, version in found:
            labels.setdefault((key, user_id, group_id), {})[label] = version
    out = []
    for key, user_id, group_id, count, latest, usage, successes, outcomes, cat in rows:
        out.append(KeyOut(
            prompt_key=key, prompt_category=cat or "general",
            scope="user" if user_id else "group" if group_id else "factory",
            user_id=user_id, group_id=group_id, versions=count, latest_version=latest,
            labels=labels.get((key, user_id, group_id), {}), usage_count=int(usage or 0),
            success_rate=float(successes or 0) / outcomes if outcomes else None))
    return out


# --- resolution and rendering -----------------------------------------------------------


async def resolve(session: AsyncSession, user_id: uuid.UUID | None, key: str,
                  label: str = DEFAULT_LABEL) -> SystemPrompt | None:
    """The version ``key`` resolves to for ``user_id`` (None: the factory's), or None."""
    row: SystemPrompt | None = await session.scalar(
        select(SystemPrompt).from_statement(RESOLVE_SQL),
        {"uid": user_id, "nil": NIL_SCOPE, "key": key, "label": label})
    return row


async def resolve_for(session: AsyncSession, actor: Principal, key: str,
                      label: str = DEFAULT_LABEL) -> SystemPrompt:
    row = await resolve(session, actor.user_id, key, label)
    if row is None:
        raise NotFound(f"no active version of prompt {key!r} has the label {label!r} in your "
                       "scopes (yours, your groups', the factory's)")
    return row


async def find_version(session: AsyncSession, actor: Principal, key: str, *,
                       version: int | None = None, label: str | None = None) -> SystemPrompt:
    """``--version N`` (the first scope in resolution order that has it) or ``--label``."""
    if version is None:
        return await resolve_for(session, actor, key, label or DEFAULT_LABEL)
    row: SystemPrompt | None = await session.scalar(
        select(SystemPrompt).from_statement(VERSION_SQL),
        {"uid": actor.user_id, "nil": NIL_SCOPE, "key": key, "version": version})
    if row is None:
        raise NotFound(f"prompt {key!r} has no version {version} in your scopes")
    return row


def render_row(row: SystemPrompt, values: Mapping[str, Any], *,
               ignore_unknown: bool = False) -> str:
    return render(row.prompt_text, row.variables, values, ignore_unknown=ignore_unknown)


@dataclass(frozen=True)
class Used:
    """A prompt resolved and rendered for a chat reply or a run."""

    prompt_id: uuid.UUID
    version: int
    text: str


async def use(session: AsyncSession, user_id: uuid.UUID | None, key: str,
              label: str = DEFAULT_LABEL, values: Mapping[str, Any] | None = None) -> Used | None:
    """Resolve, render with Roost's values (those the version defines) and count the use;
    None when no version resolves.  A version whose required variable Roost cannot
    supply is a 422 naming it (the caller's request fails visibly, not silently)."""
    found = await resolve_cached(session, user_id, key, label)
    if found is None:
        return None
    rendered = render(found.prompt_text, found.variables, values or {}, ignore_unknown=True)
    await record_use(session, found.id)
    return Used(prompt_id=found.id, version=found.version, text=rendered)


async def resolve_cached(session: AsyncSession, user_id: uuid.UUID | None, key: str,
                         label: str = DEFAULT_LABEL) -> cache.Resolved | None:
    """:func:`resolve` through the process's cache (roost.prompts.cache: dropped by
    NOTIFY on any change a resolution depends on; not used while nobody listens)."""
    entry = (user_id, key, label)
    cached = runtime.serves(session)  # the cache is this database's
    if cached:
        hit, found = cache.CACHE.get(entry)
        if hit:
            return found
    generation = cache.CACHE.generation
    row = await resolve(session, user_id, key, label)
    if row is None:
        if cached:
            cache.CACHE.put(entry, None, generation)
        return None
    if not cached:
        return cache.Resolved(id=row.id, version=row.version, prompt_text=row.prompt_text,
                              variables=tuple(row.variables or ()))
    # One copy of the version for every entry that resolves to it (cache.shared).
    resolved, fits = cache.shared(row.id, row.version, row.prompt_text, row.variables or ())
    if fits:
        cache.CACHE.put(entry, resolved, generation)
    return resolved


# --- usage ------------------------------------------------------------------------------


async def record_use(session: AsyncSession, prompt_id: uuid.UUID) -> None:
    await session.execute(text("SELECT roost_prompt_used(:id)"), {"id": prompt_id})


async def record_outcome(session: AsyncSession, prompt_id: uuid.UUID, success: bool) -> None:
    """A finished run that used the version: success_rate is the running mean."""
    await session.execute(text("SELECT roost_prompt_outcome(:id, :ok)"),
                          {"id": prompt_id, "ok": success})


async def record_rating(session: AsyncSession, prompt_id: uuid.UUID, rating: float | None,
                        previous: float | None = None) -> None:
    """Feedback (0-5) on answers the version produced: average_satisfaction, the running
    mean; ``previous``: the rating this one replaces (counted once, not twice); ``rating``
    None: ``previous`` was cleared and leaves the mean (migration 1160)."""
    await session.execute(text("SELECT roost_prompt_rated(:id, :r, :p)"),
                          {"id": prompt_id, "r": rating, "p": previous})


async def record_session_rating(session: AsyncSession, session_id: uuid.UUID,
                                prompt_id: uuid.UUID | None, rating: float | None) -> None:
    """A chat session's rating (None: cleared): its previous rating leaves the version that
    counted it, ``rating`` counts in ``prompt_id`` (the version its replies use now; None:
    no reply yet, no version to count it) (migration 1200)."""
    await session.execute(text("SELECT roost_session_rated(:sid, :id, :r)"),
                          {"sid": session_id, "id": prompt_id, "r": rating})


# --- factory defaults -------------------------------------------------------------------


@dataclass(frozen=True)
class FactoryPrompt:
    key: str
    name: str
    category: str
    text: str
    description: str
    variables: tuple[Mapping[str, Any], ...] = ()


DATE_VARIABLE: Final[Mapping[str, Any]] = {
    "name": "date", "type": "string", "required": False,
    "description": "Today's date (UTC, ISO 8601)"}

AGENT_SYSTEM: Final = FactoryPrompt(
    key="agent.system", name="Agent instructions", category="agents",
    text=("You are {{agent_name}}, an agent working for {{user_name}}. Today is {{date}}. "
          "Use the tools you are given when they help; say what you did and what you "
          "could not do."),
    description="For agents that set config.system_prompt_key to agent.system",
    variables=({"name": "agent_name", "type": "string", "required": True,
                "description": "The agent's name"},
               {"name": "user_name", "type": "string", "required": False, "default": "the user",
                "description": "The run's user"},
               DATE_VARIABLE),
)


def factory_defaults(chat_system_prompt: str | None) -> list[FactoryPrompt]:
    """What Roost itself uses: ``agent.system``, and ``chat.system`` when
    ROOST_CHAT_SYSTEM_PROMPT is set (unset: chat sessions have no system message unless a
    user or group publishes one, as before prompts existed)."""
    out = [AGENT_SYSTEM]
    if chat_system_prompt:
        # {{date}}, the value chat offers, is defined when the text uses it; any other
        # placeholder is refused by seed_factory (it would reach the model as braces).
        uses_date = "date" in placeholders(chat_system_prompt)
        out.append(FactoryPrompt(key="chat.system", name="Chat system message",
                                 category="chat", text=chat_system_prompt,
                                 description="Put before every chat session's history "
                                             "(ROOST_CHAT_SYSTEM_PROMPT)",
                                 variables=(DATE_VARIABLE,) if uses_date else ()))
    return out


def render_chat_setting(text: str, values: Mapping[str, Any]) -> str:
    """ROOST_CHAT_SYSTEM_PROMPT filled as its factory version is (``{{date}}`` only: the
    settings refuse any other placeholder), for when no ``chat.system`` version resolves."""
    return render(text, (DATE_VARIABLE,), values)


async def seed_factory(session: AsyncSession, defaults: Sequence[FactoryPrompt]) -> list[str]:
    """As the owner, at start-up: publish each default whose newest factory version has
    other text, with the production label (idempotent; an administrator's newer factory
    version of the same text stays).  Returns the keys published.  A default whose text
    uses a placeholder it does not define (ROOST_CHAT_SYSTEM_PROMPT with ``{{name}}``) is
    :class:`InvalidVariables`, as the same text published through the API is."""
    published = []
    for d in defaults:
        check_definitions(d.text, d.variables)
        await _lock(session, NIL_SCOPE, d.key)  # concurrent start-ups: one publishes
        newest = await session.scalar(
            select(SystemPrompt.prompt_text).where(SystemPrompt.scope_id == NIL_SCOPE,
                                                   SystemPrompt.prompt_key == d.key)
            .order_by(SystemPrompt.version.desc()).limit(1))
        if newest == d.text:
            continue
        row = await _insert_version(
            session, user_id=None, group_id=None, key=d.key, text_=d.text, name=d.name,
            category=d.category, description=d.description,
            variables=[dict(v) for v in d.variables], created_by=None)
        await _move_label(session, row, DEFAULT_LABEL)
        await record(session, "prompt.publish", resource_type=RESOURCE, resource_id=row.id,
                     changes={"prompt_key": d.key, "version": row.version, "scope": "factory",
                              "label": DEFAULT_LABEL, "factory": True})
        published.append(d.key)
    return published

