"""Prompt resolution benchmark: ``roost.prompts.service.resolve`` at 10,000 prompt versions,
beside what a user would otherwise pick, in one run.

    .venv/bin/python bench/workspace/prompts.py [--prompts 10000] [--users 500]
                     [--groups 50] [--keys 20] [--queries 3000] [--seed 18]

One embedded PostgreSQL (temporary directory), migrated.  Data: ``--keys`` keys, each
with two factory versions (production on the newer); ``--groups`` groups, each with two
versions of half the keys (production; staging on the newer); the rest of ``--prompts``
as users' own versions (two per user and key, production on the first, staging on the
second) over ``--users`` users, each a member of one or two groups.  Loaded as the owner
with the migration's triggers and indexes in place.

Measured, per query, the statement alone inside a transaction scoped to a random user as
a request is (``apply_principal``: row-level security on), a random key and label
(production 80 %, staging 20 %):

* ``roost_resolve``: Roost's resolution (the user's label, else their groups' by oldest
  membership, else the factory's; inactive versions skipped), one statement;
* ``plain_select``: what AI Workflow Engine's table gives without labels or groups: the
  user's override else the factory default, ``WHERE prompt_key = :k AND (user_id = :u OR
  is_factory_default) ORDER BY user_id NULLS LAST, version DESC LIMIT 1`` (an index on
  ``(prompt_key, user_id, version)`` added for it, as one would);
* ``server_side``: for every fifth query, the server's planning + execution time of the
  two statements (``EXPLAIN ANALYZE``), without the client's round trip and event loop;
* ``roost_cached_first`` / ``roost_cached_again``: what chat replies and runs call,
  ``resolve_cached`` (roost.prompts.cache, kept current by NOTIFY over the listener
  ``roost serve`` runs, started here too): the first use of a (user, key, label) in the
  run, which may go to the database, then the same again, from memory;
* ``dict_lookup``: a LangChain-hub-style in-process cache, a dict of
  (scope, key, label) -> text walked in the same order (no database; stale as soon as
  another process publishes: the reference point for "no round trip at all").

p50/p95/p99/max in ms; results added to bench/results/prompts.json.
"""

# ruff: noqa: E402 - sys.path is fixed before the imports

from __future__ import annotations

import os
import sys

# Run as a file, this folder would come first on sys.path and its calendar.py would shadow
# the standard library's ``calendar`` (which the e-mail package imports).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(__file__)]

import argparse
import asyncio
import json
import platform
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

RESULTS = Path(__file__).resolve().parents[1] / "results" / "prompts.json"
NIL = uuid.UUID(int=0)

PLAIN_SQL = text("""
  SELECT id, prompt_text FROM system_prompts
   WHERE prompt_key = :key AND (user_id = :uid OR is_factory_default) AND is_active
   ORDER BY user_id NULLS LAST, version DESC LIMIT 1""")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def summary(times: list[float]) -> dict[str, Any]:
    ms = [t * 1000 for t in times]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.50), 3),
            "p95_ms": round(percentile(ms, 0.95), 3), "p99_ms": round(percentile(ms, 0.99), 3),
            "max_ms": round(max(ms), 3)}


def build(args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Rows to load: users, groups, memberships, prompt versions and labels."""
    keys = [f"bench.key{i:02d}" for i in range(args.keys)]
    users = [uuid.uuid4() for _ in range(args.users)]
    groups = [uuid.uuid4() for _ in range(args.groups)]
    now = datetime.now(UTC)
    memberships = []
    for u in users:
        for i, g in enumerate(rng.sample(groups, rng.choice((1, 2)))):
            memberships.append({"id": uuid.uuid4(), "user_id": u, "group_id": g,
                                "joined_at": now - timedelta(days=10 - i)})
    prompts: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []

    def version(user_id: uuid.UUID | None, group_id: uuid.UUID | None, key: str, n: int,
                label: str | None) -> None:
        pid = uuid.uuid4()
        prompts.append({"id": pid, "user_id": user_id, "group_id": group_id, "key": key,
                        "text": f"Prompt {key} v{n} for {user_id or group_id or 'factory'}",
                        "factory": user_id is None and group_id is None, "version": n})
        if label is not None:
            labels.append({"id": uuid.uuid4(), "user_id": user_id, "group_id": group_id,
                           "key": key, "label": label, "prompt_id": pid})

    for key in keys:
        version(None, None, key, 1, "staging")
        version(None, None, key, 2, "production")
    for g in groups:
        for key in rng.sample(keys, len(keys) // 2):
            version(None, g, key, 1, "production")
            version(None, g, key, 2, "staging")
    used: set[tuple[uuid.UUID, str]] = set()
    while len(prompts) < args.prompts:
        u, key = rng.choice(users), rng.choice(keys)
        if (u, key) in used:
            continue
        used.add((u, key))
        version(u, None, key, 1, "production")
        version(u, None, key, 2, "staging")
    return {"keys": keys, "users": users, "groups": groups, "memberships": memberships,
            "prompts": prompts, "labels": labels}


async def load(db: Any, data: dict[str, Any]) -> None:
    async with db.transaction() as s:
        await s.execute(text(
            "INSERT INTO users (id, username, email, role, status, is_active) "
            "VALUES (:id, :name, :email, 'user', 'active', true)"),
            [{"id": u, "name": f"bench{i}", "email": f"bench{i}@example.test"}
             for i, u in enumerate(data["users"])])
        await s.execute(text("INSERT INTO groups (id, name) VALUES (:id, :name)"),
                        [{"id": g, "name": f"bench-group-{i}"}
                         for i, g in enumerate(data["groups"])])
        await s.execute(text(
            "INSERT INTO user_group_memberships (id, user_id, group_id, role, joined_at) "
            "VALUES (:id, :user_id, :group_id, 'member', :joined_at)"), data["memberships"])
        await s.execute(text(
            "INSERT INTO system_prompts (id, user_id, group_id, prompt_key, prompt_name, "
            "prompt_text, is_factory_default, version) VALUES (:id, :user_id, :group_id, :key, "
            ":key, :text, :factory, :version)"), data["prompts"])
        await s.execute(text(
            "INSERT INTO system_prompt_labels (id, user_id, group_id, prompt_key, label, "
            "prompt_id) VALUES (:id, :user_id, :group_id, :key, :label, :prompt_id)"),
            data["labels"])
        # The index the plain lookup needs (the seed's unique (user_id, prompt_key) would
        # not hold with versions).
        await s.execute(text("CREATE INDEX bench_plain ON system_prompts "
                             "(prompt_key, user_id, version)"))
    async with db.transaction() as s:
        await s.execute(text("ANALYZE system_prompts"))
        await s.execute(text("ANALYZE system_prompt_labels"))
        await s.execute(text("ANALYZE user_group_memberships"))


def dict_cache(data: dict[str, Any]) -> tuple[dict[tuple[Any, ...], str],
                                              dict[uuid.UUID, list[uuid.UUID]]]:
    texts = {p["id"]: p["text"] for p in data["prompts"]}
    cache = {(lab["user_id"] or lab["group_id"] or NIL, lab["key"], lab["label"]):
             texts[lab["prompt_id"]] for lab in data["labels"]}
    groups_of: dict[uuid.UUID, list[tuple[datetime, uuid.UUID]]] = {}
    for m in data["memberships"]:
        groups_of.setdefault(m["user_id"], []).append((m["joined_at"], m["group_id"]))
    return cache, {u: [g for _, g in sorted(v)] for u, v in groups_of.items()}


def dict_resolve(cache: dict[tuple[Any, ...], str], groups: list[uuid.UUID], user: uuid.UUID,
                 key: str, label: str) -> str | None:
    for scope in (user, *groups, NIL):
        found = cache.get((scope, key, label))
        if found is not None:
            return found
    return None


async def measure(db: Any, data: dict[str, Any], args: argparse.Namespace,
                  rng: random.Random) -> dict[str, Any]:
    from roost.identity.tenancy import apply_principal
    from roost.principal import Principal
    from roost.prompts.service import RESOLVE_SQL, resolve, resolve_cached

    cache, groups_of = dict_cache(data)
    times: dict[str, list[float]] = {"roost_resolve": [], "plain_select": [], "dict_lookup": [],
                                     "roost_cached_first": [], "roost_cached_again": []}
    found = {name: 0 for name in times}
    server: dict[str, list[float]] = {"roost_resolve": [], "plain_select": []}
    plan = ""
    for i in range(args.queries + 50):  # the first 50 warm the pool and caches: not kept
        user = rng.choice(data["users"])
        key = rng.choice(data["keys"])
        label = "production" if rng.random() < 0.8 else "staging"
        principal = Principal(user_id=user, is_admin=False, kind="api_key",
                              group_ids=frozenset(groups_of.get(user, [])))
        order = ["roost_resolve", "plain_select"]
        rng.shuffle(order)
        for name in order:
            async with db.transaction() as s:
                await apply_principal(s, principal)
                start = time.perf_counter()
                if name == "roost_resolve":
                    row: Any = await resolve(s, user, key, label)
                else:
                    row = (await s.execute(PLAIN_SQL, {"key": key, "uid": user})).first()
                elapsed = time.perf_counter() - start
                if i == 0 and name == "roost_resolve":
                    plan = "\n".join(r[0] for r in (await s.execute(
                        text("EXPLAIN " + str(RESOLVE_SQL)),
                        {"uid": user, "nil": NIL, "key": key, "label": label})).all())
                if i >= 50 and i % 5 == 0:  # the server's own time: planning + execution
                    statement = RESOLVE_SQL if name == "roost_resolve" else PLAIN_SQL
                    explained = (await s.execute(
                        text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(statement)),
                        {"uid": user, "nil": NIL, "key": key, "label": label})).scalar_one()
                    server[name].append((explained[0]["Planning Time"]
                                         + explained[0]["Execution Time"]) / 1000)
            if i >= 50:
                times[name].append(elapsed)
                found[name] += row is not None
        # What chat replies and runs call (roost.prompts.cache, NOTIFY-invalidated): the
        # first use of (user, key, label) may go to the database, the next is in memory.
        for name in ("roost_cached_first", "roost_cached_again"):
            async with db.transaction() as s:
                await apply_principal(s, principal)
                start = time.perf_counter()
                got: Any = await resolve_cached(s, user, key, label)
                elapsed = time.perf_counter() - start
            if i >= 50:
                times[name].append(elapsed)
                found[name] += got is not None
        start = time.perf_counter()
        hit = dict_resolve(cache, groups_of.get(user, []), user, key, label)
        elapsed = time.perf_counter() - start
        if i >= 50:
            times["dict_lookup"].append(elapsed)
            found["dict_lookup"] += hit is not None
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "prompts": len(data["prompts"]), "labels": len(data["labels"]),
        "users": len(data["users"]), "groups": len(data["groups"]), "keys": len(data["keys"]),
        "results": {name: {**summary(t), "found": found[name]} for name, t in times.items()},
        "server_side": {name: summary(t) for name, t in server.items()},
        "roost_plan": plan,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade
    from roost.system_settings.runtime import SettingsListener
    from roost.tasks.worker import asyncpg_dsn

    rng = random.Random(args.seed)
    data = build(args, rng)
    with tempfile.TemporaryDirectory(prefix="roost-bench-prompts-") as tmp_dir:
        server = start_embedded(Path(tmp_dir) / "pg", delete_on_exit=True)
        ensure_database_exists(server, "bench_prompts")
        db = create_database(Settings(), url=to_async_url(server.libpq_url("bench_prompts")))
        try:
            await upgrade(db.engine)
            await load(db, data)
            listener = SettingsListener(asyncpg_dsn(db))  # what `roost serve` runs
            await listener.start()
            await asyncio.wait_for(listener.connected.wait(), 30)
            try:
                return await measure(db, data, args, rng)
            finally:
                await listener.stop()
        finally:
            await db.dispose()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = asyncio.run(main(args))
    print(f"\n{report['prompts']:,} prompt versions, {report['labels']:,} labels, "
          f"{report['users']} users, {report['groups']} groups, {report['keys']} keys")
    print(f"{'lookup':<19} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'found':>6}")
    for name, r in report["results"].items():
        print(f"{name:<19} {r['n']:>5} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} "
              f"{r['max_ms']:>8} {r['found']:>6}")
    print("server side (EXPLAIN ANALYZE: planning + execution, every 5th query):")
    for name, r in report["server_side"].items():
        print(f"{name:<14} {r['n']:>5} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} "
              f"{r['max_ms']:>8}")
    print("\n" + report["roost_plan"])
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = existing.get("runs", []) if isinstance(existing.get("runs"), list) else []
    runs.append(report)
    args.out.write_text(json.dumps({"runs": runs[-10:]}, indent=2) + "\n")
