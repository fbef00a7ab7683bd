"""``roost debates start|show|ls`` as a user runs them (the real console script); the
in-process worker runs the debate the CLI enqueued."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.test_agents_cli import cli_env
from tests.chat.conftest import add_provider
from tests.debates.conftest import Headers, start, wait_for_debate
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.pg import PgTestServer


async def test_start_and_show_from_the_command_line(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, worker: Worker,
) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    _, headers = await make_user(database, username="dora")
    await make_user(database, username="eve")
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Tea wakes you gently.\nConfidence: 0.6"), Reply("Coffee works."),
                Reply(json={"ranking": ["tea", "coffee"], "confidence": 0.9}),
                Reply(json={"ranking": ["tea", "coffee"], "confidence": 0.4}))

    def roost(*args: str) -> tuple[int, str, str]:
        out = run_roost(*args, env=env)
        return out.returncode, out.stdout, out.stderr

    code, out, err = await asyncio.to_thread(
        roost, "debates", "start", "Tea or coffee?", "-p", "tea", "-p", "coffee",
        "-P", "ann=stub-model", "-P", "bob=stub-model@stub", "--weight", "bob=2",
        "--rounds", "1", "--method", "condorcet", "--user", "dora")
    assert code == 0, err
    debate_id = out.strip()
    uuid.UUID(debate_id)
    done = await wait_for_debate(client, headers, debate_id)
    assert done["status"] == "completed" and done["final_winner"] == "tea"
    assert done["participants"][1] == {"id": "bob", "position": "coffee", "weight": 2.0,
                                       "model": "stub-model", "provider": "stub"}

    code, out, err = await asyncio.to_thread(roost, "debates", "show", debate_id[:13],
                                             "--user", "dora")
    assert code == 0, err
    assert "Tea wakes you gently." in out and "winner: tea" in out and "tea > coffee" in out
    code, out, err = await asyncio.to_thread(roost, "debates", "show", debate_id, "--json",
                                             "--user", "dora")
    assert code == 0 and json.loads(out)["result"]["condorcet_winner"] == "tea"
    code, out, err = await asyncio.to_thread(roost, "debates", "show", debate_id,
                                             "--user", "eve")
    assert code == 1 and "does not exist" in err
    code, out, err = await asyncio.to_thread(roost, "debates", "ls", "--user", "dora")
    assert code == 0 and debate_id in out
    # One participant: refused, nothing stored.
    code, out, err = await asyncio.to_thread(
        roost, "debates", "start", "t", "-p", "a", "-p", "b", "-P", "x=m", "--user", "dora")
    assert code == 1 and "participants" in err


async def test_start_with_a_file_of_the_wrong_shape_fails_in_one_line(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """`debates start --file F` with a JSON array, participants that are a number, or JSON
    nested 100,000 deep: one red line saying what was expected, exit 1, no traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dora")
    good = {"topic": "t", "positions": ["a", "b"],
            "participants": [{"id": "x", "model": "m"}, {"id": "y", "model": "m"}]}
    files = {"list.json": ("[1, 2]", "a JSON object"),
             "number.json": (json.dumps({**good, "participants": 5}), "participants: expected"),
             "deep.json": ("[" * 100_000 + "]" * 100_000, "nested too deep")}
    for name, (content, words) in files.items():
        path = tmp_path / name
        path.write_text(content)
        out = await asyncio.to_thread(run_roost, "debates", "start", "--file", str(path),
                                      "--user", "dora", env=env)
        assert out.returncode == 1, out.stderr[-300:]
        assert "Traceback" not in out.stderr and words in out.stderr, (name, out.stderr[-300:])


async def test_debates_show_and_ls_print_positions_with_brackets(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, worker: Worker,
) -> None:
    """Positions "[/]" and "[bold]b" of a finished debate print as they are in
    `roost debates show` and `ls`, never a traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    _, headers = await make_user(database, username="dora")
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("I argue.\nConfidence: 0.6"), Reply("Me too."),
                Reply(json={"ranking": ["[/]", "[bold]b"], "confidence": 0.9}),
                Reply(json={"ranking": ["[/]", "[bold]b"], "confidence": 0.4}))
    started = await asyncio.to_thread(
        run_roost, "debates", "start", "Which?", "-p", "[/]", "-p", "[bold]b",
        "-P", "ann=stub-model", "-P", "bob=stub-model@stub", "--rounds", "1",
        "--method", "majority", "--user", "dora", env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    debate_id = started.stdout.strip()
    done = await wait_for_debate(client, headers, debate_id)
    assert done["status"] == "completed", done
    shown = await asyncio.to_thread(run_roost, "debates", "show", debate_id, "--user", "dora",
                                    env=env)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-2000:]
    assert "[bold]b" in shown.stdout and "[/] > [bold]b" in shown.stdout
    listed = await asyncio.to_thread(run_roost, "debates", "ls", "--user", "dora", env=env)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    assert done["final_winner"] in listed.stdout


@pytest.mark.parametrize(("slug", "words"), [
    ("a\\u0000b", ("participants.1.agent_id", "NUL")),
    ("a\\ud800b", ("not JSON", "lone surrogate")),  # refused as the file is read
])
async def test_start_with_an_unstorable_agent_slug_fails_in_one_line(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path, slug: str,
    words: tuple[str, str],
) -> None:
    """`debates start --file F` whose agent_id slug holds a NUL or a lone surrogate (no
    PostgreSQL text): one red line naming the field (the surrogate: the file), exit 1; not
    a database error's traceback from looking the slug up."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dora")
    path = tmp_path / "body.json"
    path.write_text('{"topic": "t", "positions": ["a", "b"], "participants": ['
                    f'{{"id": "x", "model": "m"}}, {{"id": "y", "agent_id": "{slug}"}}]}}')
    out = await asyncio.to_thread(run_roost, "debates", "start", "--file", str(path),
                                  "--user", "dora", env=env)
    assert out.returncode == 1, (out.returncode, out.stderr[-500:])
    assert "Traceback" not in out.stderr and "Error" not in out.stderr, out.stderr[-1500:]
    assert all(word in out.stderr for word in words), out.stderr[-500:]


async def test_a_debate_that_fails_under_wait_says_why_on_stderr(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, worker: Worker,
) -> None:
    """README: errors go to stderr, one line and a non-zero exit. `debates start --wait`
    of a debate that fails (the stub echoes prompts: no ballot parses) exits 1 naming the
    reason on stderr, the debate itself on stdout; a wait that runs out exits 2 saying
    so on stderr."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dora")
    await add_provider(client, admin_headers, stub)
    start = ("debates", "start", "Tea or coffee?", "-p", "tea", "-p", "coffee",
             "-P", "ann=stub-model", "-P", "bob=stub-model", "--rounds", "1",
             "--method", "borda", "--user", "dora")
    out = await asyncio.to_thread(run_roost, *start, "--wait", "--timeout", "120", env=env,
                                  timeout=180)
    assert "status failed" in out.stdout, out.stdout[-1500:]
    assert out.returncode == 1, out.stderr[-1500:]
    assert out.stderr.startswith("Debate failed: ") and "ballot" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "error:" not in out.stdout



async def test_a_wait_that_runs_out_says_so_on_stderr(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """No worker runs: the debate stays pending, and `--wait --timeout 1` exits 2 with a
    line on stderr naming the debate and how to see it later."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dora")
    await add_provider(client, admin_headers, stub)
    out = await asyncio.to_thread(
        run_roost, "debates", "start", "Tea or coffee?", "-p", "tea", "-p", "coffee",
        "-P", "ann=stub-model", "-P", "bob=stub-model", "--user", "dora", "--wait",
        "--timeout", "1", env=env)
    assert out.returncode == 2, out.stderr[-1500:]
    assert "is still pending after 1 s" in out.stderr and "roost debates show" in out.stderr, \
        out.stderr


ESC_TOPIC = "Evil \x1b]0;pwned\x07\x1b[2J topic \u202e"


async def test_cli_show_escapes_hostile_topic_and_positions(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient,
) -> None:
    """`roost debates show` prints stored text (topic, positions) escaped, as `ls` and its
    tables do: a topic sent through the API cannot set the terminal's title, clear the
    screen or reorder text (its header lines printed ESC and U+202E raw)."""
    env = cli_env(pg_server, db_name, tmp_path)
    _, headers = await make_user(database, username="mallory")
    created = await start(client, headers, topic=ESC_TOPIC,
                          positions=["p\x1b[31mred", "q\u202eq"],
                          participants=[{"id": "x", "model": "m"}, {"id": "y", "model": "m"}])
    out = await asyncio.to_thread(run_roost, "debates", "show", created["id"],
                                  "--user", "mallory", env=env)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\u202e" not in out.stdout, out.stdout
    assert "\\x1b" in out.stdout, out.stdout


async def test_cli_file_with_flags_is_refused_not_ignored(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """``start --file body.json --rounds 5 --method borda --weight x=3``: the file is the
    whole body; the options are refused by name, not dropped without a word."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dora")
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"topic": "t", "positions": ["a", "b"], "total_rounds": 1,
                                "participants": [{"id": "x", "model": "stub-model"},
                                                 {"id": "y", "model": "stub-model"}]}))
    out = await asyncio.to_thread(
        run_roost, "debates", "start", "--file", str(path), "--rounds", "5",
        "--method", "borda", "--weight", "x=3", "--user", "dora", env=env)
    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT total_rounds, voting_method FROM debate_sessions"))).all()
    assert out.returncode != 0 and rows == [], (out.returncode, out.stdout, rows)
    assert "--rounds, --method" in out.stderr and "--weight" in out.stderr, out.stderr


async def test_cli_weight_given_twice_is_refused(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """``--weight x=2 --weight x=3``: one participant, two weights: an error, not the last
    one kept without a word."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dora")
    out = await asyncio.to_thread(
        run_roost, "debates", "start", "t", "-p", "a", "-p", "b", "-P", "x=m", "-P", "y=m",
        "--weight", "x=2", "--weight", "x=3", "--user", "dora", env=env)
    async with database.transaction() as s:
        rows = (await s.execute(text("SELECT participants FROM debate_sessions"))).all()
    assert out.returncode != 0 and rows == [], (out.returncode, out.stdout, rows)


async def test_debates_show_json_escapes_terminal_controls(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path
) -> None:
    """`roost debates show ID --json` prints stored text (a topic, a model's turn) with C1
    controls and bidi overrides escaped, as every other --json does: a raw CSI (U+009B) or
    RLO (U+202E) acted on the terminal.  The JSON still decodes to the same values."""
    await make_user(database, username="alice")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data")}
    topic = "Tabs \u009b2J or \u202espaces?"
    made = await asyncio.to_thread(
        run_roost, "debates", "start", topic, "-p", "tabs", "-p", "spaces",
        "-P", "ann=m1@openai", "-P", "bob=m2@openai", "--user", "alice", env=env)
    assert made.returncode == 0, made.stderr
    out = await asyncio.to_thread(run_roost, "debates", "show", made.stdout.strip(), "--json",
                                  "--user", "alice", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["topic"] == topic  # still the API's JSON, the same value
    assert "\u009b" not in out.stdout and "\u202e" not in out.stdout, out.stdout[:200]
