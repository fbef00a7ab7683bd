"""``roost prompts ls|show|publish`` as a user runs them (the real console script)."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
from pathlib import Path

import httpx

from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.prompts.conftest import make_group, publish
from tests.support.cli import ROOST, command_env, readable, run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer


def on_a_terminal(env: dict[str, str], *args: str) -> bytes:
    """What ``roost *args`` prints to a terminal (a pseudo-terminal as its stdout)."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([ROOST, *args], env=command_env(env), stdin=subprocess.DEVNULL,
                              stdout=follower, stderr=subprocess.PIPE, timeout=120,
                              check=False)
        os.close(follower)
        assert proc.returncode == 0, proc.stderr
        out = b""
        while readable(leader, 1):
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(leader)


async def test_publish_show_and_list_from_the_command_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="petra")
    await make_user(database, username="otto")

    def roost(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_roost("prompts", *args, env=env, stdin=stdin)

    first = tmp_path / "v1.txt"
    first.write_text("Answer as {{persona}}.\n")
    out = roost("publish", "support.reply", "--file", str(first), "--user", "petra",
                "--category", "support", "--variables", '[{"name": "persona"}]')
    assert out.returncode == 0, out.stderr
    assert "published support.reply v1 (user), label production → v1" in out.stdout
    out = roost("publish", "support.reply", "--file", "-", "--user", "petra", "--label",
                "staging", "--variables", '[{"name": "persona"}]',
                stdin="Answer briefly as {{persona}}.")
    assert out.returncode == 0, out.stderr
    assert "published support.reply v2 (user), label staging → v2" in out.stdout

    out = roost("show", "support.reply", "--user", "petra")
    assert out.returncode == 0, out.stderr
    assert "support.reply v1 (user, labels: production)" in out.stdout
    assert out.stdout.rstrip().endswith("Answer as {{persona}}.")
    out = roost("show", "support.reply", "--label", "staging", "--user", "petra")
    assert "v2" in out.stdout and "Answer briefly" in out.stdout
    out = roost("show", "support.reply", "--version", "2", "--user", "petra")
    assert "Answer briefly" in out.stdout

    out = roost("ls", "--user", "petra")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "support.reply" in x)
    assert "production→v1, staging→v2" in line and "support" in line
    assert "agent.system" in out.stdout  # the factory default

    # Another user sees none of it; bad input fails with a message, not a trace.
    out = roost("show", "support.reply", "--user", "otto")
    assert out.returncode == 1 and "support.reply" in out.stderr
    out = roost("publish", "support.reply", "--file", str(first), "--user", "otto",
                "--variables", "{not json")
    assert out.returncode == 1 and "Invalid --variables" in out.stderr
    out = roost("publish", "support.reply", "--file", str(first), "--user", "otto")
    assert out.returncode == 1 and "persona" in out.stderr  # the placeholder is undefined
    out = roost("publish", "chat.system", "--file", str(first), "--user", "otto", "--scope",
                "factory", "--variables", '[{"name": "persona"}]')
    assert out.returncode == 1 and "administrators" in out.stderr
    out = roost("publish", "k", "--file", str(tmp_path / "missing.txt"), "--user", "otto")
    assert out.returncode == 1 and "Cannot read the file" in out.stderr
    out = roost("show", "support.reply", "--version", "1", "--label", "x", "--user", "otto")
    assert out.returncode == 1 and "not both" in out.stderr


async def test_publish_refuses_nul_and_non_finite_defaults_in_one_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """A text file holding NUL and a default of 1e400 (infinity to Python's json) or NaN
    are refused with one line naming the field (they were DBAPIError tracebacks)."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="petra")
    text_file, nul_file = tmp_path / "p.txt", tmp_path / "nul.txt"
    text_file.write_text("hi {{a}}")
    nul_file.write_bytes(b"a\x00b")
    for args, says in (
            (("--file", str(text_file), "--variables",
              '[{"name": "a", "default": 1e400, "type": "number"}]'),
             "default: Input should be a finite number"),
            (("--file", str(text_file), "--variables", '[{"name": "a", "default": NaN}]'),
             "default: Input should be a finite number"),
            (("--file", str(nul_file)), "prompt_text: String should not contain NUL")):
        out = run_roost("prompts", "publish", "k", *args, "--user", "petra", env=env)
        assert out.returncode == 1, (args, out.stdout)
        assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr


async def test_publish_refuses_huge_or_deep_variables_json_in_one_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """--variables with a 5,000-digit integer (over Python's digit limit) or 100,000
    nested brackets (deeper than the stack) is one line, exit 1 (they were tracebacks)."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="petra")
    f = tmp_path / "p.txt"
    f.write_text("hi {{a}}")
    for variables in ('[{"name": "a", "type": "integer", "default": ' + "9" * 5000 + "}]",
                      "[" * 100_000):
        out = run_roost("prompts", "publish", "k", "--file", str(f), "--variables", variables,
                        "--user", "petra", env=env)
        assert out.returncode == 1, out.stdout
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-500:]
        assert "Invalid --variables" in out.stderr, out.stderr[-500:]


async def test_show_prints_control_sequences_escaped_to_a_terminal(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """A prompt's text (a group's: another member wrote it) reaches a terminal without its
    control sequences (no retitled window); piped, it is the text as stored."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="petra")
    f = tmp_path / "p.txt"
    f.write_text("Be brief.\x1b]0;owned\x07\x1b[2J")
    assert run_roost("prompts", "publish", "k", "--file", str(f), "--user", "petra",
                     env=env).returncode == 0
    piped = run_roost("prompts", "show", "k", "--user", "petra", env=env)
    assert piped.returncode == 0 and "Be brief.\x1b]0;owned\x07\x1b[2J" in piped.stdout

    shown = await asyncio.to_thread(on_a_terminal, env, "prompts", "show", "k", "--user", "petra")
    assert b"Be brief.\\x1b]0;owned\\x07\\x1b[2J" in shown, shown
    assert b"\x1b]0;" not in shown and b"\x1b[2J" not in shown


async def test_a_group_category_reaches_the_terminal_escaped(
        client: httpx.AsyncClient, pg_server: PgTestServer, db_name: str,
        database: Database, tmp_path: Path) -> None:
    """A group prompt's category and string default (a group administrator's text) reach a
    member's terminal with their control sequences escaped, in `prompts ls` and `show`."""
    env = cli_env(pg_server, db_name, tmp_path)
    member_id, _ = await make_user(database, username="mara")
    lead_id, lead = await make_user(database)
    g = await make_group(database, (lead_id, "admin"), (member_id, "member"))
    hostile = "ops\x1b]0;owned\x07\x1b[2J"
    await publish(client, lead, "team.k", "Be nice to {{who}}.", scope="group",
                  group_id=str(g), prompt_category=hostile,
                  variables=[{"name": "who", "default": hostile}])
    listed = await asyncio.to_thread(on_a_terminal, env, "prompts", "ls", "--user", "mara")
    shown = await asyncio.to_thread(on_a_terminal, env, "prompts", "show", "team.k",
                                    "--user", "mara")
    for out in (listed, shown):
        assert b"\x1b]0;owned" not in out and b"\x1b[2J" not in out, out
    assert b"ops\\x1b]0;owned" in shown, shown


async def test_publish_variables_must_be_a_json_list(pg_server: PgTestServer, db_name: str,
                                                database: Database, tmp_path: Path) -> None:
    """--variables that is not a JSON list (an object, null, a number) is refused saying
    it must be a list of definitions, not with Python's "'NoneType' object is not
    iterable" or a per-key error from iterating the object's keys."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="petra")
    f = tmp_path / "p.txt"
    f.write_text("hi {{a}}")
    for variables in ('{"name": "a"}', "null", "5"):
        out = await asyncio.to_thread(run_roost, "prompts", "publish", "k", "--file", str(f),
                                      "--variables", variables, "--user", "petra", env=env)
        assert out.returncode == 1, out.stdout
        assert "iterable" not in out.stderr and "list" in out.stderr.lower(), out.stderr
