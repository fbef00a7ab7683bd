"""Persona roles, a persona's id in other domains' bodies: a memory names only a persona or
agent its user sees (docs/memory.md: another tenant's is a 404), a document only a
persona its uploader is a member of (docs/knowledge.md: else 422)."""

from __future__ import annotations

import httpx

from roost.db.engine import Database
from tests.agents.api import Headers, create_agent
from tests.agents.roles import Checker, make_cast
from tests.support.sql import scalar


async def test_a_memory_names_no_persona_or_agent_of_another_tenant(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid)
    for actor, fields, code in (
        (c.outsider, {"persona_id": c.pid}, 404),
        (c.group_peer, {"persona_id": c.pid}, 404),
        (c.outsider, {"agent_id": agent["id"]}, 404),
        (c.viewer, {"persona_id": c.pid}, 201),  # their own memory, narrowed to it
    ):
        resp = await client.post("/api/v1/memories", headers=actor.headers,
                                 json={"content": "a fact", **fields})
        chk.check(f"POST /memories {sorted(fields)}", actor, resp, code, leak=("Falcon",))
    linked = await scalar(database, "SELECT count(*) FROM memories WHERE user_id IN "
                                    "(:a, :b) AND persona_id IS NOT NULL",
                          a=c.outsider.id, b=c.group_peer.id)
    chk.that(linked == 0, f"{linked} outsider memories linked to the persona")
    chk.done()


async def test_a_document_names_only_a_persona_its_uploader_is_a_member_of(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    for actor, code in ((c.outsider, 422), (c.group_peer, 422), (c.viewer, 202)):
        resp = await client.post("/api/v1/knowledge/documents", headers=actor.headers,
                                 files={"file": ("notes.txt", b"hello world", "text/plain")},
                                 data={"persona_id": c.pid})
        chk.check("POST /knowledge/documents {persona_id}", actor, resp, code, leak=("Falcon",))
    for table in ("documents", "ingestion_runs"):
        linked = await scalar(database, f"SELECT count(*) FROM {table} WHERE user_id IN "
                                        "(:a, :b) AND persona_id = :p",
                              a=c.outsider.id, b=c.group_peer.id, p=c.pid)
        chk.that(linked == 0, f"{linked} outsider {table} row(s) carry the persona's id")
    chk.done()
