"""Workflow graphs as users edit them: node ids equal but for the form of their accents
are one id (stored composed: an edge or an approval naming either form reaches the node);
look-alike ids and names templates would see twice are refused; an active workflow never
holds an empty graph, whatever the order of changes, and a draft may be emptied in the
same change that makes it one."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.workflows.graphs import edge, node, simple_graph

API = "/api/v1/workflows"
RUNS = "/api/v1/workflow-runs"
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


async def _published(client: httpx.AsyncClient, headers: dict[str, str],
                     nodes: list[Any], edges: list[Any]) -> dict[str, Any]:
    created = await client.post(API, headers=headers,
                                json={"name": "Flow", "nodes": nodes, "edges": edges})
    assert created.status_code == 201, created.text
    published = await client.post(f"{API}/{created.json()['id']}/publish", headers=headers)
    assert published.status_code == 201, published.text
    workflow: dict[str, Any] = created.json()
    return workflow


async def _errors(client: httpx.AsyncClient, headers: dict[str, str], nodes: list[Any],
                  edges: list[Any]) -> list[dict[str, Any]]:
    answer = await client.post(f"{API}/validate", headers=headers,
                               json={"nodes": nodes, "edges": edges})
    assert answer.status_code == 200, answer.text
    errors: list[dict[str, Any]] = answer.json()["errors"]
    return errors


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


async def test_a_node_id_typed_decomposed_is_stored_composed_and_reached_by_either_form(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An edge naming the node 'café' decomposed connects to it (it was a dangling edge and
    the nodes after it unreachable); the graph is stored with the composed id, and the
    approval 'café' is decided by its id typed either way (it was a 404 naming a node
    that looks exactly like the one there)."""
    _, headers = await make_user(database)
    assert await _errors(client, headers,
                         [node("s", "start"), node(NFC, "template", template="x"),
                          node("e", "end")],
                         [edge("e1", "s", NFD), edge("e2", NFC, "e")]) == []
    workflow = await _published(
        client, headers,
        [node("s", "start"), node(NFD, "approval", message="ok?"), node("e", "end")],
        [edge("e1", "s", NFD), edge("e2", NFD, "e", "approved")])
    assert [n["id"] for n in workflow["nodes"]][1] == NFC
    assert [(e["source"], e["target"]) for e in workflow["edges"]] == [("s", NFC), (NFC, "e")]
    for spelled in (NFD, NFC):
        started = await client.post(f"{API}/{workflow['id']}/runs", headers=headers, json={})
        assert started.status_code == 202, started.text
        answer = await client.post(
            f"{RUNS}/{started.json()['id']}/approvals/{quote(spelled, safe='')}",
            headers=headers, json={"approved": True})
        assert answer.status_code == 200, answer.text


async def test_a_long_composed_approval_id_is_decided_by_its_decomposed_url(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An approval id of 200 'é' (within the 255 limit, stored composed) named decomposed
    in the URL, 400 code points as a macOS keyboard types them, decides the approval (it
    was a 422 "at most 255 characters" on the path, before composing)."""
    _, headers = await make_user(database)
    node_id = "\u00e9" * 200
    workflow = await _published(
        client, headers,
        [node("s", "start"), node(node_id, "approval", message="ok?"), node("e", "end")],
        [edge("e1", "s", node_id), edge("e2", node_id, "e", "approved")])
    started = await client.post(f"{API}/{workflow['id']}/runs", headers=headers, json={})
    assert started.status_code == 202, started.text
    decomposed = unicodedata.normalize("NFD", node_id)
    answer = await client.post(
        f"{RUNS}/{started.json()['id']}/approvals/{quote(decomposed, safe='')}",
        headers=headers, json={"approved": True})
    assert answer.status_code == 200, answer.text[:400]
    assert answer.json()["status"] == "completed"


async def test_a_node_id_with_an_invisible_character_is_refused(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """'ask' and 'ask' + a zero-width space look the same on the canvas and in an
    approval's URL: an id holding an invisible character is an invalid node."""
    _, headers = await make_user(database)
    errors = await _errors(
        client, headers,
        [node("s", "start"), node("ask", "template", template="a"),
         node("ask\u200b", "template", template="b"), node("e", "end")],
        [edge("e1", "s", "ask"), edge("e2", "s", "ask\u200b"), edge("e3", "ask", "e"),
         edge("e4", "ask\u200b", "e")])
    assert [(e["code"], e["node_id"]) for e in errors] == [("invalid_node", "ask\u200b")], errors


@pytest.mark.parametrize("case", ["input-and-node", "two-output-keys", "key-and-node"])
async def test_a_name_templates_would_see_twice_is_refused(
    client: httpx.AsyncClient, database: Database, case: str,
) -> None:
    """A start input named like a node, two nodes with one output_key, an output_key
    named like another node: templates see one name for two values (whichever was set
    last, unpredictable on parallel branches), so the graph is invalid, naming both."""
    _, headers = await make_user(database)
    start_inputs = ["ask"] if case == "input-and-node" else []
    a_key = {"two-output-keys": "out", "key-and-node": "b"}.get(case)
    b_key = "out" if case == "two-output-keys" else None
    nodes = [node("s", "start", inputs=start_inputs),
             node("ask" if case == "input-and-node" else "a", "template", template="A",
                  **({"output_key": a_key} if a_key else {})),
             node("b", "template", template="B", **({"output_key": b_key} if b_key else {})),
             node("e", "end", output="done")]
    first = nodes[1]["id"]
    errors = await _errors(client, headers, nodes,
                           [edge("e1", "s", first), edge("e2", first, "b"), edge("e3", "b", "e")])
    assert [e["code"] for e in errors] == ["invalid_data"], errors
    assert "templates see one name for both" in errors[0]["message"]
    # A node's own id as its output_key is one value: fine.
    nodes[2] = node("b", "template", template="B", output_key="b")
    nodes[1] = node("a", "template", template="A")
    assert await _errors(client, headers, [nodes[0], nodes[1], nodes[2], nodes[3]],
                         [edge("e1", "s", "a"), edge("e2", "a", "b"), edge("e3", "b", "e")]) == []


async def test_a_run_input_with_a_reserved_name_is_refused(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """'nodes' and 'inputs' are reserved: a run given such an input (its start declaring
    none) never saw it in templates; a 422 naming inputs."""
    _, headers = await make_user(database)
    workflow = await _published(client, headers,
                                [node("s", "start"), node("e", "end", output="{{ nodes }}")],
                                [edge("e1", "s", "e")])
    for name in ("nodes", "inputs"):
        answer = await client.post(f"{API}/{workflow['id']}/runs", headers=headers,
                                   json={"inputs": {name: "mine"}})
        assert answer.status_code == 422 and answer.json()["field"] == "inputs", answer.text


async def test_an_active_workflow_set_back_to_draft_and_emptied_in_one_change(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """One PATCH setting an active workflow back to draft and emptying it is accepted, as
    the same two changes in two PATCHes are (it was a 422 start_count)."""
    _, headers = await make_user(database)
    workflow = await _published(client, headers,
                                [node("s", "start"), node("e", "end", output="one")],
                                [edge("e1", "s", "e")])
    answer = await client.patch(f"{API}/{workflow['id']}", headers=headers,
                                json={"status": "draft", "nodes": [], "edges": []})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["nodes"]) == ("draft", [])


@pytest.mark.parametrize("name", ["\u200b\u200b", " \ufeff ", "\u3164"])
async def test_a_workflow_name_that_shows_nothing_is_refused(
    client: httpx.AsyncClient, database: Database, name: str,
) -> None:
    """A name of zero-width spaces, a BOM or a Hangul filler shows nothing in any list: a
    422 naming `name` on creation and on renaming (it was created, nameless to the eye);
    such characters around a name are dropped."""
    _, headers = await make_user(database)
    made = await client.post(API, headers=headers, json={"name": name, **simple_graph()})
    assert made.status_code == 422 and made.json()["field"] == "name", made.text
    kept = await client.post(API, headers=headers,
                             json={"name": f"\u200bFlow{name}", **simple_graph()})
    assert kept.status_code == 201 and kept.json()["name"] == "Flow", kept.text
    renamed = await client.patch(f"{API}/{kept.json()['id']}", headers=headers,
                                 json={"name": name})
    assert renamed.status_code == 422 and renamed.json()["field"] == "name", renamed.text


async def test_a_name_of_100_letters_with_a_trailing_zero_width_space_is_accepted(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A name's limit (100) counts it as stored, without the invisible characters at its
    ends: 100 letters pasted with a trailing zero-width space are the 100-letter name, on
    creation and renaming (it was a 422 counting the space), and 101 a 422 naming `name`."""
    _, headers = await make_user(database)
    made = await client.post(API, headers=headers, json={"name": "a" * 100 + "\u200b"})
    assert made.status_code == 201 and made.json()["name"] == "a" * 100, made.text
    renamed = await client.patch(f"{API}/{made.json()['id']}", headers=headers,
                                 json={"name": "\u200b" + "b" * 100})
    assert renamed.status_code == 200 and renamed.json()["name"] == "b" * 100, renamed.text
    for sent in ("a" * 101, "\u200b" + "a" * 101 + "\u200b"):
        over = await client.post(API, headers=headers, json={"name": sent})
        assert over.status_code == 422 and over.json()["field"] == "name", over.text
        over = await client.patch(f"{API}/{made.json()['id']}", headers=headers,
                                  json={"name": sent})
        assert over.status_code == 422 and over.json()["field"] == "name", over.text
