"""``roost workflows ls|validate|publish`` as a user runs them (the real console script)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from roost.db.engine import Database
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.workflows.graphs import edge, simple_graph, ten_node_graph


async def test_workflows_from_the_command_line(
    pg_server: PgTestServer, db_name: str, database: Database, client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data")}

    def roost(*args: str) -> subprocess.CompletedProcess[str]:
        return run_roost(*args, env=env)

    _, headers = await make_user(database, username="wanda")
    await make_user(database, username="other")
    created = await client.post("/api/v1/workflows", headers=headers,
                                json={"name": "Digest", **ten_node_graph()})
    assert created.status_code == 201
    wf_id = created.json()["id"]

    good = tmp_path / "good.json"
    good.write_text(json.dumps(simple_graph()))
    bad_graph = simple_graph()
    bad_graph["edges"].append(edge("loose", "l", "missing"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_graph))

    # Each command is a process start (seconds on a busy machine): only what matters.
    ok = roost("workflows", "validate", str(good))
    assert ok.returncode == 0 and "valid: 3 nodes, 2 edges" in ok.stdout, ok.stderr
    refused = roost("workflows", "validate", str(bad))
    assert refused.returncode == 1 and "dangling_edge" in refused.stdout
    assert "loose" in refused.stdout and "1 problem" in refused.stderr

    assert "valid: 10 nodes" in roost("workflows", "validate", "Digest", "--user", "wanda").stdout
    published = roost("workflows", "publish", wf_id[:13], "--user", "wanda", "--note", "v1")
    assert published.returncode == 0, published.stderr
    assert "Published Digest version 1" in published.stdout
    again = roost("workflows", "publish", "Digest", "--user", "wanda")
    assert again.returncode == 1 and "unchanged since version 1" in again.stderr
    listed = roost("workflows", "ls", "--user", "wanda")
    assert wf_id in listed.stdout and "active" in listed.stdout
    hidden = roost("workflows", "publish", "Digest", "--user", "other")
    assert hidden.returncode == 1 and "no workflow you can see" in hidden.stderr
