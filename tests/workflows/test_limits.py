"""10,000 nodes: a 413 naming the limit, from the node count alone (checked before any
per-node work), at save and at /validate.  The request-size limit is the production
default here (10 MB), so the graph reaches the workflow service."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.workflows.graph import MAX_EDGES, MAX_NODES
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
