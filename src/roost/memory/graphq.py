"""Queries over the temporal entity graph (``memory_entities``, ``memory_relations``):
neighbours of an entity, paths between two, and an entity's history.

Relations are followed in both directions.  Every query looks at one user's graph
(optionally one persona's) and at the relations true *now* (``valid_from`` now or
earlier, ``valid_to`` NULL or later than now) or, with ``as_of``, at that moment
(``valid_from <= as_of < valid_to``).

Both traversals are recursive CTEs that terminate on any graph, cycles included:

* :func:`neighbours` walks level by level; the recursive term's ``UNION`` keeps one row
  per (entity, depth), so a level has at most one row per entity and the walk stops at
  ``depth`` (at most ``MAX_DEPTH``): the work is bounded by depth x relations, however
  many cycles there are.  Each entity is reported at its smallest depth.
* :func:`paths` enumerates simple paths (the visited entities are carried in an array and
  never re-entered), pruned by a first recursive pass that computes every entity's
  distance to the target: a path is only extended where the target is still reachable
  within ``max_hops`` (at most ``MAX_HOPS``).  Paths come out shortest first and the
  walk stops as soon as ``limit`` of them are found.  The number of simple paths can
  still grow as (entities per hop) ** hops: layers of 14 entities each linked to the
  next made six hops 7 s, of 20 the statement timeout; so the walk has its own time
  limit (``PATHS_TIME_LIMIT_MS``) and past it the answer is a 422 asking for fewer hops.

Each step looks relations up by the indexes on ``(source_entity_id, valid_to)`` and
``(target_entity_id, valid_to)`` from the entities reached so far.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.errors import sqlstate
from roost.errors import BadRequest, NotFound, Unprocessable
from roost.memory import service
from roost.memory.graph import KEPT_KEY_CHARS, full_key, normalize
from roost.memory.schemas import ScopeIn
from roost.pagination import MALFORMED_CURSOR, decode_cursor, encode_cursor, page_of
from roost.principal import Principal

MAX_DEPTH: Final = 6
MAX_HOPS: Final = 6
DEFAULT_PATHS: Final = 20
MAX_PATHS: Final = 200
DEFAULT_NEIGHBOURS: Final = 200
MAX_NEIGHBOURS: Final = 1000
#: Relations shown per neighbour (those linking it to the level before it).
EDGES_PER_NEIGHBOUR: Final = 5
PATHS_TIME_LIMIT_MS: Final = 2000


@dataclass(frozen=True)
class EntityRef:
    id: uuid.UUID
    name: str
    entity_type: str
    user_id: uuid.UUID
    persona_id: uuid.UUID | None


@dataclass(frozen=True)
class Edge:
    """One relation row: ``source --relation--> target``, true from ``valid_from`` until
    ``valid_to`` (None: still true), asserted by ``memory_id``."""

    id: uuid.UUID
    source_id: uuid.UUID
    source_name: str
    relation: str
    target_id: uuid.UUID
    target_name: str
    valid_from: datetime
    valid_to: datetime | None
    memory_id: uuid.UUID | None
    memory_content: str | None = None

    def current_at(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_to is None or self.valid_to > moment)


@dataclass(frozen=True)
class Neighbour:
    entity: EntityRef
    depth: int
    edges: list[Edge]
    """Relations linking it to an entity one level closer (up to ``EDGES_PER_NEIGHBOUR``)."""


@dataclass(frozen=True)
class Path:
    entities: list[EntityRef]
    edges: list[Edge]

    @property
    def hops(self) -> int:
        return len(self.edges)


@dataclass(frozen=True)
class EntitySummary:
    entity: EntityRef
    current_relations: int
    all_relations: int


# --------------------------------------------------------------------------- resolution


def _owner(actor: Principal, user_id: uuid.UUID | None) -> uuid.UUID:
    owner = user_id or actor.user_id
    if owner is None:
        raise Unprocessable("name the user whose graph this is (user_id)", extra={"field": "user_id"})
    if owner != actor.user_id and not actor.is_admin:
        raise NotFound(f"no user with id {owner}")
    return owner


async def _check_persona(session: AsyncSession, actor: Principal, owner: uuid.UUID,
                         persona_id: uuid.UUID | None) -> None:
    """404 for a persona the owner's memory may not be scoped to (another tenant's, or
    unknown), as everywhere else, rather than an empty answer."""
    if persona_id is not None:
        await service.resolve_scope(session, actor, ScopeIn(user_id=owner, persona_id=persona_id))


_ENTITY_COLUMNS = "e.id, e.name, e.entity_type, e.user_id, e.persona_id"
CUT_SLACK = 100  # rows with a cut key fetched beyond the limit by find_entities


def _entity(row: Any) -> EntityRef:
    return EntityRef(row.id, row.name, row.entity_type, row.user_id, row.persona_id)


async def resolve_entities(
    session: AsyncSession, actor: Principal, ref: str | uuid.UUID, *,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    field: str = "entity",
) -> list[EntityRef]:
    """The entities ``ref`` names: an id (one entity the actor may see), or a name,
    matched as entity names are (case and spacing aside) among the user's entities (one
    per persona that has it; ``persona_id`` narrows).  None found: 404.  ``field``: the
    parameter a blank name is named by in the 422 (``source``, ``target``)."""
    entity_id = ref if isinstance(ref, uuid.UUID) else _as_uuid(ref)
    if entity_id is not None:
        row = (await session.execute(text(
            f"SELECT {_ENTITY_COLUMNS} FROM memory_entities e WHERE e.id = :id"),  # noqa: S608
            {"id": entity_id})).one_or_none()
        if row is not None and (actor.is_admin or row.user_id == actor.user_id) \
                and (user_id is None or row.user_id == user_id):
            await _check_persona(session, actor, row.user_id, persona_id)
            return [_entity(row)]
        if isinstance(ref, uuid.UUID):
            raise NotFound(f"no entity with id {entity_id}")
        # No such id: a name in the form of one (an order number...) is still a name.
    owner = _owner(actor, user_id)
    await _check_persona(session, actor, owner, persona_id)
    name = normalize(str(ref))
    if not name:
        raise Unprocessable(f"{field}: name an entity (it shows nothing)",
                            extra={"field": field})
    sql = (f"SELECT {_ENTITY_COLUMNS} FROM memory_entities e "  # noqa: S608
           "WHERE e.user_id = :uid AND e.normalized_name = :name")
    params: dict[str, Any] = {"uid": owner, "name": name}
    if persona_id is not None:
        sql += " AND e.persona_id = :pid"
        params["pid"] = persona_id
    rows = (await session.execute(text(sql + " ORDER BY e.persona_id NULLS FIRST, e.id"),
                                  params)).all()
    if not rows:
        raise NotFound(f"no entity with id {entity_id}" if entity_id is not None
                       else f"no entity named {str(ref)[:255]!r}")
    return [_entity(r) for r in rows]


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _relation_where(as_of: datetime | None, alias: str = "r") -> str:
    """The relations true now, or at ``:as_of``, of ``:uid`` (and ``:pid`` if bound)."""
    if as_of is None:
        return (f"{alias}.user_id = :uid AND {alias}.valid_from <= now() "
                f"AND ({alias}.valid_to IS NULL OR {alias}.valid_to > now())")
    return (f"{alias}.user_id = :uid AND {alias}.valid_from <= :as_of "
            f"AND ({alias}.valid_to IS NULL OR {alias}.valid_to > :as_of)")


def _steps(from_column: str, as_of: datetime | None, persona: bool) -> str:
    """A LATERAL subquery: the relations touching ``from_column``'s entity, each as
    (relation id, the entity at its other end), in both directions."""
    where = _relation_where(as_of) + (" AND r.persona_id = :pid" if persona else "")
    return (
        "LATERAL ("  # noqa: S608 (fixed clauses only)
        f"SELECT r.id AS rel_id, r.target_entity_id AS other FROM memory_relations r "
        f"WHERE r.source_entity_id = {from_column} AND {where} "
        "UNION ALL "
        f"SELECT r.id, r.source_entity_id FROM memory_relations r "
        f"WHERE r.target_entity_id = {from_column} AND {where}) x"
    )


def _params(owner: uuid.UUID, persona_id: uuid.UUID | None, as_of: datetime | None,
            **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"uid": owner, **extra}
    if persona_id is not None:
        params["pid"] = persona_id
    if as_of is not None:
        params["as_of"] = as_of
    return params


_EDGE_SELECT = """
SELECT r.id, r.source_entity_id, s.name AS source_name, r.relation, r.target_entity_id,
       t.name AS target_name, r.valid_from, r.valid_to, r.memory_id{content}
FROM memory_relations r
JOIN memory_entities s ON s.id = r.source_entity_id
JOIN memory_entities t ON t.id = r.target_entity_id
"""


def _edge(row: Any, content: bool = False) -> Edge:
    return Edge(row.id, row.source_entity_id, row.source_name, row.relation,
                row.target_entity_id, row.target_name, row.valid_from, row.valid_to,
                row.memory_id, row.memory_content if content else None)


# --------------------------------------------------------------------------- queries


async def find_entities(
    session: AsyncSession, actor: Principal, q: str | None = None, *,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    limit: int = 50,
) -> list[EntitySummary]:
    """The user's entities whose name contains ``q`` (all when None), most connected
    first, with how many relations they have now and ever."""
    # The scope's checks: another user's id, or an unknown one (administrators), and a
    # persona the user's memory may not have, are 404s like everywhere else.
    owner = (await service.resolve_scope(
        session, actor, ScopeIn(user_id=user_id, persona_id=persona_id))).user_id
    where = ["e.user_id = :uid"]
    params: dict[str, Any] = {"uid": owner, "limit": limit}
    if persona_id is not None:
        where.append("e.persona_id = :pid")
        params["pid"] = persona_id
    wanted = full_key(q) if q is not None else ""
    if wanted:
        escaped = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # A key cut to its first KEPT_KEY_CHARS and a digest (a long name) holds no part
        # of the name past the cut: such rows are candidates, checked on their full name
        # below (rare: over-fetched by CUT_SLACK so the limit still fills).
        where.append("(e.normalized_name LIKE :pattern OR (length(e.normalized_name) = "
                     f"{KEPT_KEY_CHARS + 17} AND substr(e.normalized_name, "
                     f"{KEPT_KEY_CHARS + 1}, 1) = '#'))")
        params["pattern"] = f"%{escaped}%"
        params["limit"] = limit + CUT_SLACK
    sql = f"""
SELECT {_ENTITY_COLUMNS}, e.normalized_name, c.current_relations, c.all_relations
FROM memory_entities e,
LATERAL (
  SELECT count(*) FILTER (WHERE r.valid_from <= now()
                           AND (r.valid_to IS NULL OR r.valid_to > now())) AS current_relations,
         count(*) AS all_relations
  FROM memory_relations r WHERE r.source_entity_id = e.id OR r.target_entity_id = e.id
) c
WHERE {" AND ".join(where)}
ORDER BY c.current_relations DESC, e.normalized_name, e.id
LIMIT :limit OFFSET :offset"""  # noqa: S608 (fixed clauses only)
    params["offset"] = 0
    found: list[Any] = []
    while True:
        rows = (await session.execute(text(sql), params)).all()
        if not wanted:
            found = list(rows)
            break
        found += [r for r in rows if wanted in r.normalized_name[:KEPT_KEY_CHARS]
                  or wanted in full_key(r.name)]
        # Candidates that fail the check on their full name may fill a whole page (many
        # long names): the next page, until the limit fills or the rows run out.
        if len(found) >= limit or len(rows) < params["limit"]:
            break
        params["offset"] += len(rows)
    return [EntitySummary(_entity(r), int(r.current_relations), int(r.all_relations))
            for r in found[:limit]]


async def neighbours(
    session: AsyncSession, actor: Principal, entity_name_or_id: str | uuid.UUID, *,
    as_of: datetime | None = None, depth: int = 1, user_id: uuid.UUID | None = None,
    persona_id: uuid.UUID | None = None, limit: int = DEFAULT_NEIGHBOURS,
) -> list[Neighbour]:
    """The entities within ``depth`` relations of the named entity (now, or ``as_of``),
    nearest first, each with the relations that reach it."""
    if not 1 <= depth <= MAX_DEPTH:
        raise Unprocessable(f"depth must be within 1..{MAX_DEPTH}", extra={"field": "depth"})
    if not 1 <= limit <= MAX_NEIGHBOURS:
        raise Unprocessable(f"limit must be within 1..{MAX_NEIGHBOURS}", extra={"field": "limit"})
    start = await resolve_entities(session, actor, entity_name_or_id, user_id=user_id,
                                   persona_id=persona_id)
    owner = start[0].user_id
    persona = persona_id is not None
    link = _relation_where(as_of, "l") + (" AND l.persona_id = :pid" if persona else "")
    sql = f"""
WITH RECURSIVE walk(entity_id, depth) AS (
  SELECT s, 0 FROM unnest(CAST(:start AS uuid[])) s
  UNION
  SELECT x.other, w.depth + 1 FROM walk w, {_steps("w.entity_id", as_of, persona)}
  WHERE w.depth < :depth
),
reached AS (SELECT entity_id, min(depth) AS depth FROM walk GROUP BY entity_id),
shown AS (
  SELECT n.entity_id, n.depth FROM reached n JOIN memory_entities e ON e.id = n.entity_id
  WHERE n.depth > 0 ORDER BY n.depth, e.normalized_name, e.id LIMIT :limit
)
SELECT n.depth, {_ENTITY_COLUMNS}, l.id AS rel_id
FROM shown n JOIN memory_entities e ON e.id = n.entity_id
LEFT JOIN LATERAL (
  SELECT l.id FROM memory_relations l JOIN reached p ON p.depth = n.depth - 1
    AND ((l.source_entity_id = p.entity_id AND l.target_entity_id = n.entity_id)
      OR (l.target_entity_id = p.entity_id AND l.source_entity_id = n.entity_id))
  WHERE {link}
  ORDER BY l.valid_from DESC, l.id LIMIT {EDGES_PER_NEIGHBOUR}
) l ON true
ORDER BY n.depth, e.normalized_name, e.id, l.id"""  # noqa: S608 (fixed clauses and ints)
    rows = (await session.execute(text(sql), _params(
        owner, persona_id, as_of, start=[e.id for e in start], depth=depth, limit=limit))).all()
    edges = await _edges(session, {r.rel_id for r in rows if r.rel_id is not None})
    found: dict[uuid.UUID, Neighbour] = {}
    for row in rows:
        item = found.get(row.id)
        if item is None:
            item = found[row.id] = Neighbour(_entity(row), int(row.depth), [])
        if row.rel_id is not None:
            item.edges.append(edges[row.rel_id])
    return list(found.values())


async def paths(
    session: AsyncSession, actor: Principal, source: str | uuid.UUID, target: str | uuid.UUID, *,
    max_hops: int = 3, as_of: datetime | None = None, user_id: uuid.UUID | None = None,
    persona_id: uuid.UUID | None = None, limit: int = DEFAULT_PATHS,
) -> list[Path]:
    """Simple paths (no entity twice) of at most ``max_hops`` relations from ``source``
    to ``target`` (now, or ``as_of``), shortest first, at most ``limit``."""
    if not 1 <= max_hops <= MAX_HOPS:
        raise Unprocessable(f"max_hops must be within 1..{MAX_HOPS}", extra={"field": "max_hops"})
    if not 1 <= limit <= MAX_PATHS:
        raise Unprocessable(f"limit must be within 1..{MAX_PATHS}", extra={"field": "limit"})
    sources = await resolve_entities(session, actor, source, user_id=user_id,
                                     persona_id=persona_id, field="source")
    owner = sources[0].user_id
    targets = await resolve_entities(session, actor, target, user_id=owner,
                                     persona_id=persona_id, field="target")
    persona = persona_id is not None
    sql = f"""
WITH RECURSIVE dist(entity_id, d) AS (
  SELECT t, 0 FROM unnest(CAST(:targets AS uuid[])) t
  UNION
  SELECT x.other, t.d + 1 FROM dist t, {_steps("t.entity_id", as_of, persona)}
  WHERE t.d < :max_hops
),
best AS (SELECT entity_id, min(d) AS d FROM dist GROUP BY entity_id),
walk(entity_id, hops, path, rels) AS (
  SELECT s, 0, ARRAY[s], ARRAY[]::uuid[] FROM unnest(CAST(:sources AS uuid[])) s
  WHERE s IN (SELECT entity_id FROM best)
  UNION ALL
  SELECT x.other, w.hops + 1, w.path || x.other, w.rels || x.rel_id
  FROM walk w, {_steps("w.entity_id", as_of, persona)}, best b
  WHERE b.entity_id = x.other AND w.hops + 1 + b.d <= :max_hops
    AND x.other <> ALL(w.path) AND w.entity_id <> ALL(CAST(:targets AS uuid[]))
)
SELECT path, rels FROM walk
WHERE entity_id = ANY(CAST(:targets AS uuid[])) AND hops > 0
LIMIT :limit"""  # noqa: S608 (fixed clauses only)
    params = _params(owner, persona_id, as_of, sources=[e.id for e in sources],
                     targets=[e.id for e in targets], max_hops=max_hops, limit=limit)
    rows = await _within_time_limit(session, sql, params, max_hops)
    if not rows:
        return []
    edges = await _edges(session, {rel for row in rows for rel in row.rels})
    entities = await _entities(session, {eid for row in rows for eid in row.path})
    found = [Path([entities[e] for e in row.path], [edges[r] for r in row.rels]) for row in rows]
    return sorted(found, key=lambda p: p.hops)  # already level by level; stable


async def _within_time_limit(session: AsyncSession, sql: str, params: dict[str, Any],
                             max_hops: int) -> list[Any]:
    """The path walk's rows, under ``PATHS_TIME_LIMIT_MS`` (transaction-local, restored
    after); past it a 422 (the transaction is then aborted: the request's answer)."""
    previous = await session.scalar(text(
        "SELECT current_setting('statement_timeout') || "
        "left(set_config('statement_timeout', :limit, true), 0)"),
        {"limit": f"{PATHS_TIME_LIMIT_MS}ms"})
    try:
        rows = list((await session.execute(text(sql), params)).all())
    except DBAPIError as exc:
        if sqlstate(exc) != "57014":  # not the statement timeout
            raise
        raise Unprocessable(
            f"the graph has too many paths of up to {max_hops} hops between these entities "
            f"to list them within {PATHS_TIME_LIMIT_MS / 1000:g} s: ask for fewer hops",
            extra={"field": "max_hops"}) from None
    await session.execute(text("SELECT set_config('statement_timeout', :previous, true)"),
                          {"previous": previous})
    return rows


async def entity_history(
    session: AsyncSession, actor: Principal, entity_name_or_id: str | uuid.UUID, *,
    user_id: uuid.UUID | None = None, persona_id: uuid.UUID | None = None,
    limit: int | None = None, cursor: str | None = None,
) -> tuple[list[EntityRef], list[Edge], str | None]:
    """The relations the entity has had, current and past, oldest first (by
    ``valid_from``, ``created_at``, id), each with its validity and the memory that
    asserted it: a page of ``limit`` after ``cursor`` and the cursor after it (None: the
    last page; ``limit`` None: every relation, for the CLI)."""
    found = await resolve_entities(session, actor, entity_name_or_id, user_id=user_id,
                                   persona_id=persona_id)
    params: dict[str, Any] = {"ids": [e.id for e in found]}
    after = ""
    if cursor is not None:
        params["after_from"], params["after_created"], params["after_id"] = _history_key(cursor)
        after = ("AND (r.valid_from, r.created_at, r.id) > (CAST(:after_from AS timestamptz), "
                 "CAST(:after_created AS timestamptz), CAST(:after_id AS uuid))")
    page = ""
    if limit is not None:
        page = "LIMIT :limit"
        params["limit"] = limit + 1
    sql = _EDGE_SELECT.format(content=", m.content AS memory_content, r.created_at") + f"""
LEFT JOIN memories m ON m.id = r.memory_id
WHERE (r.source_entity_id = ANY(CAST(:ids AS uuid[]))
       OR r.target_entity_id = ANY(CAST(:ids AS uuid[]))) {after}
ORDER BY r.valid_from, r.created_at, r.id {page}"""
    rows = (await session.execute(text(sql), params)).all()
    next_cursor = None
    if limit is not None:
        rows, next_cursor = page_of(rows, limit, lambda r: encode_cursor(
            {"f": r.valid_from.isoformat(), "c": r.created_at.isoformat(), "id": str(r.id)}))
    return found, [_edge(r, content=True) for r in rows], next_cursor


def _history_key(cursor: str) -> tuple[datetime, datetime, uuid.UUID]:
    """The (valid_from, created_at, id) after which an entity history's page starts."""
    after = decode_cursor(cursor)
    try:
        key = (datetime.fromisoformat(str(after["f"])), datetime.fromisoformat(str(after["c"])),
               uuid.UUID(str(after["id"])))
    except (KeyError, ValueError) as exc:
        raise BadRequest(MALFORMED_CURSOR) from exc
    if key[0].tzinfo is None or key[1].tzinfo is None:
        raise BadRequest(MALFORMED_CURSOR)
    try:  # a moment a UTC timestamp can hold (year 1 at +14:00 is year 0 in UTC)
        return key[0].astimezone(UTC), key[1].astimezone(UTC), key[2]
    except OverflowError as exc:
        raise BadRequest(MALFORMED_CURSOR) from exc


async def _edges(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Edge]:
    if not ids:
        return {}
    sql = _EDGE_SELECT.format(content="") + " WHERE r.id = ANY(CAST(:ids AS uuid[]))"
    rows = (await session.execute(text(sql), {"ids": list(ids)})).all()
    return {r.id: _edge(r) for r in rows}


async def _entities(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, EntityRef]:
    rows = (await session.execute(text(
        f"SELECT {_ENTITY_COLUMNS} FROM memory_entities e WHERE e.id = ANY(CAST(:ids AS uuid[]))"),  # noqa: S608
        {"ids": list(ids)})).all()
    return {r.id: _entity(r) for r in rows}
