"""``roost ingest`` prints file names escaped (clitools.printable, a newline as ``\\n``):
names holding terminal escape sequences or line breaks reached the terminal raw, in the
progress bar and in the error lines (one per failed file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roost.db.engine import Database
from tests.support.cli import run_roost
from tests.support.identity import make_user


def _env(pg_server: Any, db_name: str, tmp_path: Path) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
            "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_LEVEL": "warning"}


async def test_error_lines_escape_control_characters_in_file_names(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    """A user ingesting a directory that holds a file named with an ANSI escape sequence
    and a line break expects its error line printed with those characters escaped (as
    every other CLI prints stored text, ``clitools.printable``): one line per failed
    file, nothing acting on the terminal.  The name is printed raw: ``\\x1b[31m`` and an
    OSC title sequence reach stderr, and the line break splits the error in two."""
    await make_user(database, username="olive")
    d = tmp_path / "docs"
    d.mkdir()
    (d / "evil\x1b[31mRED\x1b]0;title\x07\nline.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (d / "ok.txt").write_text("Herons wade in shallow water.")
    out = run_roost("ingest", str(d), "--user", "olive", env=_env(pg_server, db_name, tmp_path),
                    timeout=60)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "\x1b[31m" not in out.stderr and "\x1b]0;" not in out.stderr, repr(out.stderr)
    errs = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(errs) == 1, repr(out.stderr)


async def test_progress_bar_escapes_control_characters_in_file_names(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    """The progress bar's "current file" column shows each file's path; a user expects a
    name holding ``ESC ] 0;...BEL`` (set the terminal title) or ``ESC [2J`` (clear the
    screen) shown escaped.  It is printed raw to stdout (``TextColumn(markup=False)``
    only disables markup; rich strips BEL/CR but not ESC)."""
    await make_user(database, username="olive")
    d = tmp_path / "docs"
    d.mkdir()
    (d / "n\x1b]0;pwned\x07\x1b[2J.txt").write_text("Herons wade in shallow water.")
    out = run_roost("ingest", str(d), "--user", "olive", env=_env(pg_server, db_name, tmp_path),
                    timeout=60)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "\x1b" not in out.stdout, repr(out.stdout)
