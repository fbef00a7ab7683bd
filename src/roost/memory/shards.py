"""The sharded memory store, ``distributed_memory`` (docs/scale.md).

The table is hash-partitioned by ``shard_key`` into ``ROOST_MEMORY_SHARDS`` partitions
``distributed_memory_p<N>`` (migration 0700); its primary key is ``(shard_key, id)``.
The three columns that make it a store of shards mean:

``shard_key``
    the memory scope a row belongs to, from :func:`shard_key_for`: the owner's user id
    (``"0190...-..."``, the canonical UUID text), or, for a row scoped to one of their
    personas, ``"<user id>:<persona id>"`` with the persona id in 22 characters of
    unpadded base64url (the column holds 64 characters; a second canonical UUID would
    not fit).  A persona's rows hash on their own, so one user's personas spread over
    partitions (Citus shards) while every row of one scope stays in one.
``node_id``
    the Roost node that wrote the row: ``ROOST_MEMORY_NODE_ID``, default the host name.
``replicated_to``
    the other nodes (Roost node names or Citus placements, as whoever copies the row
    names them) that hold a copy; ``[]`` when written.  Roost itself copies nothing:
    :func:`mark_replicated` is what a replicator calls after copying a row.  Under
    Citus, where the copies are Citus's shard placements, Citus does not update it.

Routing: every read and write of one row or one scope names ``shard_key`` in its
``WHERE`` clause (:func:`lookup`), so PostgreSQL prunes the scan to one partition, and
Citus routes the statement to one shard, with no change to this module.  The one
exception is :func:`list_rows` with ``every_persona=True`` (a user's rows across all
their scopes, by ``user_id``), which reads every partition.

Row-level security (migration 0700) shows a user only their rows; each function also
checks the actor itself (another tenant's row is a 404 like an unknown one).
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.config import get_settings
from roost.errors import Forbidden, NotFound, Unprocessable
from roost.inputs import holds_nul
from roost.memory.models import MAX_CONTENT_CHARS, DistributedMemory
from roost.memory.schemas import ScopeIn
from roost.memory.service import resolve_scope
from roost.pagination import DEFAULT_LIMIT, newest_first
from roost.principal import Principal

RESOURCE: Final = "distributed_memory"
TABLE: Final = "distributed_memory"
SHARD_KEY_CHARS: Final = 64
MAX_EMBEDDING_DIMENSIONS: Final = 16_000  # pgvector's limit for ``vector``
MAX_NODE_CHARS: Final = 255
_PERSONA_CHARS: Final = 22  # 16 bytes in unpadded base64url
_FLOAT32_MAX: Final = 3.4028234663852886e38  # pgvector stores float4: larger is an overflow
_BOUND = re.compile(r"FOR VALUES WITH \(modulus (\d+), remainder (\d+)\)", re.IGNORECASE)


# --------------------------------------------------------------------------- keys


def shard_key_for(user_id: uuid.UUID, persona_id: uuid.UUID | None = None) -> str:
    """The shard key of a scope: the user id, or ``"<user id>:<persona id, base64url>"``."""
    if persona_id is None:
        return str(user_id)
    persona = base64.urlsafe_b64encode(persona_id.bytes).rstrip(b"=").decode()
    return f"{user_id}:{persona}"


def scope_of(shard_key: str) -> tuple[uuid.UUID, uuid.UUID | None]:
    """The ``(user_id, persona_id)`` a key from :func:`shard_key_for` names (ValueError
    for anything else)."""
    user, sep, persona = shard_key.partition(":")
    user_id = uuid.UUID(user)
    if str(user_id) != user:
        raise ValueError("the user part of a shard key is a canonical UUID")
    if not sep:
        return user_id, None
    if len(persona) != _PERSONA_CHARS:
        raise ValueError("the persona part of a shard key is 22 characters of base64url")
    persona_id = uuid.UUID(bytes=base64.urlsafe_b64decode(persona + "=="))
    if shard_key_for(user_id, persona_id) != shard_key:
        raise ValueError("not a shard key")
    return user_id, persona_id


def this_node() -> str:
    """This Roost node's name (``ROOST_MEMORY_NODE_ID``, default the host name)."""
    return get_settings().memory_node_id


# --------------------------------------------------------------------------- rows


def lookup(shard_key: str, row_id: uuid.UUID) -> Select[DistributedMemory]:
    """One row by its full primary key: the statement names ``shard_key``, so one
    partition (one Citus shard) is read."""
    _check_key(shard_key)
    return select(DistributedMemory).where(DistributedMemory.shard_key == shard_key,
                                           DistributedMemory.id == row_id)


def scope_rows(shard_key: str) -> Select[DistributedMemory]:
    """Every row of one scope: one partition."""
    return select(DistributedMemory).where(DistributedMemory.shard_key == shard_key)


def _check_key(shard_key: str) -> None:
    # PostgreSQL keeps no NUL in text: no row has such a key (not the database's error).
    if "\x00" in shard_key:
        raise NotFound("no stored memory under that shard key")


def _check_content(content: str) -> str:
    if "\x00" in content:
        raise Unprocessable("content must not contain a NUL character", extra={"field": "content"})
    if not content.strip():
        raise Unprocessable("content is empty", extra={"field": "content"})
    if len(content) > MAX_CONTENT_CHARS:
        raise Unprocessable(f"content is longer than {MAX_CONTENT_CHARS} characters",
                            extra={"field": "content"})
    return content


def _check_embedding(embedding: Sequence[float] | None) -> list[float] | None:
    if embedding is None:
        return None
    values = [float(v) for v in embedding]
    if not 1 <= len(values) <= MAX_EMBEDDING_DIMENSIONS:
        raise Unprocessable(f"an embedding has 1 to {MAX_EMBEDDING_DIMENSIONS} dimensions",
                            extra={"field": "embedding"})
    if not all(math.isfinite(v) for v in values):
        raise Unprocessable("an embedding's values are finite numbers", extra={"field": "embedding"})
    if any(abs(v) > _FLOAT32_MAX for v in values):
        raise Unprocessable(f"an embedding's values are within ±{_FLOAT32_MAX:.7g} (float4)",
                            extra={"field": "embedding"})
    return values


def _check_nodes(nodes: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(nodes))  # in order, once each
    if any(not n or len(n) > MAX_NODE_CHARS or "\x00" in n for n in names):
        raise Unprocessable(f"a node name has 1 to {MAX_NODE_CHARS} characters, no NUL",
                            extra={"field": "nodes"})
    return names


def _visible(actor: Principal, row: DistributedMemory | None) -> bool:
    return row is not None and (actor.is_admin or row.user_id == actor.user_id)


async def put(
    session: AsyncSession, actor: Principal, *, content: str,
    embedding: Sequence[float] | None = None, metadata: dict[str, Any] | None = None,
    persona_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None,
    node_id: str | None = None,
) -> DistributedMemory:
    """Store one row in the scope ``(user, persona)``: the actor's own, or, for an
    administrator, ``user_id``'s.  Another tenant's user or persona id is a 404."""
    scope = await resolve_scope(session, actor, ScopeIn(user_id=user_id, persona_id=persona_id))
    node = node_id if node_id is not None else this_node()
    if not node or len(node) > MAX_NODE_CHARS or "\x00" in node:
        raise Unprocessable(f"a node name has 1 to {MAX_NODE_CHARS} characters, no NUL",
                            extra={"field": "node_id"})
    if holds_nul(metadata):
        raise Unprocessable("metadata must not contain a NUL character", extra={"field": "metadata"})
    row = DistributedMemory(
        shard_key=shard_key_for(scope.user_id, scope.persona_id), user_id=scope.user_id,
        persona_id=scope.persona_id, content=_check_content(content), embedding=_check_embedding(embedding),
        memory_metadata=dict(metadata or {}), node_id=node, replicated_to=[],
    )
    session.add(row)
    await session.flush()
    await record(session, "memory.shard.put", user_id=actor.user_id, persona_id=scope.persona_id,
                 resource_type=RESOURCE, resource_id=row.id,
                 metadata={"shard_key": row.shard_key, "node_id": node})
    return row


async def get(session: AsyncSession, actor: Principal, shard_key: str,
              row_id: uuid.UUID) -> DistributedMemory:
    """One row by ``(shard_key, id)``; a 404 when there is none the actor may see."""
    row = await session.scalar(lookup(shard_key, row_id))
    if row is None or not _visible(actor, row):
        raise NotFound(f"no stored memory with id {row_id} under that shard key")
    return row


async def list_rows(
    session: AsyncSession, actor: Principal, *, user_id: uuid.UUID | None = None,
    persona_id: uuid.UUID | None = None, every_persona: bool = False,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[DistributedMemory], str | None]:
    """Newest first, the rows of one scope (one partition), or with ``every_persona``
    the user's rows in all their scopes (by ``user_id``: every partition is read)."""
    if every_persona and persona_id is not None:
        raise Unprocessable("name a persona or ask for every persona, not both",
                            extra={"field": "persona_id"})
    scope = await resolve_scope(session, actor, ScopeIn(user_id=user_id, persona_id=persona_id))
    if every_persona:
        stmt = select(DistributedMemory).where(DistributedMemory.user_id == scope.user_id)
    else:
        stmt = scope_rows(shard_key_for(scope.user_id, scope.persona_id))
    return await newest_first(session, stmt, DistributedMemory.created_at, DistributedMemory.id,
                              limit=limit, cursor=cursor)


async def delete(session: AsyncSession, actor: Principal, shard_key: str, row_id: uuid.UUID) -> None:
    row = await session.scalar(lookup(shard_key, row_id).with_for_update())
    if row is None or not _visible(actor, row):
        raise NotFound(f"no stored memory with id {row_id} under that shard key")
    await session.delete(row)
    await session.flush()
    await record(session, "memory.shard.delete", user_id=actor.user_id, resource_type=RESOURCE,
                 resource_id=row_id, metadata={"shard_key": shard_key})


async def mark_replicated(session: AsyncSession, actor: Principal, shard_key: str,
                          row_id: uuid.UUID, nodes: Iterable[str]) -> DistributedMemory:
    """Record that ``nodes`` now hold a copy of the row (added to ``replicated_to``, each
    once).  For replicators: administrators and system work only."""
    if not actor.is_admin:
        raise Forbidden("recording replicas needs an administrator or system work")
    added = _check_nodes(nodes)
    row = await session.scalar(lookup(shard_key, row_id).with_for_update())
    if row is None:
        raise NotFound(f"no stored memory with id {row_id} under that shard key")
    row.replicated_to = _check_nodes([*row.replicated_to, *added])
    await session.flush()
    await record(session, "memory.shard.replicated", user_id=actor.user_id,
                 resource_type=RESOURCE, resource_id=row_id,
                 metadata={"shard_key": shard_key, "nodes": added})
    return row


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Partition:
    name: str
    modulus: int
    remainder: int
    rows: int


async def layout(session: AsyncSession) -> list[Partition]:
    """The partitions of ``distributed_memory`` with their hash bounds and row counts
    (the rows the session may see: run it as the owner to count them all)."""
    parts = (await session.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:table AS regclass)"), {"table": TABLE})).all()
    counted = await session.execute(text(
        "SELECT tableoid::regclass::text, count(*) FROM distributed_memory GROUP BY 1"))
    counts: dict[str, int] = {str(row[0]): int(row[1]) for row in counted.tuples()}
    found = []
    for name, bound in parts:
        match = _BOUND.search(str(bound or ""))
        if match is None:  # not a hash partition: someone changed the table by hand
            raise ValueError(f"partition {name} of {TABLE} has no hash bound ({bound})")
        found.append(Partition(str(name), int(match[1]), int(match[2]), counts.get(str(name), 0)))
    return sorted(found, key=lambda p: (p.modulus, p.remainder, p.name))


async def partition_for_key(session: AsyncSession, shard_key: str) -> str:
    """The partition a key hashes to, by PostgreSQL's own hash partitioning function."""
    if "\x00" in shard_key:
        raise NotFound(f"no partition of {TABLE} takes that shard key")
    name = await session.scalar(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid, "
        "LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), "
        "'modulus (\\d+), remainder (\\d+)') AS b(m) "
        "WHERE i.inhparent = CAST(:table AS regclass) "
        "AND satisfies_hash_partition(CAST(:table AS regclass)::oid, b.m[1]::int, b.m[2]::int, "
        "CAST(:key AS varchar))"), {"table": TABLE, "key": shard_key})
    if name is None:
        raise NotFound(f"no partition of {TABLE} takes that shard key")
    return str(name)
