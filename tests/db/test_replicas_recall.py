"""Read-your-writes through a GET that writes (recall counting the memories it returns)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.db.test_replicas import Cluster, Roost, cluster, roost_factory  # noqa: F401
from tests.support.identity import make_user


async def test_a_recall_counted_by_get_search_is_read_back_by_the_same_client(
    cluster: Cluster, roost_factory: Callable[..., Awaitable[Roost]]  # noqa: F811
) -> None:
    """GET /api/v1/memories/search counts the memories it returns as recalled (an UPDATE
    on the primary): the same user's listing next shows that recall.  The middleware
    skipped every GET, so the listing came from a replica without it (access_count 0)."""
    roost = await roost_factory()
    user_id, headers = await make_user(roost.database)
    created = await roost.client.post("/api/v1/memories", headers=headers,
                                      json={"content": "the zebra likes blue paint"})
    assert created.status_code == 201, created.text
    await cluster.caught_up()
    await roost.wait_replica_used_for(user_id)
    await cluster.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        found = await roost.client.get("/api/v1/memories/search",
                                       params={"q": "zebra"}, headers=headers)
        assert found.status_code == 200, found.text
        assert [h["memory"]["access_count"] for h in found.json()["items"]] == [1]
        listed = await roost.client.get("/api/v1/memories", headers=headers)
        assert listed.status_code == 200, listed.text
        assert [m["access_count"] for m in listed.json()["items"]] == [1]
    finally:
        await cluster.replica_sql("SELECT pg_wal_replay_resume()")
