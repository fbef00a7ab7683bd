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
from tests.workflows.graphs import edge, node, simple_graph, ten_node_graph


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


async def test_run_and_resume_from_the_command_line(
    pg_server: PgTestServer, db_name: str, database: Database, client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data")}
    _, headers = await make_user(database, username="rita")
    graph = {"nodes": [node("s", "start", inputs=["name"]),
                       node("greet", "template", template="Hello, {{ name }}"),
                       node("check", "condition", expression="name != 'nobody'"),
                       node("e", "end", output="{{ greet.output }}!"),
                       node("no", "end", output="no one")],
             "edges": [edge("1", "s", "greet"), edge("2", "greet", "check"),
                       edge("3", "check", "e", "true"), edge("4", "check", "no", "false")]}
    created = await client.post("/api/v1/workflows", headers=headers,
                                json={"name": "Greeter", **graph})
    assert (await client.post(f"/api/v1/workflows/{created.json()['id']}/publish",
                              headers=headers)).status_code == 201

    ran = run_roost("workflows", "run", "Greeter", "--user", "rita", "-i", "name=Ada", env=env)
    assert ran.returncode == 0, ran.stderr
    assert "completed  greet (template)" in ran.stdout and "Hello, Ada!" in ran.stdout
    missing = run_roost("workflows", "run", "Greeter", "--user", "rita", env=env)
    assert missing.returncode == 1 and "missing 'name'" in missing.stderr
    run_id = ran.stdout.split("Run ", 1)[1].split()[0]
    done = run_roost("workflows", "resume", run_id, "--user", "rita", env=env)
    assert done.returncode == 1 and "only a failed run can be resumed" in done.stderr
    # A model node waits for a worker (none here): past --timeout, exit 2 as `agents run`
    # and `debates start` (it was 1, as a failed run).
    waiting = await client.post("/api/v1/workflows", headers=headers, json={
        "name": "Waiter", "nodes": [node("s", "start"), node("ask", "llm", prompt="hi"),
                                    node("e", "end", output="{{ ask.output }}")],
        "edges": [edge("1", "s", "ask"), edge("2", "ask", "e")]})
    assert (await client.post(f"/api/v1/workflows/{waiting.json()['id']}/publish",
                              headers=headers)).status_code == 201
    slow = run_roost("workflows", "run", "Waiter", "--user", "rita", "--timeout", "1", env=env)
    assert slow.returncode == 2 and "Still running" in slow.stderr, (slow.returncode, slow.stderr)


async def test_deep_json_files_and_pattern_characters_fail_in_one_line(
    pg_server: PgTestServer, db_name: str, database: Database, client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """`validate FILE` and `run --inputs-json FILE` with JSON nested 100,000 deep, `run`
    with an input holding a NUL, `validate` of a template chaining 6,000 filters: one line,
    exit 1, no traceback.  `publish %` names no workflow (a reference is not a LIKE
    pattern): the user's only workflow stays as it was."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data")}
    _, headers = await make_user(database, username="wanda")
    created = await client.post("/api/v1/workflows", headers=headers,
                                json={"name": "Digest", **simple_graph()})
    assert created.status_code == 201
    deep = tmp_path / "deep.json"
    deep.write_text('{"nodes": ' + "[" * 100_000 + "]" * 100_000 + ', "edges": []}')
    for args in (("workflows", "validate", str(deep)),
                 ("workflows", "run", "Digest", "--user", "wanda", "--inputs-json", str(deep))):
        out = run_roost(*args, env=env)
        assert out.returncode == 1, out.stderr[-300:]
        assert "Traceback" not in out.stderr and "nested too deep" in out.stderr, \
            (args[:2], out.stderr[-300:])
    nul = tmp_path / "nul.json"
    nul.write_text('{"doc": "a\\u0000b"}')
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps(simple_graph(prompt="{{ x" + " | upper" * 6000 + " }}")))
    for args, words in ((("workflows", "run", "Digest", "--user", "wanda", "--inputs-json",
                          str(nul)), "must not contain a NUL"),
                        (("workflows", "validate", str(chain)), "1 problem(s)")):
        out = run_roost(*args, env=env)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-300:]
        assert words in out.stderr, (args[:2], out.stderr[-300:])
    out = run_roost("workflows", "publish", "%", "--user", "wanda", env=env)
    assert out.returncode == 1 and "no workflow you can see" in out.stderr, out.stdout
    shown = await client.get(f"/api/v1/workflows/{created.json()['id']}", headers=headers)
    assert shown.json()["latest_version"] in (0, None), shown.json()


def test_validate_of_a_viewport_number_too_large_for_a_float_is_one_line(
        tmp_path: Path) -> None:
    """`validate FILE.json` with viewport.x = 10**400 reports invalid_viewport (exit 1),
    no traceback; no database needed."""
    f = tmp_path / "big.json"
    f.write_text('{"nodes": [], "edges": [], "viewport": {"x": 1' + "0" * 400
                 + ', "y": 0, "zoom": 1}}')
    done = run_roost("workflows", "validate", str(f),
                     env={"ROOST_DATA_DIR": str(tmp_path / "cli-data")})
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.returncode == 1 and "invalid_viewport" in done.stdout, done.stdout


async def test_publish_note_over_2000_characters_is_refused_as_by_the_api(
    pg_server: PgTestServer, db_name: str, database: Database, client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """`publish --note` obeys the API's limits on a note (PublishIn): 3,000 characters is
    one red line, exit 1, and no version is stored."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data")}
    _, headers = await make_user(database, username="wanda")
    created = await client.post("/api/v1/workflows", headers=headers,
                                json={"name": "Digest", **simple_graph()})
    assert created.status_code == 201, created.text
    wf = created.json()["id"]
    api = await client.post(f"/api/v1/workflows/{wf}/publish", headers=headers,
                            json={"note": "n" * 3000})
    assert api.status_code == 422
    done = run_roost("workflows", "publish", wf, "--user", "wanda", "--note", "n" * 3000,
                     env=env)
    assert done.returncode == 1 and "note" in done.stderr, done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    versions = await client.get(f"/api/v1/workflows/{wf}/versions", headers=headers)
    assert versions.json() == [], versions.text
