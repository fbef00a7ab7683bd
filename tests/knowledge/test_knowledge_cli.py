"""``roost ingest`` as an operator runs it: a progress bar, a summary, per-file errors."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from tests.knowledge.support import make_group, mixed_directory
from tests.support.cli import ROOST, command_env, run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.support.sql import fetch
from tests.tasks.support import wait_until


async def test_roost_ingest_a_directory(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    await make_user(database, username="olive")
    docs = tmp_path / "docs"
    docs.mkdir()
    mixed_directory(docs)
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_LEVEL": "warning"}
    out = run_roost("ingest", str(docs), "--recursive", "--collection", "handbook",
                    "--tags", "ops, docs", "--user", "olive", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "partial" in out.stdout and "7/7" in out.stdout
    assert "image.png" in out.stderr and "broken.pdf" in out.stderr
    found = await fetch(database, "SELECT d.collection, d.tags, u.username FROM documents d "
                                 "JOIN users u ON u.id = d.user_id")
    assert len(found) == 5 and {(r.collection, tuple(r.tags), r.username) for r in found} == {
        ("handbook", ("ops", "docs"), "olive")}

    again = run_roost("ingest", str(docs), "-r", "--user", "olive", env=env)
    assert again.returncode == 0 and "partial" in again.stdout
    assert len(await fetch(database, "SELECT id FROM documents")) == 5

    # --prune: the document of a file deleted since goes, and the summary counts it.
    (docs / "sub" / "nested.txt").unlink()
    pruned = run_roost("ingest", str(docs), "-r", "--prune", "--user", "olive", env=env)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "pruned" in pruned.stdout, pruned.stdout
    assert {r.name for r in await fetch(database, "SELECT name FROM documents")} == {
        "notes.txt", "guide.md", "page.html", "report.pdf"}

    missing = run_roost("ingest", str(docs), "--user", "nobody", env=env)
    assert missing.returncode == 2 and "no user" in missing.stderr


async def test_roost_ingest_refuses_bad_options_in_one_line_before_storing_anything(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    """The API's own checks (IngestionRunCreate): a too long collection or tag, or a
    path that does not exist, is a usage error (exit 2) naming the problem, with no
    traceback and no run recorded."""
    await make_user(database, username="olive")
    f = tmp_path / "a.txt"
    f.write_text("Herons wade in shallow water.")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_LEVEL": "warning"}
    for option, value, named in (("--collection", "c" * 200, "collection"),
                                 ("--tags", "t" * 200, "tag")):
        out = run_roost("ingest", str(f), "--user", "olive", option, value, env=env)
        assert out.returncode == 2, (out.returncode, out.stdout[-1000:], out.stderr[-1000:])
        assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
        assert named in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    # A path that does not exist is a typo, not a failed run left in the history.
    out = run_roost("ingest", str(tmp_path / "missing"), "--user", "olive", env=env)
    assert out.returncode == 2, (out.returncode, out.stdout[-1000:], out.stderr[-1000:])
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert await fetch(database, "SELECT id FROM ingestion_runs") == []
    # An empty collection means none, as on upload.
    out = run_roost("ingest", str(f), "--user", "olive", "--collection", "", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [r.collection for r in await fetch(database, "SELECT collection FROM documents")] == [None]


async def test_roost_ingest_finds_the_owner_by_username_in_any_case(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    """``--user Olive`` is the account ``olive``, as sign-in and the other commands find
    it (case-insensitive, NFC)."""
    await make_user(database, username="olive")
    f = tmp_path / "a.txt"
    f.write_text("Herons wade in shallow water.")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_LEVEL": "warning"}
    out = run_roost("ingest", str(f), "--user", "Olive", env=env)
    assert out.returncode == 0, (out.returncode, out.stdout[-800:], out.stderr[-800:])
    owners = await fetch(database, "SELECT u.username FROM documents d JOIN users u ON u.id = d.user_id")
    assert [r.username for r in owners] == ["olive"]


async def test_roost_ingest_with_a_group_its_owner_is_not_in_is_refused(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    """`--group G --user U` with U not a member of G: refused as the API refuses that
    ingestion run (one line, exit 2, no run recorded).  The run was recorded and
    "succeeded" (exit 0), the per-file check silently dropping the sharing."""
    oid, _ = await make_user(database, username=f"o{uuid.uuid4().hex[:6]}")
    [owner] = await fetch(database, "SELECT username FROM users WHERE id = :u", u=oid)
    other, _ = await make_user(database)
    name = f"grp{uuid.uuid4().hex[:6]}"
    await make_group(database, name, oid)
    foreign = f"for{uuid.uuid4().hex[:6]}"
    await make_group(database, foreign, other)
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_LEVEL": "warning"}
    # A member's --group shares, as documented (control: the setup works).
    f = tmp_path / "a.txt"
    f.write_text("Herons wade in shallow water. " * 20)
    ok = run_roost("ingest", str(f), "--user", owner.username, "--group", name, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rows = await fetch(database, "SELECT group_id FROM documents WHERE user_id = :u", u=oid)
    assert len(rows) == 1 and rows[0].group_id is not None, rows
    # A group the user is not in.
    g = tmp_path / "b.txt"
    g.write_text("Egrets fly over marshes. " * 20)
    out = run_roost("ingest", str(g), "--user", owner.username, "--group", foreign, env=env)
    assert "Traceback" not in out.stderr, out.stderr
    docs = await fetch(database, "SELECT group_id FROM documents WHERE user_id = :u "
                                 "AND name = 'b.txt'", u=oid)
    runs = await fetch(database, "SELECT group_id, status FROM ingestion_runs "
                                 "WHERE user_id = :u AND target LIKE '%b.txt'", u=oid)
    assert out.returncode == 2, (out.returncode, docs, runs, out.stdout[-400:])
    assert docs == [] and runs == [], (docs, runs)


# Enough that the run is still going when the first few are in (hash embeddings ingest
# about a hundred a second here), few enough to keep the test short.
FILES = 400


def _start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``roost *args`` in a process of its own, taking SIGINT as from a terminal (a
    background job may have inherited it ignored)."""
    return subprocess.Popen([ROOST, *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_a_stopped_roost_ingest_ends_its_run_and_running_it_again_goes_on(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path, stop: int,
) -> None:
    """Ctrl-C or SIGTERM (a terminal closed, a cron timeout) stops `roost ingest` with one
    line and the signal's exit code, and its run ends failed saying so: it stayed
    "running" for ever, with no process behind it. Running the command again finishes
    the files the first one did not reach."""
    await make_user(database, username="olive")
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(FILES):
        (docs / f"note-{n:04}.md").write_text(f"# Note {n}\n\nHerons wade in pond {n}.\n")
    env = command_env({"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
                       "ROOST_DATA_DIR": str(tmp_path / "d"), "ROOST_LOG_LEVEL": "warning",
                       "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash"})
    proc = _start("ingest", str(docs), "--user", "olive", env=env)
    try:
        async def started() -> bool:
            assert proc.poll() is None, proc.communicate()
            rows = await fetch(database, "SELECT totals_files FROM ingestion_runs")
            return bool(rows) and rows[0].totals_files >= 5

        await wait_until(started, within=120, interval=0.05, what="the first files ingested")
        proc.send_signal(stop)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + stop, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "ingestion stopped" in stderr, stderr[-2000:]
    [run] = await fetch(database, "SELECT status, finished_at, errors FROM ingestion_runs")
    assert run.status == "failed" and run.finished_at is not None
    assert [e["type"] for e in run.errors] == ["interrupted"]
    assert "run the command again" in run.errors[0]["error"]
    ingested = len(await fetch(database, "SELECT id FROM documents"))
    assert 5 <= ingested < FILES

    again = run_roost("ingest", str(docs), "--user", "olive", env=env, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert len(await fetch(database, "SELECT id FROM documents")) == FILES


async def test_roost_ingest_group_named_with_a_trailing_zero_width_space(
        client: httpx.AsyncClient, database: Database, pg_server: PgTestServer, db_name: str,
        tmp_path: Path) -> None:
    """``roost ingest --group`` reads a group's name as the API stores it: pasted with a
    trailing zero-width space (the API stores "finance" for it), it names the group
    "finance" and the document is shared with it (it was "no group named ...")."""
    username = f"z{uuid.uuid4().hex[:8]}"
    _, alice = await make_user(database, username=username)
    name = f"finance{uuid.uuid4().hex[:6]}"
    made = await client.post("/api/v1/groups", headers=alice, json={"name": name + "\u200b"})
    assert made.status_code == 201 and made.json()["name"] == name, made.text
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_LEVEL": "warning"}
    f = tmp_path / "a.txt"
    f.write_text("Herons wade in shallow water. " * 20)
    out = await asyncio.to_thread(run_roost, "ingest", str(f), "--user", username,
                                  "--group", name + "\u200b", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = await fetch(database, "SELECT group_id FROM documents WHERE name = 'a.txt'")
    assert [str(r.group_id) for r in rows] == [made.json()["id"]], rows
