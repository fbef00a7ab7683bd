"""10,000 nodes: a 413 naming the limit, from the node count alone (checked before any
per-node work), at save and at /validate; the caps on templates; a large graph validated
off the event loop.  The request-size limit is the production default here (10 MB), so
the graph reaches the workflow service."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.workflows import graph
from roost.workflows.graph import (
    MAX_ARGUMENT_TEMPLATES,
    MAX_EDGES,
    MAX_NODES,
    MAX_TEMPLATES,
)
from tests.support.identity import make_user
from tests.workflows.graphs import edge, node

API = "/api/v1/workflows"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True)


@pytest.mark.parametrize("path", [API, f"{API}/validate"])
async def test_ten_thousand_nodes_are_refused_with_the_limit(
    client: httpx.AsyncClient, database: Database, path: str,
) -> None:
    _, headers = await make_user(database)
    nodes = [node("s", "start")] + [node(f"n{i}", "llm", prompt="{{ x }}")
                                    for i in range(9_998)] + [node("e", "end")]
    body = {"nodes": nodes, **({"name": "Huge"} if path == API else {})}
    answer = await client.post(path, headers=headers, json=body)
    assert answer.status_code == 413, answer.text
    problem = answer.json()
    assert problem["limit"] == MAX_NODES and problem["count"] == 10_000
    assert problem["what"] == "nodes"
    assert f"the limit is {MAX_NODES} nodes" in problem["detail"]
    assert (await client.get(API, headers=headers)).json()["items"] == []


async def test_too_many_edges_too(client: httpx.AsyncClient, database: Database) -> None:
    _, headers = await make_user(database)
    edges = [edge(f"e{i}", "s", "e") for i in range(MAX_EDGES + 1)]
    answer = await client.post(f"{API}/validate", headers=headers,
                               json={"nodes": [node("s", "start"), node("e", "end")],
                                     "edges": edges})
    assert answer.status_code == 413 and answer.json()["limit"] == MAX_EDGES


async def test_a_graph_at_the_limit_is_validated(client: httpx.AsyncClient,
                                                 database: Database) -> None:
    _, headers = await make_user(database)
    ids = ["s"] + [f"n{i}" for i in range(MAX_NODES - 2)] + ["e"]
    nodes = [node("s", "start")] + [node(i, "llm", prompt="{{ input }}") for i in ids[1:-1]] \
        + [node("e", "end")]
    edges = [edge(f"e{i}", a, b) for i, (a, b) in enumerate(itertools.pairwise(ids))]
    answer = await client.post(API, headers=headers, json={"name": "Long", "nodes": nodes,
                                                           "edges": edges})
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["nodes"]) == MAX_NODES


def _tools(*arguments: dict[str, Any]) -> dict[str, Any]:
    """start -> a tool node per ``arguments`` -> end."""
    ids = ["s"] + [f"t{i}" for i in range(len(arguments))] + ["e"]
    nodes = [node("s", "start")] + [node(f"t{i}", "tool", tool="t", arguments=a)
                                    for i, a in enumerate(arguments)] + [node("e", "end")]
    edges = [edge(f"e{i}", a, b) for i, (a, b) in enumerate(itertools.pairwise(ids))]
    return {"nodes": nodes, "edges": edges}


async def test_a_tool_node_with_too_many_argument_strings_is_refused(
        client: httpx.AsyncClient, database: Database) -> None:
    """Every string of a tool's arguments is a template, parsed at save: 200,000 of them
    in a 2 MB body were seconds of work; over 1,000 per node is too_many_templates."""
    _, headers = await make_user(database)
    at_limit = _tools({"x": ["{{ a }}"] * MAX_ARGUMENT_TEMPLATES})
    checked = await client.post(f"{API}/validate", headers=headers, json=at_limit)
    assert checked.json()["valid"], checked.text
    over = _tools({"x": ["{{ a }}"] * 200_000})
    checked = await client.post(f"{API}/validate", headers=headers, json=over)
    assert checked.status_code == 200, checked.text
    errors = checked.json()["errors"]
    assert [(e["code"], e["node_id"]) for e in errors] == [("too_many_templates", "t0")]
    assert f"the limit is {MAX_ARGUMENT_TEMPLATES} per node" in errors[0]["message"]
    saved = await client.post(API, headers=headers, json={"name": "Many", **over})
    assert saved.status_code == 422 and "too_many_templates" in saved.text, saved.text
    assert (await client.get(API, headers=headers)).json()["items"] == []


async def test_a_graph_with_too_many_templates_is_refused(client: httpx.AsyncClient,
                                                          database: Database) -> None:
    _, headers = await make_user(database)
    per_node = MAX_ARGUMENT_TEMPLATES
    over = _tools(*[{"x": ["{{ a }}"] * per_node}] * (MAX_TEMPLATES // per_node + 1))
    checked = await client.post(f"{API}/validate", headers=headers, json=over)
    assert checked.status_code == 200, checked.text
    errors = checked.json()["errors"]
    assert [e["code"] for e in errors] == ["too_many_templates"], errors
    assert f"the limit is {MAX_TEMPLATES} per workflow" in errors[0]["message"]


async def test_a_graph_of_few_nodes_but_a_large_body_is_validated_off_the_event_loop(
        client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The choice between validating inline and in a thread goes by the graph's size, not
    its node count: 3 nodes holding 1,000 long argument templates are validated in a
    thread, the event loop serving other requests meanwhile; a small graph inline."""
    _, headers = await make_user(database)
    threads: list[int] = []
    real = graph.validate_graph

    def recording(*args: Any) -> list[graph.Issue]:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(graph, "validate_graph", recording)
    loop_thread = threading.get_ident()
    big = _tools({"x": ["{{ a }}" + "x" * 500] * MAX_ARGUMENT_TEMPLATES})
    small = _tools({"x": "{{ a }}"})
    for body in (big, small):
        checked = await client.post(f"{API}/validate", headers=headers, json=body)
        assert checked.json()["valid"], checked.text
    assert len(threads) == 2 and threads[0] != loop_thread and threads[1] == loop_thread
