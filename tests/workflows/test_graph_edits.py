"""Workflow graphs as users edit them: node ids equal but for the form of their accents
are one id; an active workflow never holds an empty graph, whatever the order of changes."""

from __future__ import annotations

import unicodedata

import httpx

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.workflows.graphs import edge, node, simple_graph

API = "/api/v1/workflows"


async def test_node_ids_differing_only_by_unicode_form_are_duplicates(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Two nodes shown as 'café' (typed composed, U+00E9, and decomposed, e + U+0301) are
    `duplicate_node_id` (the graph was valid: two look-alike ids, and an approval or a
    template naming one form missed the other node)."""
    _, headers = await make_user(database)
    graph = simple_graph()
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    graph["nodes"] += [node(nfc, "template", template="x"), node(nfd, "template", template="x")]
    graph["edges"] += [edge("a", "s", nfc), edge("b", "s", nfd), edge("c", nfc, "e"),
                       edge("d", nfd, "e")]
    answer = await client.post(f"{API}/validate", headers=headers, json=graph)
    assert answer.status_code == 200, answer.text
    codes = {e["code"] for e in answer.json()["errors"]}
    assert "duplicate_node_id" in codes, answer.json()


async def test_an_active_workflow_cannot_be_left_with_an_empty_draft(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Only a draft may hold an empty graph: set back to draft, emptied, then made active
    is a 422 (it was a 200: an active workflow with an empty graph)."""
    _, headers = await make_user(database)
    wid = (await client.post(API, headers=headers,
                             json={"name": "Flow", **simple_graph()})).json()["id"]
    assert (await client.post(f"{API}/{wid}/publish", headers=headers)).status_code == 201
    direct = await client.patch(f"{API}/{wid}", headers=headers, json={"nodes": [], "edges": []})
    assert direct.status_code == 422, direct.text  # refused while active
    assert (await client.patch(f"{API}/{wid}", headers=headers,
                               json={"status": "draft"})).status_code == 200
    assert (await client.patch(f"{API}/{wid}", headers=headers,
                               json={"nodes": [], "edges": []})).status_code == 200
    answer = await client.patch(f"{API}/{wid}", headers=headers, json={"status": "active"})
    assert answer.status_code in (409, 422), answer.text
