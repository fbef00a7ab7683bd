"""The workflows API: CRUD with XYFlow JSON unchanged, validation errors naming nodes and
edges, size limits, publish / versions / diff / rollback, tenancy."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.workflows.graphs import edge, node, simple_graph, ten_node_graph

API = "/api/v1/workflows"


async def _create(client: httpx.AsyncClient, headers: dict[str, str], name: str = "Flow",
                  **graph: Any) -> Any:
    answer = await client.post(API, headers=headers, json={"name": name, **graph})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_xyflow_json_round_trips_unchanged(client: httpx.AsyncClient,
                                                 database: Database) -> None:
    _, headers = await make_user(database)
    graph = ten_node_graph()
    created = await _create(client, headers, "Ten nodes", description="demo", **graph)
    assert created["status"] == "draft" and created["latest_version"] == 0
    got = (await client.get(f"{API}/{created['id']}", headers=headers)).json()
    for key in ("nodes", "edges", "viewport"):
        assert got[key] == graph[key]  # every canvas key kept: width, selected, measured...
    listed = (await client.get(API, headers=headers)).json()["items"]
    assert [w["id"] for w in listed] == [created["id"]] and "nodes" not in listed[0]

    moved = copy.deepcopy(graph["nodes"])
    moved[0]["position"] = {"x": 33.25, "y": -7}
    moved[0]["selected"] = True
    patched = await client.patch(f"{API}/{created['id']}", headers=headers,
                                 json={"nodes": moved, "name": "Renamed"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["nodes"] == moved and patched.json()["edges"] == graph["edges"]
    assert patched.json()["name"] == "Renamed"
    assert (await client.delete(f"{API}/{created['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"{API}/{created['id']}", headers=headers)).status_code == 404


async def test_an_empty_draft_may_be_saved_but_not_published(client: httpx.AsyncClient,
                                                             database: Database) -> None:
    _, headers = await make_user(database)
    created = await _create(client, headers)
    assert created["nodes"] == [] and created["viewport"] == {"x": 0, "y": 0, "zoom": 1}
    answer = await client.post(f"{API}/{created['id']}/publish", headers=headers)
    assert answer.status_code == 422 and "empty workflow" in answer.json()["detail"]


async def test_invalid_graphs_are_refused_naming_nodes_and_edges(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    graph = simple_graph()
    graph["nodes"].append(node("x", "teleport"))
    graph["nodes"].append(node("c", "condition", expression="x.__class__"))
    graph["edges"].append(edge("dangling", "l", "nowhere"))
    graph["edges"].append(edge("e-c", "l", "c"))
    answer = await client.post(API, headers=headers, json={"name": "Bad", **graph})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["type"].endswith("invalid-workflow")
    found = {(e["code"], e["node_id"], e["edge_id"]) for e in body["errors"]}
    assert ("unknown_node_type", "x", None) in found
    assert ("invalid_expression", "c", None) in found
    assert ("dangling_edge", None, "dangling") in found
    assert ("unreachable", "x", None) in found
    assert (await client.get(API, headers=headers)).json()["items"] == []  # nothing saved

    validated = await client.post(f"{API}/validate", headers=headers, json=graph)
    assert validated.status_code == 200
    assert validated.json()["valid"] is False and len(validated.json()["errors"]) == len(
        body["errors"])
    good = await client.post(f"{API}/validate", headers=headers, json=ten_node_graph())
    assert good.json() == {"valid": True, "errors": [], "node_count": 10, "edge_count": 12}

    created = await _create(client, headers, **simple_graph())
    cyclic = simple_graph()
    cyclic["edges"].append(edge("back", "l", "l"))
    patched = await client.patch(f"{API}/{created['id']}", headers=headers,
                                 json={"edges": cyclic["edges"]})
    assert patched.status_code == 422
    assert [e["code"] for e in patched.json()["errors"]] == ["cycle"]
    assert patched.json()["errors"][0]["node_id"] == "l"


async def test_a_cycle_back_through_a_loops_done_output_is_refused_at_save(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A loop whose ``done`` branch leads back into it would never end: 422
    invalid-workflow naming the cycle, nothing saved."""
    _, headers = await make_user(database)
    nodes = [node("start", "start"), node("again", "loop", max_iterations=3),
             node("b", "template", template="b"), node("t", "template", template="t"),
             node("done", "end", output="x")]
    edges = [edge("e1", "start", "again"), edge("e2", "again", "b", "body"),
             edge("e3", "b", "again"), edge("e4", "again", "t", "done"),
             edge("e5", "t", "again"), edge("e6", "again", "done", "done")]
    answer = await client.post(API, headers=headers,
                               json={"name": "Again", "nodes": nodes, "edges": edges})
    assert answer.status_code == 422, answer.text
    assert answer.json()["type"].endswith("invalid-workflow")
    assert [e["code"] for e in answer.json()["errors"]] == ["cycle"]
    assert (await client.get(API, headers=headers)).json()["items"] == []


async def test_hostile_template_refused_at_save(client: httpx.AsyncClient,
                                                database: Database) -> None:
    _, headers = await make_user(database)
    hostile = simple_graph(prompt="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    answer = await client.post(API, headers=headers, json={"name": "Evil", **hostile})
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["code"] == "invalid_template" and error["node_id"] == "l"


@pytest.mark.parametrize("template", ["{{ x" + " | upper" * 6000 + " }}",
                                      "{{ " + "a." * 10000 + "b }}",
                                      "{{ " + "1 + " * 10000 + "1 }}"],
                         ids=["filters", "attributes", "plus"])
async def test_a_long_chain_in_a_template_is_a_422_naming_the_node(
    client: httpx.AsyncClient, database: Database, template: str,
) -> None:
    """40-50 kB of chained filters, attributes or operators (under the template size cap)
    nest the template's tree thousands deep: a 422 at save, an error at /validate, not a
    RecursionError's 500."""
    _, headers = await make_user(database)
    graph = simple_graph(prompt=template)
    saved = await client.post(API, headers=headers, json={"name": "Chain", **graph})
    checked = await client.post(f"{API}/validate", headers=headers, json=graph)
    assert (saved.status_code, checked.status_code) == (422, 200), (saved.text[:300],
                                                                    checked.text[:300])
    assert checked.json()["valid"] is False
    for answer in (saved, checked):
        [error] = answer.json()["errors"]
        assert error["code"] == "invalid_template" and error["node_id"] == "l"
        assert "nests deeper than" in error["message"]
    assert (await client.get(API, headers=headers)).json()["items"] == []


async def test_publish_versions_diff_rollback(client: httpx.AsyncClient,
                                              database: Database) -> None:
    user_id, headers = await make_user(database)
    graph = ten_node_graph()
    wf = await _create(client, headers, **graph)
    url = f"{API}/{wf['id']}"
    v1 = await client.post(f"{url}/publish", headers=headers, json={"note": "first"})
    assert v1.status_code == 201, v1.text
    assert v1.json()["version"] == 1 and v1.json()["nodes"] == graph["nodes"]
    assert v1.json()["published_by"] == str(user_id) and len(v1.json()["content_hash"]) == 64
    again = await client.post(f"{url}/publish", headers=headers)
    assert again.status_code == 409 and "unchanged since version 1" in again.json()["detail"]
    assert (await client.get(url, headers=headers)).json()["status"] == "active"

    changed = copy.deepcopy(graph)
    changed["nodes"][1]["data"]["prompt"] = "Answer in detail: {{ question }}"
    changed["nodes"] = [n for n in changed["nodes"] if n["id"] != "search"]
    changed["edges"] = [e for e in changed["edges"] if "search" not in e["id"]]
    changed["nodes"].append(node("web", "tool", tool="fetch", arguments={"url": "{{ question }}"}))
    changed["edges"] += [edge("e-fan-web", "fan", "web"), edge("e-web-merge", "web", "merge")]
    assert (await client.patch(url, headers=headers, json=changed)).status_code == 200
    v2 = await client.post(f"{url}/publish", headers=headers)
    assert v2.status_code == 201 and v2.json()["version"] == 2

    versions = (await client.get(f"{url}/versions", headers=headers)).json()
    assert [(v["version"], v["note"]) for v in versions] == [(2, None), (1, "first")]
    one = (await client.get(f"{url}/versions/1", headers=headers)).json()
    assert one["nodes"] == graph["nodes"] and one["edges"] == graph["edges"]
    assert (await client.get(f"{url}/versions/3", headers=headers)).status_code == 404

    diff = (await client.get(f"{url}/diff", headers=headers,
                             params={"from": "1", "to": "2"})).json()
    assert diff["nodes"] == {"added": ["web"], "removed": ["search"],
                             "changed": [{"id": "ask", "fields": ["data"]}]}
    assert diff["edges"]["added"] == ["e-fan-web", "e-web-merge"]
    assert diff["edges"]["removed"] == ["e-fan-search", "e-search-merge"]
    assert diff["viewport_changed"] is False
    draft = (await client.get(f"{url}/diff", headers=headers, params={"from": "2"})).json()
    assert draft["to_version"] == "draft" and draft["nodes"]["changed"] == []
    bad = await client.get(f"{url}/diff", headers=headers, params={"from": "x"})
    assert bad.status_code == 422

    rolled = await client.post(f"{url}/rollback", headers=headers, json={"version": 1})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["nodes"] == graph["nodes"] and rolled.json()["latest_version"] == 2
    v3 = await client.post(f"{url}/publish", headers=headers)
    assert v3.json()["version"] == 3 and v3.json()["content_hash"] == v1.json()["content_hash"]
    assert (await client.post(f"{url}/rollback", headers=headers,
                              json={"version": 9})).status_code == 404

    async with database.transaction() as session:  # versions are immutable
        with pytest.raises(DBAPIError, match="immutable"):
            await session.execute(text("UPDATE workflow_versions SET note = 'x'"))


async def test_activation_needs_a_version_and_archived_cannot_publish(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    wf = await _create(client, headers, **simple_graph())
    url = f"{API}/{wf['id']}"
    assert (await client.patch(url, headers=headers,
                               json={"status": "active"})).status_code == 409
    assert (await client.patch(url, headers=headers,
                               json={"status": "archived"})).status_code == 200
    assert (await client.post(f"{url}/publish", headers=headers)).status_code == 409
    assert (await client.patch(url, headers=headers, json={"nodes": None})).status_code == 422


async def test_another_users_workflow_is_404(client: httpx.AsyncClient,
                                             database: Database) -> None:
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    wf = await _create(client, alice, **simple_graph())
    url = f"{API}/{wf['id']}"
    assert (await client.post(f"{url}/publish", headers=alice)).status_code == 201
    for method, path, body in (
        ("GET", url, None), ("PATCH", url, {"name": "mine"}), ("DELETE", url, None),
        ("POST", f"{url}/publish", None), ("GET", f"{url}/versions", None),
        ("GET", f"{url}/versions/1", None), ("GET", f"{url}/diff?from=1", None),
        ("POST", f"{url}/rollback", {"version": 1}),
    ):
        answer = await client.request(method, path, headers=bob, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await client.get(API, headers=bob)).json()["items"] == []
    async with database.transaction() as session:  # row-level security, the second wall
        count = await session.scalar(text("SELECT count(*) FROM workflows"))
    assert count == 1
    assert (await client.get(f"{API}/{uuid.uuid4()}", headers=alice)).status_code == 404


@pytest.mark.parametrize("ref", ["²", "¹", "\u0661"])  # \u0661: Arabic-Indic one
async def test_a_diff_ref_of_non_ascii_digits_is_a_422(client: httpx.AsyncClient,
                                                      database: Database, ref: str) -> None:
    """`from=²` is not a version number (str.isdigit says it is): 422 like `from=x`."""
    _, headers = await make_user(database)
    created = await _create(client, headers, **simple_graph())
    answer = await client.get(f"{API}/{created['id']}/diff", headers=headers,
                              params={"from": ref})
    assert answer.status_code == 422, answer.text


async def test_rollback_to_a_version_out_of_range_is_a_422(client: httpx.AsyncClient,
                                                          database: Database) -> None:
    """Rollback to version 2**31 is out of range (422, like the version of a run), not a
    generic 400 from the database."""
    _, headers = await make_user(database)
    created = await _create(client, headers, **simple_graph())
    answer = await client.post(f"{API}/{created['id']}/rollback", headers=headers,
                               json={"version": 2**31})
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize("field", ["name", "description"])
async def test_a_nul_in_a_workflows_text_is_a_422_naming_it(
    client: httpx.AsyncClient, database: Database, field: str,
) -> None:
    """A NUL in the name or description (text holds none) is a 422 naming the field, on
    create and on update, not the database's anonymous 400; nothing changes."""
    _, headers = await make_user(database)
    created = await client.post(API, headers=headers,
                                json={"name": "Flow", field: "a\x00b", **simple_graph()})
    assert created.status_code == 422, created.text
    assert field in created.text and "NUL" in created.text
    wf = await _create(client, headers, **simple_graph())
    patched = await client.patch(f"{API}/{wf['id']}", headers=headers, json={field: "a\x00b"})
    assert patched.status_code == 422, patched.text
    assert field in patched.text
    assert (await client.get(f"{API}/{wf['id']}", headers=headers)).json()["name"] == wf["name"]


def _templated(inputs: list[str]) -> dict[str, Any]:
    return {"nodes": [node("s", "start", inputs=inputs), node("t", "template", template="Hi"),
                      node("e", "end", output="{{ t.output }}")],
            "edges": [edge("e1", "s", "t"), edge("e2", "t", "e")]}


async def test_a_viewport_number_too_large_for_a_float_is_a_422_not_a_500(
        client: httpx.AsyncClient, database: Database) -> None:
    """A viewport coordinate like 10**400 (math.isfinite overflows on it) is an
    invalid_viewport problem at /validate, create and update, not a 500."""
    _, headers = await make_user(database)
    g = {"nodes": [node("s", "start"), node("e", "end")], "edges": [edge("x", "s", "e")],
         "viewport": {"x": 10**400, "y": 0, "zoom": 1}}
    checked = await client.post(f"{API}/validate", headers=headers, json=g)
    assert checked.status_code == 200, checked.text
    assert [e["code"] for e in checked.json()["errors"]] == ["invalid_viewport"]
    created = await client.post(API, headers=headers, json={"name": "x", **g})
    assert created.status_code == 422, created.text
    wf = await _create(client, headers, **_templated(["q"]))
    patched = await client.patch(f"{API}/{wf['id']}", headers=headers,
                                 json={"viewport": {"x": 0, "y": 0, "zoom": 10**400}})
    assert patched.status_code == 422, patched.text
    shown = (await client.get(f"{API}/{wf['id']}", headers=headers)).json()
    assert shown["viewport"] == wf["viewport"]


async def test_a_node_position_far_from_the_origin_is_a_422_naming_the_node(
        client: httpx.AsyncClient, database: Database) -> None:
    """Positions of 1e308 and -1e308 were saved: the console's drawing of the graph's
    extent overflowed to Infinity and drew nothing. At most 10**6 from the origin."""
    _, headers = await make_user(database)
    g = {"nodes": [node("s", "start", -1e308, 0), node("e", "end", 1e6, -1e6, output="x")],
         "edges": [edge("x", "s", "e")]}
    checked = await client.post(f"{API}/validate", headers=headers, json=g)
    assert [(e["code"], e["node_id"]) for e in checked.json()["errors"]] == [
        ("invalid_position", "s")], checked.text
    created = await client.post(API, headers=headers, json={"name": "far", **g})
    assert created.status_code == 422 and "position" in created.text, created.text


async def test_a_document_id_with_a_trailing_newline_is_refused_at_save(
        client: httpx.AsyncClient, database: Database) -> None:
    """document_ids are 8-4-4-4-12 hex UUIDs: one ending in a newline (which a schema
    pattern ending in $ let through) is invalid_data at save, not a failure at run time."""
    _, headers = await make_user(database)
    g = {"nodes": [node("s", "start"),
                   node("k", "knowledge", query="x",
                        document_ids=["01234567-89ab-cdef-0123-456789abcdef\n"]),
                   node("e", "end")], "edges": [edge("e1", "s", "k"), edge("e2", "k", "e")]}
    checked = await client.post(f"{API}/validate", headers=headers, json=g)
    assert checked.status_code == 200, checked.text
    assert [(e["code"], e["node_id"]) for e in checked.json()["errors"]] == \
        [("invalid_data", "k")]


async def test_a_start_node_naming_an_input_twice_is_refused_naming_the_repeat(
        client: httpx.AsyncClient, database: Database) -> None:
    """A start node whose data.inputs names "topic" twice is invalid_data at validate and a
    422 at save, naming the repeat; before, it was accepted and the run form showed two
    fields sharing one id."""
    _, headers = await make_user(database)
    twice = _templated(["topic", "topic"])
    checked = await client.post(f"{API}/validate", headers=headers, json=twice)
    assert checked.status_code == 200, checked.text
    assert [(e["code"], e["node_id"], e["message"]) for e in checked.json()["errors"]] == \
        [("invalid_data", "s", "start node: data.inputs: must not repeat 'topic'")]
    saved = await client.post(API, headers=headers, json={"name": "Twice", **twice})
    assert saved.status_code == 422 and "must not repeat 'topic'" in saved.text, saved.text


async def test_an_input_name_with_a_trailing_newline_is_not_an_identifier(
        client: httpx.AsyncClient, database: Database) -> None:
    """A start input, an output_key or a run's input named "q\\n" is refused: names are
    identifiers, a final newline included."""
    _, headers = await make_user(database)
    checked = await client.post(f"{API}/validate", headers=headers, json=_templated(["q\n"]))
    assert [e["code"] for e in checked.json()["errors"]] == ["invalid_data"], checked.text
    keyed = _templated(["q"])
    keyed["nodes"][1]["data"]["output_key"] = "inputs\n"
    checked = await client.post(f"{API}/validate", headers=headers, json=keyed)
    assert [e["code"] for e in checked.json()["errors"]] == ["invalid_data"], checked.text
    wf = await _create(client, headers, **_templated([]))
    assert (await client.post(f"{API}/{wf['id']}/publish", headers=headers)).status_code == 201
    run = await client.post(f"{API}/{wf['id']}/runs", headers=headers,
                            json={"inputs": {"q\n": 1}})
    assert run.status_code == 422 and "identifiers" in run.text, run.text
