"""The per-process cache: used only while the LISTEN connection is up, dropped by NOTIFY,
dropped whole after a reconnect; and a change made through one ``roost serve`` process
seen by another one without a restart."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from roost.chat.runtime_settings import CONTEXT_MESSAGES
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.system_settings import runtime
from roost.system_settings.runtime import CACHE, SettingsListener
from roost.tasks.worker import asyncpg_dsn
from tests.support.pg import PgTestServer
from tests.support.server import roost_server


async def _store_silently(database: Database, value: str) -> None:
    """Change the row without NOTIFY: what a lost notification looks like to a process."""
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO system_settings (key, value) VALUES ('chat_context_messages', :v) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"), {"v": value})


async def _read(database: Database) -> int:
    async with database.transaction() as s:
        value: int = await runtime.get(s, CONTEXT_MESSAGES, 20)
        return value


async def _until(predicate_value: int, database: Database, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while await _read(database) != predicate_value:
        assert time.monotonic() < deadline, f"still not {predicate_value}"
        await asyncio.sleep(0.05)


async def test_cache_is_invalidated_by_notify_and_dropped_after_a_reconnect(
        database: Database) -> None:
    # No listener: every read goes to the database, so nothing can be stale.
    assert await _read(database) == 20
    await _store_silently(database, "30")
    assert await _read(database) == 30

    listener = SettingsListener(asyncpg_dsn(database))
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert await _read(database) == 30  # loaded once, then served from memory
        await _store_silently(database, "31")
        assert await _read(database) == 30, "a listening process reads its cache"
        async with database.transaction() as s:  # what every write sends
            await runtime.notify(s, "chat_context_messages")
        await _until(31, database)

        # The connection is lost (server restart, network): a change made meanwhile
        # sends a notification nobody hears; after the reconnect the cache is empty.
        await _store_silently(database, "32")
        async with database.transaction() as s:
            killed = await s.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'roost-settings' AND datname = current_database()"))
        assert killed == 1
        deadline = time.monotonic() + 10
        while listener.connected.is_set():  # until the loss is noticed
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await _store_silently(database, "33")  # while down: reads go to the database
        await asyncio.wait_for(listener.connected.wait(), 15)
        assert CACHE.listening
        assert await _read(database) == 33
    finally:
        await listener.stop()
    assert not CACHE.listening and not CACHE.values


LATE_CHANNEL = "roost_test_late_cache"


class _ImportingMeanwhile(asyncpg.Connection):  # type: ignore[misc]
    """A real connection on which another task imports a module that registers a cache
    (``runtime.watch``) while the listener waits for ``SELECT current_database()``."""

    made: list[runtime.NotifiedCache[str, str]]

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        if "current_database" not in query or self.made:
            return await super().fetchval(query, *args, **kwargs)

        async def import_module() -> None:
            self.made.append(runtime.NotifiedCache[str, str](LATE_CHANNEL, 10))

        importing = asyncio.create_task(import_module())  # runs during the query
        value = await super().fetchval(query, *args, **kwargs)
        await importing
        return value


async def test_a_cache_registered_while_the_listener_connects_is_notified(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache whose module is imported while the LISTEN connection is being set up listens
    on its channel once the listener is up: it never answers a value its notification
    replaced."""
    made: list[runtime.NotifiedCache[str, str]] = []
    monkeypatch.setattr(_ImportingMeanwhile, "made", made, raising=False)
    monkeypatch.setattr(runtime.asyncpg, "connect",
                        partial(asyncpg.connect, connection_class=_ImportingMeanwhile))
    listener = SettingsListener(asyncpg_dsn(database))
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        [cache] = made
        assert cache.listening
        cache.put("k", "old", cache.generation)
        assert cache.get("k") == (True, "old")
        async with database.transaction() as s:  # what the table's trigger sends
            await s.execute(text("SELECT pg_notify(:c, 'x')"), {"c": LATE_CHANNEL})
        deadline = time.monotonic() + 10
        while cache.get("k") != (False, None):
            assert time.monotonic() < deadline, "the cache still answers the replaced value"
            await asyncio.sleep(0.02)
    finally:
        await listener.stop()
        runtime._WATCHES[:] = [w for w in runtime._WATCHES if w.channel != LATE_CHANNEL]


async def test_the_writing_process_reads_its_own_change_at_once(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's next request must not wait for its own notification to come back (the
    console saves a setting, then the sign-up page it opens must already follow it): a
    listener that never delivers, so only the commit itself can refresh the cache."""
    monkeypatch.setattr(runtime._Listened, "database", database.engine.url.database)
    monkeypatch.setattr(CACHE, "listening", True)
    monkeypatch.setattr(CACHE, "values", {})
    assert await _read(database) == 20  # cached from here on
    await _store_silently(database, "35")
    assert await _read(database) == 20, "the cache answers while nothing invalidates it"

    async with database.transaction() as s:  # a change that is rolled back changes nothing
        await runtime.notify(s, "chat_context_messages")
        await s.rollback()
    assert await _read(database) == 35  # (dropping the key was harmless: it reloads)

    async with database.transaction() as s:
        await s.execute(text("UPDATE system_settings SET value = '36' "
                             "WHERE key = 'chat_context_messages'"))
        await runtime.notify(s, "chat_context_messages")
        assert await _read(database) == 35, "another transaction sees no uncommitted value"
    assert await _read(database) == 36


async def test_a_change_through_one_server_is_applied_by_another_without_restart(
        database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
        test_keys: KeyMaterial) -> None:
    """Two ``roost serve`` processes on one database: open_registration set through A
    changes what sign-up does on B (which had the old value cached), and back."""

    def env(name: str) -> dict[str, str]:
        return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
                "ROOST_DATA_DIR": str(tmp_path / name), "ROOST_ADMIN_TOKEN": test_keys.admin_token,
                "ROOST_SECRET_KEY": test_keys.secret_key,
                "ROOST_MESSAGE_KEYS": ",".join(test_keys.message_keys),
                "ROOST_LLM_LOCAL_MODEL": "false"}

    admin = {"Authorization": f"Bearer {test_keys.admin_token}"}
    counter = iter(range(1000))

    def sign_up(base_url: str) -> str:
        name = f"user{next(counter)}"
        resp = httpx.post(f"{base_url}/api/v1/auth/register", json={
            "username": name, "email": f"{name}@example.test",
            "password": "plum-quartz-river-kettle"}, timeout=30)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["status"])

    def until(base_url: str, status: str) -> float:
        started = time.monotonic()
        while (got := sign_up(base_url)) != status:
            assert time.monotonic() - started < 5, f"B still answers {got}"
            time.sleep(0.05)
        return time.monotonic() - started

    def run() -> None:
        with roost_server(env("a")) as a, roost_server(env("b")) as b:
            sign_up(b.base_url)  # the first account becomes root
            assert sign_up(b.base_url) == "pending_approval"  # B has read (and cached) it
            put = httpx.put(f"{a.base_url}/api/v1/admin/settings/open_registration",
                            json={"value": True}, headers=admin)
            assert put.status_code == 200, put.text
            until(b.base_url, "active")
            gone = httpx.delete(f"{a.base_url}/api/v1/admin/settings/open_registration",
                                headers=admin)
            assert gone.status_code == 200
            until(b.base_url, "pending_approval")

    await asyncio.to_thread(run)
