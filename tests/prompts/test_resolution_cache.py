"""The per-process cache of prompt resolutions (roost.prompts.cache): served from memory
while the LISTEN connection is up, dropped by the NOTIFY of a publish, a label move, a
deactivation or a group membership change, never used while nobody listens."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.common import group_ids_of
from roost.identity.tenancy import apply_principal
from roost.principal import Principal
from roost.prompts import cache, service
from roost.system_settings import runtime
from tests.prompts.conftest import User, make_group, publish
from tests.support.identity import make_user
from tests.support.listening import listening as listening_to


async def _use(database: Database, user_id: uuid.UUID, key: str) -> str | None:
    """What a chat reply or a run of ``user_id`` would get, in that user's scope."""
    async with database.transaction() as session:
        groups = await group_ids_of(session, user_id)  # as a request's principal has them
        await apply_principal(session, Principal(user_id=user_id, is_admin=False,
                                                 kind="session", group_ids=groups))
        used = await service.use(session, user_id, key)
        return None if used is None else used.text


async def _until(database: Database, user_id: uuid.UUID, key: str, expected: str | None,
                 timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await _use(database, user_id, key)) != expected:
        assert time.monotonic() < deadline, f"still {got!r}, not {expected!r}"
        await asyncio.sleep(0.05)


# A channel of the test's own on the same LISTEN connection: PostgreSQL delivers a
# listener's notifications in commit order whatever their channel, so once a marker
# committed now has arrived here, every earlier notification has reached the cache.
# (Waiting for the cache's generation to move instead ends at any notification, such as
# a publication's late one, and lets it land inside the window a test measures.)
_MARKER_CHANNEL = "roost_test_prompts_marker"
_MARKERS: list[str] = []
runtime.watch(_MARKER_CHANNEL, _MARKERS.append, lambda _listening: None)


async def _notifications_settled(database: Database, timeout_s: float = 10) -> None:
    """Every notification of the transactions committed so far has reached the cache."""
    marker = uuid.uuid4().hex
    async with database.transaction() as session:
        await session.execute(text("SELECT pg_notify(:channel, :marker)"),
                              {"channel": _MARKER_CHANNEL, "marker": marker})
    deadline = time.monotonic() + timeout_s
    while marker not in _MARKERS:
        assert time.monotonic() < deadline, "the marker notification never arrived"
        await asyncio.sleep(0.01)


@pytest.fixture
async def listening(database: Database) -> AsyncIterator[None]:
    async with listening_to(database):
        assert cache.CACHE.listening
        yield
    assert not cache.CACHE.listening and len(cache.CACHE) == 0


async def test_resolutions_are_cached_and_dropped_by_every_change_they_depend_on(
        listening: None, client: httpx.AsyncClient, database: Database, user: User,
        other_user: User) -> None:
    user_id, headers = user
    assert await _use(database, user_id, "greeting") is None  # "no version" is cached too
    v1 = await publish(client, headers, "greeting", "Hello v1")
    await _until(database, user_id, "greeting", "Hello v1")  # the publish dropped "none"
    # The publish's own notifications may still be on their way (this process's write
    # dropped the cache at its commit already) and would drop what is cached next.
    await _notifications_settled(database)
    assert await _use(database, user_id, "greeting") == "Hello v1"

    # A cached resolution is served without the database: a change that sends no
    # notification (here, by hand as the owner) stays unseen...
    async with database.transaction() as s:
        await s.execute(text("ALTER TABLE system_prompt_labels DISABLE TRIGGER USER"))
        await s.execute(text("DELETE FROM system_prompt_labels WHERE prompt_id = :id"),
                        {"id": v1["id"]})
        await s.execute(text("ALTER TABLE system_prompt_labels ENABLE TRIGGER USER"))
    assert await _use(database, user_id, "greeting") == "Hello v1"
    # ... and every change that does, drops it.
    await publish(client, headers, "greeting", "Hello v2")
    await _until(database, user_id, "greeting", "Hello v2")

    # Deactivating the version (no other active one with the label): none again.
    v2_id = (await client.get("/api/v1/prompts", headers=headers,
                              params={"key": "greeting"})).json()["items"][0]["id"]
    resp = await client.patch(f"/api/v1/prompts/{v2_id}", headers=headers,
                              json={"is_active": False})
    assert resp.status_code == 200, resp.text
    await _until(database, user_id, "greeting", None)

    # Joining a group that has its own version: the group's now resolves.
    other_id, other_headers = other_user
    group = await make_group(database, (other_id, "admin"))
    await publish(client, other_headers, "greeting", "Hello team", scope="group",
                  group_id=str(group))
    assert await _use(database, user_id, "greeting") is None  # not a member yet
    async with database.transaction() as s:
        await s.execute(text("INSERT INTO user_group_memberships (id, user_id, group_id, role) "
                             "VALUES (gen_random_uuid(), :u, :g, 'member')"),
                        {"u": user_id, "g": group})
    await _until(database, user_id, "greeting", "Hello team")


async def test_usage_counting_does_not_drop_the_cache(
        listening: None, client: httpx.AsyncClient, database: Database, user: User) -> None:
    user_id, headers = user
    await publish(client, headers, "summary", "Summarise")
    await _until(database, user_id, "summary", "Summarise")
    # The publication's own notification may still be on its way (the read above can
    # see the commit first): count from after it.
    await _notifications_settled(database)
    generation = cache.CACHE.generation
    for _ in range(3):
        assert await _use(database, user_id, "summary") == "Summarise"
    await asyncio.sleep(0.3)  # a notification, had one been sent, has arrived
    assert cache.CACHE.generation == generation
    async with database.transaction() as s:
        count = await s.scalar(text("SELECT usage_count FROM system_prompts "
                                    "WHERE prompt_key = 'summary'"))
    assert count >= 4  # every use is still counted


async def test_without_a_listener_every_use_reads_the_database(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    user_id, headers = user
    await publish(client, headers, "plain", "First")
    assert await _use(database, user_id, "plain") == "First"
    async with database.transaction() as s:  # no notification needed: nothing is cached
        await s.execute(text("ALTER TABLE system_prompt_labels DISABLE TRIGGER USER"))
        await s.execute(text("DELETE FROM system_prompt_labels WHERE prompt_key = 'plain'"))
        await s.execute(text("ALTER TABLE system_prompt_labels ENABLE TRIGGER USER"))
    assert await _use(database, user_id, "plain") is None


async def test_a_cache_registered_after_start_up_is_subscribed_at_once(
        listening: None, database: Database) -> None:
    """A module imported after the listener connected (its cache registers then) still
    hears its channel, without waiting for a reconnect."""
    heard: list[str] = []
    states: list[bool] = []
    runtime.watch("roost_test_late", heard.append, states.append)
    deadline = time.monotonic() + 10
    while states != [True]:
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.02)
    async with database.transaction() as s:
        await s.execute(text("SELECT pg_notify('roost_test_late', 'hello')"))
    while heard != ["hello"]:
        assert time.monotonic() < deadline, heard
        await asyncio.sleep(0.02)


async def test_the_publishing_process_uses_its_new_version_at_once(
        client: httpx.AsyncClient, database: Database, user: User,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's next chat turn must not wait for the trigger's notification to come back
    to its own listener: a listener that never delivers, so only the commit itself can
    drop the cached resolution."""
    monkeypatch.setattr(runtime._Listened, "database", database.engine.url.database)
    monkeypatch.setattr(cache.CACHE, "listening", True)
    cache.CACHE.drop()
    user_id, headers = user
    await publish(client, headers, "answer", "Answer v1")
    assert await _use(database, user_id, "answer") == "Answer v1"  # cached from here on
    async with database.transaction() as s:  # unseen: no service write, no notification
        await s.execute(text("ALTER TABLE system_prompt_labels DISABLE TRIGGER USER"))
        await s.execute(text("DELETE FROM system_prompt_labels WHERE prompt_key = 'answer'"))
        await s.execute(text("ALTER TABLE system_prompt_labels ENABLE TRIGGER USER"))
    assert await _use(database, user_id, "answer") == "Answer v1"
    await publish(client, headers, "answer", "Answer v2")
    assert await _use(database, user_id, "answer") == "Answer v2"
    v2_id = (await client.get("/api/v1/prompts", headers=headers,
                              params={"key": "answer"})).json()["items"][0]["id"]
    resp = await client.patch(f"/api/v1/prompts/{v2_id}", headers=headers,
                              json={"is_active": False})
    assert resp.status_code == 200, resp.text
    assert await _use(database, user_id, "answer") is None
    cache.CACHE.drop()


async def test_entries_of_one_version_share_one_copy(
        listening: None, client: httpx.AsyncClient, database: Database,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's version used by many members is held once in the resolution cache (each
    entry held its own copy of the text and variables: 20,000 entries of a 10 MB version
    are 200 GB)."""
    lead_id, lead = await make_user(database)
    members = [await make_user(database) for _ in range(20)]
    g = await make_group(database, (lead_id, "admin"), *((m, "member") for m, _ in members))
    big = "Be helpful. " * 5_000  # 60,000 characters
    await publish(client, lead, "chat.system", big, scope="group", group_id=str(g))
    await _notifications_settled(database)
    for member_id, _ in members:
        assert await _use(database, member_id, "chat.system") == big
    entries = [v for v in cache.CACHE._entries.values() if v is not None]
    assert len(entries) >= 2
    copies = {id(e.prompt_text) for e in entries}
    held = sum(len(e.prompt_text) for e in {id(e.prompt_text): e for e in entries}.values())
    assert len(copies) == 1, f"{len(copies)} copies, {held:,} characters for one version"
    # Past the characters the cache may hold, a version is served but not cached.
    del entries  # (a version something still holds is shared, whatever its size)
    cache.CACHE.drop()
    monkeypatch.setattr(cache, "MAX_CACHED_CHARS", len(big) - 1)
    assert await _use(database, members[0][0], "chat.system") == big
    assert len(cache.CACHE) == 0
