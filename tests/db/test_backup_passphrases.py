"""Passphrases of encrypted backups as people type and store them: the same characters
in another Unicode form, a passphrase file with a byte order mark or holding characters
Unicode calls line breaks; and an unencrypted manifest's text in a restore's warnings."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.places import Place, public_tables

from roost.config import Settings
from roost.db import backup

COMPOSED = unicodedata.normalize("NFC", "Crème brûlée à Noël")
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("passphrase-backups")


@pytest.fixture
def target(pg_server: PgTestServer, tmp_path: Path) -> Iterator[Place]:
    name = unique_db_name("pass_dst")
    asyncio.run(pg_server.create_database(name))
    try:
        yield Place(pg_server.libpq_url(name), tmp_path / "target")
    finally:
        asyncio.run(pg_server.drop_database(name))


def _restored(path: Path, target: Place, *args: str, **env: str) -> None:
    done = run_roost("restore", str(path), *args, env={**target.env, **env}, timeout=300)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert public_tables(target.url) > 0


def test_a_passphrase_typed_decomposed_opens_a_backup_made_with_it_composed(
        source: Place, backups: Path, target: Place) -> None:
    """"Crème" typed with composed letters (Linux) makes the backup; the same passphrase
    typed decomposed (a macOS terminal) opens it: it said "wrong passphrase"."""
    path = backups / "composed"
    done = run_roost("backup", str(path),
                     env={**source.env, "ROOST_BACKUP_PASSPHRASE": COMPOSED}, timeout=300)
    assert done.returncode == 0, done.stderr
    _restored(path, target, ROOST_BACKUP_PASSPHRASE=DECOMPOSED)


def test_a_backup_made_before_passphrases_were_composed_still_opens(
        source: Place, backups: Path, target: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup whose key was derived from a decomposed passphrase as typed (Roost before
    it composed passphrases) opens with that passphrase typed the same way."""
    as_typed = backup._passphrase_bytes
    monkeypatch.setattr(backup, "_passphrase_bytes",
                        lambda passphrase, **_: as_typed(passphrase, as_typed=True))
    path = backups / "as-typed"
    asyncio.run(backup.create_backup(
        Settings(database_url=source.url, data_dir=source.data_dir), path,
        passphrase=DECOMPOSED))
    monkeypatch.undo()
    _restored(path, target, ROOST_BACKUP_PASSPHRASE=DECOMPOSED)


def test_a_passphrase_file_with_a_byte_order_mark_holds_the_same_passphrase(
        source: Place, backups: Path, target: Place) -> None:
    """A passphrase file saved by Windows Notepad starts with a UTF-8 byte order mark: the
    backup it makes opens with the same passphrase from ROOST_BACKUP_PASSPHRASE (the
    mark was part of the passphrase: "wrong passphrase")."""
    pass_file = backups / "bom-pass"
    pass_file.write_bytes(b"\xef\xbb\xbf" + b"correct horse\r\n")
    path = backups / "bom"
    done = run_roost("backup", str(path), "--passphrase-file", str(pass_file),
                     env=source.env, timeout=300)
    assert done.returncode == 0, done.stderr
    _restored(path, target, ROOST_BACKUP_PASSPHRASE="correct horse")


@pytest.mark.parametrize("separator", ["\x1e", "\x85", "\u2028"])
def test_a_passphrase_holding_a_unicode_line_break_is_whole_in_a_file(
        source: Place, backups: Path, target: Place, separator: str) -> None:
    """A passphrase holding a character Unicode calls a line break but no editor does,
    written to a file with a newline, opens the backup it made from the environment (the
    file's "first line" was cut at that character: "wrong passphrase")."""
    phrase = f"left{separator}right"
    path = backups / f"sep-{ord(separator):x}"
    done = run_roost("backup", str(path),
                     env={**source.env, "ROOST_BACKUP_PASSPHRASE": phrase}, timeout=300)
    assert done.returncode == 0, done.stderr
    pass_file = backups / f"sep-{ord(separator):x}-pass"
    pass_file.write_text(phrase + "\n", encoding="utf-8")
    _restored(path, target, "--passphrase-file", str(pass_file))


def test_a_manifests_version_text_is_shown_escaped_in_the_warnings(
        source: Place, backups: Path, target: Place) -> None:
    """An unencrypted backup's manifest is not authenticated: its schema revision and
    Roost version, printed in the restore's warning, carried escape sequences to the
    terminal and a newline that forged an output line; they are shown quoted now."""
    path = backups / "plain-version"
    done = run_roost("backup", str(path), env=source.env, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["alembic_revisions"] = ["zz\x1b]0;owned\x07\x1b[2K"]
    manifest["roost_version"] = "9\nrestored 0 tables\x1b[31m"
    manifest_path.write_text(json.dumps(manifest))
    done = run_roost("restore", str(path), env=target.env, timeout=300)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "\x1b" not in done.stderr and "\nrestored 0 tables" not in done.stderr, \
        repr(done.stderr)
    assert "\\x1b]0;owned" in done.stderr, repr(done.stderr)
