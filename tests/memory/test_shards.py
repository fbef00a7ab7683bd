"""The sharded store: partition layout, routing by shard_key (partition pruning), rows in
the partition the hash names, row-level security, and docs/scale.md's SQL (the
repartitioning run as it is; the Citus statements against stubs with Citus's signatures)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Select, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import Persona
from roost.config import get_settings
from roost.db.engine import Database
from roost.errors import Forbidden, NotFound, Unprocessable
from roost.identity.tenancy import apply_principal
from roost.memory import shards
from roost.memory.models import DistributedMemory
from roost.principal import SYSTEM, Principal
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

SCALE_DOC = Path(__file__).resolve().parents[2] / "docs" / "scale.md"
REPARTITION_HEADING = "### Repartitioning"
CITUS_HEADING = "## Becoming a Citus distributed table"


def migrated_shards() -> int:
    """The partition count migration 0700 gave the test template (it reads the
    environment, default 8)."""
    return int(os.environ.get("ROOST_MEMORY_SHARDS", "8"))


def _as(user_id: uuid.UUID) -> Principal:
    return Principal(user_id=user_id, is_admin=False, kind="api_key")


@asynccontextmanager
async def scoped(database: Database, actor: Principal) -> AsyncIterator[AsyncSession]:
    """A transaction as the application role, scoped to ``actor`` (row-level security)."""
    async with database.transaction() as session:
        await apply_principal(session, actor)
        yield session


async def make_persona(database: Database, owner: uuid.UUID) -> uuid.UUID:
    async with database.transaction() as session:
        persona = Persona(owner_id=owner, name=f"persona-{uuid.uuid4().hex[:6]}")
        session.add(persona)
        await session.flush()
        return persona.id


def plan_relations(plan: Any) -> list[str]:
    """Every relation an EXPLAIN (FORMAT JSON) plan scans."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Relation Name" in node:
                found.append(node["Relation Name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return found


async def explain(session: AsyncSession, stmt: Select[Any]) -> list[str]:
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    plan = await session.scalar(text("EXPLAIN (FORMAT JSON) " + sql))
    return plan_relations(json.loads(plan) if isinstance(plan, str) else plan)


# --------------------------------------------------------------------------- layout


async def test_partition_layout(database: Database) -> None:
    expected = migrated_shards()
    async with database.transaction() as s:
        strategy = (await s.execute(text(
            "SELECT p.partstrat::text, p.partnatts, a.attname FROM pg_partitioned_table p "
            "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            "WHERE p.partrelid = 'distributed_memory'::regclass"))).one()
        children = (await s.execute(text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'distributed_memory'::regclass ORDER BY c.relname"))).all()
        pk = await s.scalar(text(
            "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_constraint c "
            "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
            "WHERE c.conrelid = 'distributed_memory'::regclass AND c.contype = 'p'"))
        layout = await shards.layout(s)
    assert tuple(strategy) == ("h", 1, "shard_key")  # HASH on shard_key alone
    assert pk == ["shard_key", "id"]
    assert len(children) == expected
    bounds = {name: bound for name, bound in children}
    for r in range(expected):
        assert bounds[f"distributed_memory_p{r}"] == (
            f"FOR VALUES WITH (modulus {expected}, remainder {r})")
    assert [(p.name, p.modulus, p.remainder, p.rows) for p in layout] == [
        (f"distributed_memory_p{r}", expected, r, 0) for r in range(expected)]


def test_shard_keys() -> None:
    user, persona = uuid.uuid4(), uuid.uuid4()
    assert shards.shard_key_for(user) == str(user)
    keyed = shards.shard_key_for(user, persona)
    assert keyed.startswith(f"{user}:") and len(keyed) <= shards.SHARD_KEY_CHARS
    assert shards.scope_of(keyed) == (user, persona)
    assert shards.scope_of(str(user)) == (user, None)
    assert shards.shard_key_for(user, persona) == keyed  # deterministic
    assert shards.shard_key_for(user, uuid.uuid4()) != keyed
    for bad in ("", "x", user.hex, f"{user}:", f"{user}:{'A' * 21}", f"{str(user).upper()}"):
        with pytest.raises(ValueError):
            shards.scope_of(bad)


# --------------------------------------------------------------------------- routing


async def test_lookup_by_shard_key_reads_one_partition(database: Database) -> None:
    alice, _ = await make_user(database)
    persona = await make_persona(database, alice)
    async with scoped(database, _as(alice)) as s:
        plain = await shards.put(s, _as(alice), content="Ada likes tea")
        narrowed = await shards.put(s, _as(alice), content="Ada's persona note", persona_id=persona)
    expected = migrated_shards()
    async with database.transaction() as s:
        for row in (plain, narrowed):
            target = await shards.partition_for_key(s, row.shard_key)
            assert await explain(s, shards.lookup(row.shard_key, row.id)) == [target]
            assert await explain(s, shards.scope_rows(row.shard_key)) == [target]
            landed = await s.scalar(text(
                "SELECT tableoid::regclass::text FROM distributed_memory "
                "WHERE shard_key = :k AND id = :id"), {"k": row.shard_key, "id": row.id})
            assert landed == target
        # Without shard_key (a user's rows across personas) every partition is read.
        every = await explain(s, select(DistributedMemory).where(
            DistributedMemory.user_id == alice))
        assert sorted(every) == sorted(f"distributed_memory_p{r}" for r in range(expected))
    # Pruning holds under row-level security too (the policy adds a filter, not a scan).
    async with scoped(database, _as(alice)) as s:
        assert len(await explain(s, shards.lookup(plain.shard_key, plain.id))) == 1


async def test_rows_land_in_the_partition_the_hash_names(database: Database) -> None:
    owner, _ = await make_user(database)
    personas = [await make_persona(database, owner) for _ in range(24)]
    async with database.transaction() as s:
        rows = [await shards.put(s, SYSTEM, content=f"fact {i}", user_id=owner, persona_id=p)
                for i, p in enumerate(personas)]
    async with database.transaction() as s:
        layout = await shards.layout(s)
        placed = dict((await s.execute(text(
            "SELECT id, tableoid::regclass::text FROM distributed_memory"))).tuples().all())
        for row in rows:
            part = placed[row.id]
            assert part == await shards.partition_for_key(s, row.shard_key)
            # PostgreSQL's own test of a hash bound: true for this partition only.
            fits = [(p.name, await s.scalar(text(
                "SELECT satisfies_hash_partition('distributed_memory'::regclass, :m, :r, "
                "CAST(:k AS varchar))"), {"m": p.modulus, "r": p.remainder, "k": row.shard_key}))
                for p in layout]
            assert [name for name, ok in fits if ok] == [part]
    assert sum(p.rows for p in layout) == len(rows)
    if len(layout) > 1:
        assert len(set(placed.values())) > 1  # 24 scopes do not all hash alike


# --------------------------------------------------------------------------- service


async def test_put_get_list_delete_and_replicas(database: Database) -> None:
    alice, _ = await make_user(database)
    persona = await make_persona(database, alice)
    me = _as(alice)
    async with scoped(database, me) as s:
        first = await shards.put(s, me, content="one", metadata={"k": 1}, embedding=[0.5, 1.5])
        second = await shards.put(s, me, content="two")
        third = await shards.put(s, me, content="three", persona_id=persona)
    assert first.node_id == get_settings().memory_node_id and first.replicated_to == []
    assert first.shard_key == str(alice) and third.shard_key == shards.shard_key_for(alice, persona)
    async with scoped(database, me) as s:
        got = await shards.get(s, me, first.shard_key, first.id)
        assert (got.content, got.memory_metadata, got.embedding) == ("one", {"k": 1}, [0.5, 1.5])
        with pytest.raises(NotFound):  # the right id under the wrong key is no row
            await shards.get(s, me, third.shard_key, first.id)
        mine, cursor = await shards.list_rows(s, me)
        assert [r.id for r in mine] == [second.id, first.id] and cursor is None
        narrowed, _ = await shards.list_rows(s, me, persona_id=persona)
        assert [r.id for r in narrowed] == [third.id]
        every, _ = await shards.list_rows(s, me, every_persona=True)
        assert {r.id for r in every} == {first.id, second.id, third.id}
        page, cursor = await shards.list_rows(s, me, limit=1)
        assert [r.id for r in page] == [second.id] and cursor is not None
        with pytest.raises(Forbidden):
            await shards.mark_replicated(s, me, first.shard_key, first.id, ["node-b"])
    async with database.transaction() as s:
        row = await shards.mark_replicated(s, SYSTEM, first.shard_key, first.id, ["node-b", "node-c"])
        row = await shards.mark_replicated(s, SYSTEM, first.shard_key, first.id, ["node-c", "node-d"])
        assert row.replicated_to == ["node-b", "node-c", "node-d"]
    async with scoped(database, me) as s:
        await shards.delete(s, me, second.shard_key, second.id)
        with pytest.raises(NotFound):
            await shards.delete(s, me, second.shard_key, second.id)
    async with database.transaction() as s:
        actions = (await s.execute(text(
            "SELECT action FROM audit_logs WHERE resource_type = 'distributed_memory' "
            "ORDER BY seq"))).scalars().all()
    assert actions == ["memory.shard.put"] * 3 + ["memory.shard.replicated"] * 2 + [
        "memory.shard.delete"]


async def test_bad_input(database: Database) -> None:
    alice, _ = await make_user(database)
    me = _as(alice)
    async with scoped(database, me) as s:
        for kwargs in ({"content": "   "}, {"content": "x" * 4001},
                       {"content": "x", "embedding": [float("nan")]},
                       {"content": "x", "embedding": []}, {"content": "x", "node_id": ""}):
            with pytest.raises(Unprocessable):
                await shards.put(s, me, **kwargs)
        with pytest.raises(NotFound):  # an unknown persona
            await shards.put(s, me, content="x", persona_id=uuid.uuid4())
        with pytest.raises(Unprocessable):
            await shards.list_rows(s, me, persona_id=uuid.uuid4(), every_persona=True)
        with pytest.raises(NotFound):
            await shards.get(s, me, str(alice), uuid.uuid4())
    async with database.transaction() as s:
        with pytest.raises(Unprocessable):  # system work must name the user
            await shards.put(s, SYSTEM, content="x")


async def test_nul_and_float4_overflow_are_refused_before_the_database(database: Database) -> None:
    """A NUL (PostgreSQL keeps none in text or jsonb) or an embedding value beyond float4's
    range is a 422 naming the field; a NUL in a shard key finds no row (404); nothing stored."""
    alice, _ = await make_user(database)
    me = _as(alice)
    async with scoped(database, me) as s:
        for kwargs, field in (({"content": "a\x00b"}, "content"),
                              ({"content": "x", "metadata": {"k": "v\x00"}}, "metadata"),
                              ({"content": "x", "metadata": {"k\x00": ["v"]}}, "metadata"),
                              ({"content": "x", "node_id": "n\x00"}, "node_id"),
                              ({"content": "x", "embedding": [1e40]}, "embedding"),
                              ({"content": "x", "embedding": [0.5, -1e39]}, "embedding")):
            with pytest.raises(Unprocessable) as caught:
                await shards.put(s, me, **kwargs)
            assert caught.value.extra == {"field": field}, kwargs
        with pytest.raises(NotFound):
            await shards.get(s, me, f"{alice}\x00", uuid.uuid4())
        with pytest.raises(NotFound):
            await shards.delete(s, me, f"{alice}\x00", uuid.uuid4())
        assert (await s.scalar(select(DistributedMemory.id))) is None
        row = await shards.put(s, me, content="x", embedding=[3.4e38, -3.4e38])
        assert (await shards.get(s, me, row.shard_key, row.id)).content == "x"


# --------------------------------------------------------------------------- tenancy


async def test_row_level_security_isolates_users(database: Database) -> None:
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    alice_persona = await make_persona(database, alice)
    async with scoped(database, _as(alice)) as s:
        hers = await shards.put(s, _as(alice), content="alice's secret")
        await shards.put(s, _as(alice), content="alice's persona fact", persona_id=alice_persona)
    async with scoped(database, _as(bob)) as s:
        his = await shards.put(s, _as(bob), content="bob's note")
    async with scoped(database, _as(bob)) as s:
        # Raw SQL without any filter: row-level security shows bob his row only.
        seen = (await s.execute(text("SELECT content FROM distributed_memory"))).scalars().all()
        assert list(seen) == ["bob's note"]
        with pytest.raises(NotFound):
            await shards.get(s, _as(bob), hers.shard_key, hers.id)
        with pytest.raises(NotFound):
            await shards.delete(s, _as(bob), hers.shard_key, hers.id)
        with pytest.raises(NotFound):  # naming another user
            await shards.list_rows(s, _as(bob), user_id=alice)
        with pytest.raises(NotFound):  # another tenant's persona
            await shards.put(s, _as(bob), content="x", persona_id=alice_persona)
        assert (await shards.get(s, _as(bob), his.shard_key, his.id)).content == "bob's note"
    # The policy's WITH CHECK refuses a row written for someone else, even by raw SQL.
    async with database.transaction() as s:
        await apply_principal(s, _as(bob))
        with pytest.raises(DBAPIError, match="row-level security"):
            await s.execute(text(
                "INSERT INTO distributed_memory (id, shard_key, user_id, content, node_id) "
                "VALUES (:id, :k, :u, 'forged', 'n')"),
                {"id": uuid.uuid4(), "k": str(alice), "u": alice})
    async with database.transaction() as s:  # the owner sees every row, untouched
        assert await s.scalar(text("SELECT count(*) FROM distributed_memory")) == 3


# --------------------------------------------------------------------------- docs/scale.md


def doc_sql_blocks(heading: str) -> list[str]:
    """The ```sql blocks of docs/scale.md under ``heading`` (and its sub-headings)."""
    lines = SCALE_DOC.read_text().splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines))
                if re.match(rf"^#{{1,{level}}} ", lines[i])), len(lines))
    blocks, current = [], None
    for line in lines[start + 1:end]:
        if current is None and line.strip() == "```sql":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"unclosed sql block under {heading!r}"
    return blocks


def statements(block: str) -> Iterator[str]:
    """One statement at a time: a statement ends with ';' at the end of a line that is
    not a comment (the Citus blocks have no DO bodies)."""
    current: list[str] = []
    for line in block.splitlines():
        current.append(line)
        if line.rstrip().endswith(";") and not line.lstrip().startswith("--"):
            yield "\n".join(current).strip()
            current = []
    assert not "\n".join(current).strip(), f"trailing text without ';': {current}"


@pytest.fixture
async def raw(pg_server: PgTestServer, db_name: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_server.libpq_url(db_name))
    try:
        yield conn
    finally:
        await conn.close()


async def test_repartitioning_sql_from_the_doc(database: Database, raw: asyncpg.Connection) -> None:
    [block] = doc_sql_blocks(REPARTITION_HEADING)
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    persona = await make_persona(database, alice)
    async with database.transaction() as s:
        before = {(await shards.put(s, SYSTEM, content=f"{who} {i}", user_id=who,
                                    persona_id=persona if who == alice and i % 2 else None,
                                    embedding=[float(i), 1.0])).id
                  for who in (alice, bob) for i in range(10)}
    await raw.execute(block)  # as the doc says: BEGIN ... COMMIT
    async with database.transaction() as s:
        layout = await shards.layout(s)
        assert [(p.name, p.modulus, p.remainder) for p in layout] == [
            (f"distributed_memory_p{r}", 16, r) for r in range(16)]
        assert sum(p.rows for p in layout) == len(before)
        rows = (await s.execute(text(
            "SELECT id, shard_key, tableoid::regclass::text FROM distributed_memory"))).all()
        assert {r[0] for r in rows} == before
        for _, key, part in rows:
            assert part == await shards.partition_for_key(s, key)
        leftovers = await s.scalar(text(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'distributed_memory%old%'"))
        assert leftovers == 0
        names = set((await s.execute(text(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'distributed_memory'::regclass "
            "AND contype IN ('p', 'f', 'c')"))).scalars().all())
        assert names == {"pk_distributed_memory", "fk_distributed_memory_user_id_users",
                         "fk_distributed_memory_persona_id_personas",
                         "ck_distributed_memory_shard_key_not_blank",
                         "ck_distributed_memory_replicated_to_array"}
    # Row-level security and the application role's rights came back with the table.
    async with scoped(database, _as(bob)) as s:
        mine, _ = await shards.list_rows(s, _as(bob))
        assert len(mine) == 10
        assert await s.scalar(text("SELECT count(*) FROM distributed_memory")) == 10
        new = await shards.put(s, _as(bob), content="after the rebuild")
    async with scoped(database, _as(bob)) as s:
        assert (await shards.get(s, _as(bob), new.shard_key, new.id)).content == "after the rebuild"
    async with database.transaction() as s:  # a deleted user's rows still go with them
        await s.execute(text("DELETE FROM users WHERE id = :id"), {"id": bob})
        assert await s.scalar(text("SELECT count(*) FROM distributed_memory")) == 10


# Citus's functions as its sources define them (src/backend/distributed/sql/udfs/*/latest.sql),
# as plain functions that check what Citus checks and record the call.
CITUS_STUBS = r"""
CREATE SCHEMA citus;
CREATE TYPE citus.distribution_type AS ENUM ('hash', 'range', 'append');
CREATE TYPE citus.shard_transfer_mode AS ENUM ('auto', 'force_logical', 'block_writes');
CREATE SCHEMA citus_stub;
CREATE TYPE citus_stub.noderole AS ENUM ('primary', 'secondary', 'unavailable');
CREATE TABLE citus_stub.calls (seq serial PRIMARY KEY, fn text NOT NULL, args text[] NOT NULL);

CREATE FUNCTION citus_stub.check_triggers(rel regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND NOT tgisinternal)
     AND coalesce(current_setting('citus.enable_unsafe_triggers', true), 'off') <> 'on' THEN
    RAISE EXCEPTION 'cannot distribute relation "%" because it has triggers', rel;
  END IF;
END $$;

CREATE FUNCTION citus_stub.is_citus_table(rel text) RETURNS boolean LANGUAGE sql AS $$
  SELECT EXISTS (SELECT 1 FROM citus_stub.calls
                  WHERE fn IN ('create_distributed_table', 'create_reference_table')
                    AND args[1] = rel)
$$;

CREATE FUNCTION citus_stub.create_distributed_table(
    table_name regclass, distribution_column text,
    distribution_type citus.distribution_type DEFAULT 'hash',
    colocate_with text DEFAULT 'default', shard_count int DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  col smallint;
  bad text;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = table_name) THEN
    RAISE EXCEPTION 'cannot distribute relation "%" which is a partition', table_name;
  END IF;
  SELECT attnum INTO col FROM pg_attribute
   WHERE attrelid = table_name AND attname = distribution_column AND NOT attisdropped;
  IF col IS NULL THEN
    RAISE EXCEPTION 'column "%" of relation "%" does not exist', distribution_column, table_name;
  END IF;
  SELECT conname INTO bad FROM pg_constraint
   WHERE conrelid = table_name AND contype IN ('p', 'u', 'x') AND NOT col = ANY (conkey);
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'constraint % does not include the distribution column', bad;
  END IF;
  SELECT confrelid::regclass::text INTO bad FROM pg_constraint
   WHERE conrelid = table_name AND contype = 'f' AND confrelid <> table_name
     AND NOT citus_stub.is_citus_table(confrelid::regclass::text);
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'foreign key to "%", which is not a reference or distributed table', bad;
  END IF;
  IF colocate_with NOT IN ('default', 'none') AND NOT citus_stub.is_citus_table(colocate_with) THEN
    RAISE EXCEPTION 'cannot colocate with "%": not distributed', colocate_with;
  END IF;
  PERFORM citus_stub.check_triggers(table_name);
  INSERT INTO citus_stub.calls (fn, args) VALUES ('create_distributed_table',
    ARRAY[table_name::text, distribution_column, distribution_type::text, colocate_with,
          coalesce(shard_count::text, '')]);
END $$;

CREATE FUNCTION citus_stub.create_reference_table(table_name regclass)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM citus_stub.check_triggers(table_name);
  INSERT INTO citus_stub.calls (fn, args) VALUES ('create_reference_table', ARRAY[table_name::text]);
END $$;

CREATE FUNCTION citus_stub.truncate_local_data_after_distributing_table(function_name regclass)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF NOT citus_stub.is_citus_table(function_name::text) THEN
    RAISE EXCEPTION '"%" is not distributed', function_name;
  END IF;
  INSERT INTO citus_stub.calls (fn, args) VALUES ('truncate_local_data', ARRAY[function_name::text]);
END $$;

CREATE FUNCTION citus_stub.create_distributed_function(
    function_name regprocedure, distribution_arg_name text DEFAULT NULL,
    colocate_with text DEFAULT 'default', force_delegation bool DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO citus_stub.calls (fn, args)
  VALUES ('create_distributed_function', ARRAY[function_name::text]);
$$;

CREATE FUNCTION citus_stub.citus_set_coordinator_host(
    host text, port integer DEFAULT current_setting('port')::int,
    node_role citus_stub.noderole DEFAULT 'primary', node_cluster name DEFAULT 'default')
RETURNS void LANGUAGE sql AS $$
  INSERT INTO citus_stub.calls (fn, args) VALUES ('citus_set_coordinator_host', ARRAY[host]);
$$;

CREATE FUNCTION citus_stub.citus_add_node(
    nodename text, nodeport integer, groupid integer DEFAULT -1,
    noderole citus_stub.noderole DEFAULT 'primary', nodecluster name DEFAULT 'default')
RETURNS integer LANGUAGE sql AS $$
  INSERT INTO citus_stub.calls (fn, args) VALUES ('citus_add_node', ARRAY[nodename]) RETURNING seq;
$$;

CREATE FUNCTION citus_stub.alter_distributed_table(
    table_name regclass, distribution_column text DEFAULT NULL, shard_count int DEFAULT NULL,
    colocate_with text DEFAULT NULL, cascade_to_colocated boolean DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO citus_stub.calls (fn, args)
  VALUES ('alter_distributed_table', ARRAY[table_name::text, shard_count::text]);
$$;

CREATE FUNCTION citus_stub.citus_rebalance_start(
    rebalance_strategy name DEFAULT NULL, drain_only boolean DEFAULT false,
    shard_transfer_mode citus.shard_transfer_mode DEFAULT 'auto',
    parallel_transfer_reference_tables boolean DEFAULT false,
    parallel_transfer_colocated_shards boolean DEFAULT false)
RETURNS bigint LANGUAGE sql AS $$
  INSERT INTO citus_stub.calls (fn, args) VALUES ('citus_rebalance_start', ARRAY[]::text[])
  RETURNING seq::bigint;
$$;

-- Runs the command here, as if this database were the only worker.
CREATE FUNCTION citus_stub.run_command_on_workers(
    command text, parallel bool DEFAULT true,
    OUT nodename text, OUT nodeport int, OUT success bool, OUT result text)
RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE command INTO result;
  nodename := 'stub-worker'; nodeport := 5432; success := true;
  RETURN NEXT;
END $$;

SET LOCAL search_path = citus_stub, public;
"""


async def test_citus_statements_from_the_doc_are_valid_sql(raw: asyncpg.Connection) -> None:
    blocks = doc_sql_blocks(CITUS_HEADING)
    assert len(blocks) >= 6
    calls: list[tuple[str, list[str]]] = []
    pk_check_ran = False
    for block in blocks:
        tx = raw.transaction()
        await tx.start()
        try:
            await raw.execute(CITUS_STUBS)
            for stmt in statements(block):
                if re.match(r"(?i)^CREATE EXTENSION (IF NOT EXISTS )?citus;$", stmt):
                    # Valid SQL; only the extension itself is missing here.
                    await raw.execute("SAVEPOINT no_citus")
                    with pytest.raises(asyncpg.PostgresError,
                                       match='extension "citus" is not available'):
                        await raw.execute(stmt)
                    await raw.execute("ROLLBACK TO SAVEPOINT no_citus")
                    continue
                result = await raw.fetch(stmt)
                if "FROM pg_constraint con" in stmt:  # the primary-key check: no row
                    assert result == [], stmt
                    pk_check_ran = True
                    await _pk_check_catches_a_missing_key(raw, stmt)
                if "run_command_on_workers" in stmt:
                    assert [r["result"] for r in result] == ["roost_app"]
            await raw.execute("RESET ROLE")  # the last block ends as roost_app
            calls += [(r["fn"], list(r["args"])) for r in await raw.fetch(
                "SELECT fn, args FROM citus_stub.calls ORDER BY seq")]
        finally:
            await tx.rollback()
    assert pk_check_ran
    distributed = [args for fn, args in calls if fn == "create_distributed_table"]
    assert distributed and all(args[:2] == ["distributed_memory", "shard_key"] for args in distributed)
    assert ("create_reference_table", ["users"]) in calls
    assert {args[0] for fn, args in calls if fn == "create_distributed_function"} == {
        "roost_current_user_id()", "roost_is_admin()", "roost_user_group_ids()",
        "roost_row_visible(uuid,uuid)"}
    # Nothing was left behind: every block ran in a rolled-back transaction.
    assert await raw.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'citus%'") == 0
    assert await raw.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'roost_app'") is False


async def _pk_check_catches_a_missing_key(raw: asyncpg.Connection, check: str) -> None:
    """The doc's check is not vacuous: on a table whose key lacks shard_key it names it."""
    savepoint = raw.transaction()
    await savepoint.start()
    try:
        await raw.execute("CREATE TABLE citus_stub.unkeyed (id uuid PRIMARY KEY, shard_key text)")
        found = await raw.fetch(check.replace("'distributed_memory'::regclass",
                                              "'citus_stub.unkeyed'::regclass"))
        assert [r["conname"] for r in found] == ["unkeyed_pkey"]
    finally:
        await savepoint.rollback()


# --------------------------------------------------------------------------- roost memory shards


async def test_roost_memory_shards_cli(database: Database, pg_server: PgTestServer, db_name: str,
                                       tmp_path: Path) -> None:
    owner, _ = await make_user(database)
    async with database.transaction() as s:
        row = await shards.put(s, SYSTEM, content="counted", user_id=owner)
        target = await shards.partition_for_key(s, row.shard_key)
    expected = migrated_shards()
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_LOG_LEVEL": "warning", "ROOST_MEMORY_NODE_ID": "node-a",
           "ROOST_MEMORY_SHARDS": str(expected)}
    out = await asyncio.to_thread(run_roost, "memory", "shards", "--key", row.shard_key, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for r in range(expected):
        count = 1 if f"distributed_memory_p{r}" == target else 0
        assert any(re.search(rf"\bdistributed_memory_p{r}\s.*\s{expected}\s.*\s{r}\s.*\s{count}\b", line)
                   for line in lines), out.stdout
    partitions = f"{expected} partition" + ("" if expected == 1 else "s")
    assert f"{partitions}, 1 row; this node: node-a" in out.stdout
    assert f"shard key {row.shard_key} -> {target}" in out.stdout
    assert "warning" not in out.stdout
    # A setting that disagrees with the table is pointed out (the count is fixed at migration).
    env["ROOST_MEMORY_SHARDS"] = str(expected + 1)
    out = await asyncio.to_thread(run_roost, "memory", "shards", env=env)
    assert out.returncode == 0 and "warning: ROOST_MEMORY_SHARDS is" in out.stdout
    # The key and the node id are the caller's text: an escape sequence is shown, not run.
    env["ROOST_MEMORY_NODE_ID"] = "node-\x1b[2J"
    out = await asyncio.to_thread(run_roost, "memory", "shards", "--key", "\x1b[31mevil", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "evil" in out.stdout and "\x1b" not in out.stdout + out.stderr, out.stdout


async def test_deleting_a_persona_deletes_its_sharded_rows(database: Database) -> None:
    """A persona's rows ("<user>:<persona>" keys) go with it, as its other memory does:
    they were left behind, unreachable by scope yet listed with ``every_persona``."""
    from roost.agents import personas

    alice, _ = await make_user(database)
    me = _as(alice)
    gone, kept = await make_persona(database, alice), await make_persona(database, alice)
    async with database.transaction() as s:
        await apply_principal(s, me)
        for persona_id, content in ((gone, "persona secret"), (kept, "kept"), (None, "mine")):
            await shards.put(s, me, content=content, persona_id=persona_id)
    async with database.transaction() as s:
        await apply_principal(s, me)
        await personas.delete_persona(s, me, gone)
    async with database.transaction() as s:
        await apply_principal(s, me)
        rows, _ = await shards.list_rows(s, me, every_persona=True)
    assert sorted(r.content for r in rows) == ["kept", "mine"]


async def test_the_migration_gives_rows_their_persona_and_drops_those_of_deleted_ones(
        database: Database) -> None:
    """Migration 1320 sets ``persona_id`` from each stored row's key, and deletes the rows
    of personas deleted before it (what the deletions left behind)."""
    from roost.db.migrate import downgrade, upgrade

    alice, _ = await make_user(database)
    live, deleted = await make_persona(database, alice), await make_persona(database, alice)
    await downgrade(database.engine, "1310")
    keys = {"live": shards.shard_key_for(alice, live), "deleted": shards.shard_key_for(alice, deleted),
            "user": shards.shard_key_for(alice)}
    async with database.transaction() as s:
        await s.execute(text("DELETE FROM personas WHERE id = :p"), {"p": deleted})
        for content, key in keys.items():
            await s.execute(text(
                "INSERT INTO distributed_memory (id, shard_key, user_id, content, node_id) "
                "VALUES (gen_random_uuid(), :key, :user, :content, 'n1')"),
                {"key": key, "user": alice, "content": content})
    await upgrade(database.engine)
    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT content, persona_id FROM distributed_memory ORDER BY content"))).all()
    assert [tuple(r) for r in rows] == [("live", live), ("user", None)]
