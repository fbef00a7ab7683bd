"""``roost ingest`` as an operator runs it: a progress bar, a summary, per-file errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roost.db.engine import Database
from tests.knowledge.support import mixed_directory
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.sql import fetch


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
