"""``roost restore`` of corrupted or hand-edited backups and ``roost backup`` of a data dir
or disk it cannot use: one clear line, exit 1, and nothing written (docs/operations.md:
"a corrupted backup ... is a clear error (exit 1) with nothing written"); backup and
restore of databases with unusual names.

The backups are of an external database (a copy of the migrated template) and its data
dir's keys, restored into an empty external database: lighter than test_backup.py's
embedded data dirs, which test restores that succeed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.places import Place, execute_sql, public_tables

from roost.db import backup as backup_mod

PASSPHRASE = "correct horse battery staple"
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-backups")


@pytest.fixture(scope="module")
def plain(source: Place, backups: Path) -> Path:
    path = backups / "plain"
    done = run_roost("backup", str(path), env=source.env, timeout=300)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def encrypted(source: Place, backups: Path) -> Path:
    pass_file = backups / "pass"
    pass_file.write_text(PASSPHRASE + "\n")
    path = backups / "encrypted"
    done = run_roost("backup", str(path), "--passphrase-file", str(pass_file),
                     env=source.env, timeout=300)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def target(pg_server: PgTestServer, tmp_path: Path) -> Iterator[Place]:
    """An empty database and data dir to restore into."""
    name = unique_db_name("hostile_dst")
    asyncio.run(pg_server.create_database(name))
    try:
        yield Place(pg_server.libpq_url(name), tmp_path / "target")
    finally:
        asyncio.run(pg_server.drop_database(name))


def _copy(backup: Path, tmp_path: Path) -> Path:
    out = tmp_path / f"copy-{uuid.uuid4().hex[:6]}"
    shutil.copytree(backup, out)
    return out


def _edit_manifest(backup: Path, edit: Callable[[Manifest], None]) -> None:
    manifest = json.loads((backup / "manifest.json").read_text())
    edit(manifest)
    (backup / "manifest.json").write_text(json.dumps(manifest))


def _rewrite_file(backup: Path, name: str, data: bytes) -> None:
    """Replace a file of an unencrypted backup, with its size and sha256 in the manifest
    to match: only what the file says is wrong."""
    (backup / name).write_bytes(data)

    def fix(m: Manifest) -> None:
        m["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    _edit_manifest(backup, fix)


def _refused_cleanly(done: subprocess.CompletedProcess[str], target: Place,
                     mentions: str) -> None:
    """Exit 1, one line naming the problem, no table restored, no key file written."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert mentions in done.stderr, done.stderr
    assert public_tables(target.url) == 0, "nothing may be restored from a corrupted backup"
    keys = target.data_dir / "keys"
    assert not keys.exists() or not any(keys.iterdir()), "no key file may be written"


# --- restore of corrupted backups ----------------------------------------------------------


def _first_table_without_rows(m: Manifest) -> None:
    del m["tables"][0]["rows"]


@pytest.mark.parametrize(("edit", "mentions"), [
    (lambda m: m["files"].update({"database.dump": "x"}), "'database.dump' in 'files'"),
    (lambda m: m["files"]["keys.json"].update(bytes="12"), "'keys.json' in 'files'"),
    (lambda m: m.update(files=[]), "'files' is not a mapping"),
    (lambda m: m.update(tables=5), "'tables' is not a list"),
    (lambda m: m.update(tables=[{"schema": "public"}]), "table entry 0"),
    (_first_table_without_rows, "table entry 0"),
    (lambda m: m.update(sequences={"public.s": "1"}), "'sequences'"),
    (lambda m: m.update(roles="roost_app"), "'roles'"),
    (lambda m: m["roles"].append("bad\u0000role"), "role name 'bad\\x00role'"),
    (lambda m: m["roles"].append("r" * 64), "role name 'rrr"),
    (lambda m: m["roles"].append("pg_monitor"), "role name 'pg_monitor'"),
], ids=["file-entry-a-string", "file-size-a-string", "files-a-list", "tables-a-number",
        "table-without-fields", "table-without-rows", "sequence-malformed", "roles-a-string",
        "role-with-a-nul-byte", "role-over-63-bytes", "role-reserved-pg"])
def test_a_manifest_of_the_wrong_shape_is_refused_before_anything_is_written(
    plain: Path, target: Place, tmp_path: Path, edit: Callable[[Manifest], None],
    mentions: str,
) -> None:
    """Each field the restore reads is checked (type and presence) with the manifest: a
    table entry without its row count was found only after pg_restore had restored the
    database and the keys were written; a role name with a NUL byte was a traceback of
    the server's refusal to create it."""
    backup = _copy(plain, tmp_path)
    _edit_manifest(backup, edit)
    done = run_roost("restore", str(backup), env=target.env)
    _refused_cleanly(done, target, "is corrupted")
    assert mentions in done.stderr, done.stderr


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_key_name_that_is_not_a_plain_file_name_is_refused(
    plain: Path, target: Place, tmp_path: Path, name: str,
) -> None:
    """keys.json naming a key '..' or '.' (which write_keys would turn into the keys
    directory's parent, or itself) is not a key list: refused before anything is written."""
    backup = _copy(plain, tmp_path)
    keys = json.loads((backup / "keys.json").read_text())
    keys[name] = "x\n"
    _rewrite_file(backup, "keys.json", json.dumps(keys).encode())
    _refused_cleanly(run_roost("restore", str(backup), env=target.env), target,
                     "keys.json in the backup is not a key list")


@pytest.mark.parametrize("edit", [
    {"n": 2**40}, {"n": -1}, {"n": "65536"}, {"r": 2**20}, {"p": 4096}, {"n": 2**20, "r": 16},
], ids=["n-huge", "n-negative", "n-a-string", "r-huge", "p-huge", "memory-over-1GiB"])
def test_hostile_scrypt_parameters_are_refused_before_deriving(
    encrypted: Path, target: Place, tmp_path: Path, edit: Manifest,
) -> None:
    """Scrypt parameters edited into an encrypted manifest (read before its MAC can be
    checked) are refused at once: they took gigabytes of memory (MemoryError), overflowed,
    or would have run for half an hour."""
    backup = _copy(encrypted, tmp_path)
    _edit_manifest(backup, lambda m: m["encryption"].update(edit))
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE + "\n")
    done = run_roost("restore", str(backup), "--passphrase-file", str(pass_file),
                     env=target.env, timeout=60)
    _refused_cleanly(done, target, "is corrupted")


def test_a_manifest_naming_a_file_with_a_nul_byte_is_refused(
    plain: Path, target: Place, tmp_path: Path,
) -> None:
    """Only the files a backup holds may be named: a NUL byte in a name was a ValueError
    traceback (open() refuses it)."""
    backup = _copy(plain, tmp_path)
    _edit_manifest(backup, lambda m: m["files"].update({"a\x00b": {"bytes": 1, "sha256": "x"}}))
    _refused_cleanly(run_roost("restore", str(backup), env=target.env), target,
                     "names an unexpected file")


_NESTED = b"[" * 200000 + b"]" * 200000


@pytest.mark.parametrize(("file", "mentions"), [
    ("manifest.json", "manifest.json is corrupted"),
    ("keys.json", "keys.json in the backup is not a key list"),
])
def test_json_nested_too_deeply_is_refused_in_one_line(
    plain: Path, target: Place, tmp_path: Path, file: str, mentions: str,
) -> None:
    """A manifest or keys.json of deeply nested arrays is corrupted (it was a RecursionError
    traceback)."""
    backup = _copy(plain, tmp_path)
    if file == "manifest.json":
        (backup / file).write_bytes(_NESTED)
    else:
        _rewrite_file(backup, file, _NESTED)
    _refused_cleanly(run_roost("restore", str(backup), env=target.env, timeout=300), target,
                     mentions)


def test_an_incremental_whose_parent_manifest_is_nested_too_deeply_is_one_line(
    tmp_path: Path,
) -> None:
    """The parent of an incremental backup, whose manifest is nested too deeply, is no
    parent: one line (it was a RecursionError traceback)."""
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "manifest.json").write_bytes(_NESTED)
    backup = tmp_path / "phys"
    backup.mkdir()
    (backup / "keys.json").write_text("{}")
    (backup / "manifest.json").write_text(json.dumps({
        "format": "roost-backup/1", "kind": "physical", "tables": [], "backup_id": "abc",
        "files": {"keys.json": {"bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}},
        "incremental_from": {"backup_id": "zzz", "path": str(parent)}}))
    done = run_roost("restore", str(backup), env={"ROOST_DATA_DIR": str(tmp_path / "data")},
                     timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "is missing (or is another backup)" in done.stderr, done.stderr


# What os.environ holds for an environment variable of bytes that are not UTF-8.
_NOT_UTF8 = os.fsdecode(b"pass\xffword")


def test_a_passphrase_that_is_not_utf8_on_restore_is_named_as_such(
    encrypted: Path, target: Place,
) -> None:
    """It was reported as a corrupted manifest (its UnicodeEncodeError is a ValueError)."""
    done = run_roost("restore", str(encrypted), env={
        **target.env, "ROOST_BACKUP_PASSPHRASE": _NOT_UTF8}, timeout=120, fresh=True)
    _refused_cleanly(done, target, "the passphrase is not valid UTF-8 text")
    assert "corrupted" not in done.stderr, done.stderr


def _fetchval(url: str, sql: str, *args: object) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def _databases_like(url: str, prefix: str) -> list[str]:
    names = _fetchval(url, "SELECT coalesce(array_agg(datname ORDER BY datname), '{}') "
                           "FROM pg_database WHERE starts_with(datname, $1)", prefix)
    assert isinstance(names, list)
    return names


def _db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _lie_about_rows(m: Manifest) -> None:
    m["tables"][0]["rows"] += 7


@pytest.mark.parametrize("broken", ["manifest-a-directory", "manifest-a-fifo",
                                    "manifest-a-link-to-dev-zero", "keys-a-fifo"])
def test_a_backup_file_that_is_not_a_regular_file_is_refused_at_once(
    plain: Path, target: Place, tmp_path: Path, broken: str,
) -> None:
    """manifest.json a directory (it was an IsADirectoryError traceback), a FIFO (the
    restore hung forever), a symlink to /dev/zero (it ate memory); a file of the backup a
    FIFO: one line, exit 1, at once."""
    backup = _copy(plain, tmp_path)
    name = "keys.json" if broken == "keys-a-fifo" else "manifest.json"
    (backup / name).unlink()
    if broken == "manifest-a-directory":
        (backup / name).mkdir()
    elif broken == "manifest-a-link-to-dev-zero":
        (backup / name).symlink_to("/dev/zero")
    else:
        os.mkfifo(backup / name)
    try:
        done = run_roost("restore", str(backup), env=target.env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"restore hangs on {broken}")
    _refused_cleanly(done, target, str(backup / name))


def test_a_manifest_with_lying_row_counts_leaves_the_empty_target_empty(
    plain: Path, target: Place, tmp_path: Path,
) -> None:
    """A hand-edited manifest whose row counts lie (the files' checksums match) is only
    found out after pg_restore: the empty target is emptied again and no key is written,
    so a retry needs no --force (all tables and keys were left written)."""
    backup = _copy(plain, tmp_path)
    _edit_manifest(backup, _lie_about_rows)
    done = run_roost("restore", str(backup), env=target.env, timeout=300)
    _refused_cleanly(done, target, "does not match the manifest")
    again = run_roost("restore", str(plain), env=target.env, timeout=300)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("left_out", ["one-table", "every-table"])
def test_a_table_the_manifest_leaves_out_is_found_by_the_check(
    plain: Path, target: Place, tmp_path: Path, left_out: str,
) -> None:
    """The files' checksums do not cover the manifest's table list: a table left out of it
    was restored unchecked (exit 0; "restored 0 tables" with the list emptied although all
    were restored).  The check names it and the empty target is left empty."""
    backup = _copy(plain, tmp_path)
    removed: list[str] = []

    def leave_out(m: Manifest) -> None:
        gone = m["tables"][:1] if left_out == "one-table" else m["tables"]
        removed.extend(f"{t['schema']}.{t['name']}" for t in gone)
        m["tables"] = [t for t in m["tables"] if t not in gone]

    _edit_manifest(backup, leave_out)
    done = run_roost("restore", str(backup), env=target.env, timeout=300)
    _refused_cleanly(done, target, f"{removed[0]} is not in the manifest")


def test_a_force_restore_that_fails_keeps_the_old_database_and_keys(
    plain: Path, target: Place, tmp_path: Path,
) -> None:
    """--force with a backup that fails its check after pg_restore: it was restored into
    a staging database, dropped again; the old database and key files are untouched (they
    were dropped and overwritten before the check)."""
    execute_sql(target.url, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)")
    keys = target.data_dir / "keys"
    keys.mkdir(parents=True)
    (keys / "secret_key").write_text("old-secret\n")
    backup = _copy(plain, tmp_path)
    _edit_manifest(backup, _lie_about_rows)
    done = run_roost("restore", str(backup), "--force", env=target.env, timeout=300)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "does not match the manifest" in done.stderr and "nothing was replaced" in done.stderr
    assert _fetchval(target.url, "SELECT x FROM precious") == 42
    assert (keys / "secret_key").read_text() == "old-secret\n"
    assert sorted(p.name for p in target.data_dir.iterdir()) == ["keys"]
    name = _db_name(target.url)
    assert _databases_like(target.url, name) == [name], "the staging database is left"


def test_a_force_restore_keeps_the_replaced_database_and_keys_aside(
    plain: Path, target: Place, tmp_path: Path,
) -> None:
    """--force that succeeds: the old database is renamed aside, the old key files are
    copied aside, and the output says where."""
    execute_sql(target.url, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)")
    keys = target.data_dir / "keys"
    keys.mkdir(parents=True)
    (keys / "secret_key").write_text("old-secret\n")
    name = _db_name(target.url)
    try:
        done = run_roost("restore", str(plain), "--force", env=target.env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert public_tables(target.url) > 1
        assert _fetchval(target.url, "SELECT to_regclass('public.precious') IS NULL")
        aside = [d for d in _databases_like(target.url, name) if d != name]
        assert len(aside) == 1 and aside[0].startswith(f"{name}_replaced_"), aside
        assert aside[0] in done.stderr, done.stderr
        old_url = urlsplit(target.url)._replace(path=f"/{aside[0]}").geturl()
        assert _fetchval(old_url, "SELECT x FROM precious") == 42
        kept = [p for p in target.data_dir.iterdir() if p.name.startswith("keys.replaced-")]
        assert len(kept) == 1 and str(kept[0]) in done.stderr, done.stderr
        assert (kept[0] / "secret_key").read_text() == "old-secret\n"
        assert (keys / "secret_key").read_text() != "old-secret\n"
    finally:
        for leftover in _databases_like(target.url, name):
            if leftover != name:
                execute_sql(target.url, f'DROP DATABASE "{leftover}" WITH (FORCE)')


# --- unusual database names ----------------------------------------------------------------


def _url_of(pg_server: PgTestServer, name: str) -> str:
    """ROOST_DATABASE_URL of database ``name``, percent-encoded as a URL must be."""
    base = urlsplit(pg_server.libpq_url("postgres"))
    return base._replace(path="/" + quote(name, safe="")).geturl()


@pytest.mark.parametrize("quirk", ["space", "quote"])
def test_a_database_whose_name_needs_quoting_is_backed_up_and_restored_into(
    pg_server: PgTestServer, template_db: str, source: Place, plain: Path, tmp_path: Path,
    quirk: str,
) -> None:
    """pg_dump and pg_restore refused a database name with a space ("unexpected spaces
    found"): the URL SQLAlchemy renders for them left it unencoded."""
    odd = {"space": " ", "quote": "' \\"}[quirk]
    name = f"odd{odd}db {uuid.uuid4().hex[:6]}"
    from_name, into_name = f"{name} src", f"{name} dst"
    execute_sql(pg_server.libpq_url("postgres"),
          f'CREATE DATABASE "{from_name}" TEMPLATE "{template_db}"')
    execute_sql(pg_server.libpq_url("postgres"), f'CREATE DATABASE "{into_name}"')
    try:
        out = tmp_path / "b"
        done = run_roost("backup", str(out), env={
            **source.env, "ROOST_DATABASE_URL": _url_of(pg_server, from_name)}, timeout=300)
        assert done.returncode == 0, done.stderr
        into = Place(_url_of(pg_server, into_name), tmp_path / "data")
        done = run_roost("restore", str(out), env=into.env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert public_tables(into.url) == public_tables(source.url) > 1
    finally:
        for db in (from_name, into_name):
            execute_sql(pg_server.libpq_url("postgres"), f'DROP DATABASE "{db}" WITH (FORCE)')


def _drop_databases_like(pg_server: PgTestServer, prefix: str) -> None:
    admin = pg_server.libpq_url("postgres")
    for db in _databases_like(admin, prefix):
        execute_sql(admin, f'DROP DATABASE "{db}" WITH (FORCE)')


def test_a_force_restore_into_a_63_byte_name_ending_in_restoring_keeps_the_old_data(
    pg_server: PgTestServer, plain: Path, tmp_path: Path,
) -> None:
    """The staging name (the name + "_restoring", cut to PostgreSQL's 63 bytes) was the
    target's own: the restore dropped the target, failed, then dropped the restored copy
    too."""
    name = ("p" + uuid.uuid4().hex + "q" * 30)[:53] + "_restoring"
    assert len(name.encode()) == 63
    execute_sql(pg_server.libpq_url("postgres"), f'CREATE DATABASE "{name}"')
    place = Place(pg_server.libpq_url(name), tmp_path / "data")
    try:
        execute_sql(place.url, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)")
        done = run_roost("restore", str(plain), "--force", env=place.env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert public_tables(place.url) > 1
        aside = [d for d in _databases_like(place.url, name[:30]) if d != name]
        assert len(aside) == 1 and aside[0] in done.stderr, (aside, done.stderr)
        old_url = urlsplit(place.url)._replace(path=f"/{aside[0]}").geturl()
        assert _fetchval(old_url, "SELECT x FROM precious") == 42
    finally:
        _drop_databases_like(pg_server, name[:30])


def test_a_force_restore_leaves_a_database_named_like_its_staging_one_alone(
    plain: Path, target: Place, tmp_path: Path,
) -> None:
    """A database named <target>_restoring is not necessarily a leftover of a restore: it
    was dropped (a staging database is created under a name no database has)."""
    name = _db_name(target.url)
    neighbour = f"{name}_restoring"
    execute_sql(target.url, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (1)")
    execute_sql(target.url, f'CREATE DATABASE "{neighbour}"')
    neighbour_url = urlsplit(target.url)._replace(path=f"/{neighbour}").geturl()
    try:
        execute_sql(neighbour_url, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (7)")
        done = run_roost("restore", str(plain), "--force", env=target.env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert _fetchval(neighbour_url, "SELECT x FROM precious") == 7
        assert sorted(d for d in _databases_like(target.url, name) if "_replaced_" not in d) \
            == [name, neighbour], "a staging database is left"
    finally:
        for db in _databases_like(target.url, f"{name}_"):
            execute_sql(target.url, f'DROP DATABASE "{db}" WITH (FORCE)')


@pytest.mark.parametrize("broken", ["data-dir-is-a-file", "keys-dir-is-a-file"])
def test_a_data_dir_where_keys_cannot_be_written_is_refused_before_restoring(
    plain: Path, target: Place, tmp_path: Path, broken: str,
) -> None:
    """The database was restored, then writing the keys failed: a database without its
    keys. The data dir is checked first."""
    env = dict(target.env)
    if broken == "data-dir-is-a-file":
        data_file = tmp_path / "afile"
        data_file.write_text("x")
        env["ROOST_DATA_DIR"] = str(data_file)
    else:
        target.data_dir.mkdir(parents=True)
        (target.data_dir / "keys").write_text("x")
    done = run_roost("restore", str(plain), env=env, timeout=300)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "is not a directory" in done.stderr, done.stderr
    assert public_tables(target.url) == 0


def test_a_base_backup_with_links_out_of_the_restore_dir_is_refused(tmp_path: Path) -> None:
    """A base.tar with a symlink to an absolute path or a hard link to ../../outside.txt
    was unpacked as is (filter "tar") and moved into DATA_DIR/pg."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    for link in ("symlink", "hardlink"):
        base = tmp_path / f"base-{link}.tar"
        with tarfile.open(base, "w") as tar:
            info = tarfile.TarInfo(f"evil-{link}")
            if link == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(outside)
            else:
                info.type, info.linkname = tarfile.LNKTYPE, "../../outside.txt"
            tar.addfile(info)
        wal = tmp_path / "pg_wal.tar"
        with tarfile.open(wal, "w"):
            pass
        manifest = tmp_path / "backup_manifest"
        manifest.write_text("{}")
        into = tmp_path / f"s-{link}" / "data"
        into.parent.mkdir()
        with pytest.raises(backup_mod.BackupError, match=r"never (does|writes)"):
            backup_mod._unpack({"base.tar": base, "pg_wal.tar": wal,
                                "backup_manifest": manifest}, into)
        assert [p.name for p in into.iterdir()] == []
        assert outside.stat().st_nlink == 1


# --- backup of a data dir or to a disk it cannot use ----------------------------------------


@pytest.mark.parametrize(("name", "content", "mentions"), [
    ("junk.bin", b"\xff\xfe\x00binary", "not UTF-8 text"),
    (".editor-swap", b"x", "a restore would refuse its name"),
])
def test_a_file_in_the_keys_directory_that_is_no_key_is_named(
    source: Place, tmp_path: Path, name: str, content: bytes, mentions: str,
) -> None:
    """`roost backup` refuses, naming the file, a file in DATA_DIR/keys that is not text
    (it was a UnicodeDecodeError traceback) or whose name a restore would refuse (a
    backup that cannot be restored)."""
    data_dir = tmp_path / "data"
    shutil.copytree(source.data_dir, data_dir)
    (data_dir / "keys" / name).write_bytes(content)
    out = tmp_path / "b"
    done = run_roost("backup", str(out), env={**source.env, "ROOST_DATA_DIR": str(data_dir)},
                     timeout=300)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert str(data_dir / "keys" / name) in done.stderr and mentions in done.stderr
    assert not out.exists()


def test_a_passphrase_that_is_not_utf8_on_backup_is_one_line(
    source: Place, tmp_path: Path,
) -> None:
    """It was a UnicodeEncodeError traceback, after the whole dump."""
    out = tmp_path / "b"
    done = run_roost("backup", str(out), env={
        **source.env, "ROOST_BACKUP_PASSPHRASE": _NOT_UTF8}, timeout=300, fresh=True)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "the passphrase is not valid UTF-8 text" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_up_after_the_dump_is_one_line_and_leaves_nothing(
    source: Place, plain: Path, tiny_fs: Path,
) -> None:
    """Room for the dump but not for the keys and manifest: the write fails with no file
    name on its error (it was re-raised as a traceback); the half-written backup goes."""
    dump_bytes = json.loads((plain / "manifest.json").read_text())["files"]["database.dump"]["bytes"]
    subprocess.run(["mount", "-o", f"remount,size={dump_bytes + 8192}", str(tiny_fs)],
                   check=True)
    done = run_roost("backup", str(tiny_fs / "b"), env=source.env, timeout=300)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "backup failed: no space left on the device" in done.stderr, done.stderr
    assert list(tiny_fs.iterdir()) == []


def test_a_restore_with_a_full_tmpdir_is_one_line_and_writes_nothing(
    encrypted: Path, target: Place, tiny_fs: Path,
) -> None:
    """An encrypted backup is decrypted into TMPDIR: a TMPDIR without room for the dump
    was an ENOSPC traceback.  One line that says where and what to do, exit 1."""
    subprocess.run(["mount", "-o", "remount,size=64k", str(tiny_fs)], check=True)
    env = {**target.env, "ROOST_BACKUP_PASSPHRASE": PASSPHRASE, "TMPDIR": str(tiny_fs)}
    done = run_roost("restore", str(encrypted), env=env, timeout=300)
    _refused_cleanly(done, target, "restore failed: no space left on the device")
    assert "set TMPDIR to a directory with room" in done.stderr, done.stderr
    assert not (target.data_dir / "keys").exists()
    assert list(tiny_fs.iterdir()) == []


def test_a_backup_to_a_dangling_symlink_is_refused_before_dumping(
    source: Place, tmp_path: Path,
) -> None:
    """PATH a dangling symbolic link passed the "already exists" check (which follows
    links): the whole dump ran, then the last rename failed naming a removed temporary
    directory. Now refused at once, naming PATH."""
    out = tmp_path / "b"
    out.symlink_to(tmp_path / "nowhere")
    done = run_roost("backup", str(out), env=source.env, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip().splitlines()[-1] == f"backup failed: {out} already exists: " \
        "name a new backup directory", done.stderr
    assert out.is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_passphrase_file_that_never_ends_is_one_line(source: Place, tmp_path: Path) -> None:
    """--passphrase-file /dev/zero was read whole: memory grew without end (a MemoryError
    traceback under a limit). Now at most 64 KiB is read: one line, exit 1."""
    done = run_roost("backup", str(tmp_path / "b"), "--passphrase-file", "/dev/zero",
                     env=source.env, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "longer than 65,536 bytes" in done.stderr
    assert not (tmp_path / "b").exists()


def test_a_passphrase_for_a_backup_that_is_not_encrypted_refuses_the_restore(
    plain: Path, target: Place, tmp_path: Path,
) -> None:
    """Only encryption authenticates a backup: someone who can write the backup directory
    can swap an encrypted backup for a plain one of their own. A restore given a
    passphrase file expects an encrypted backup: a plain one is refused (the passphrase
    was silently ignored and the plain backup restored), nothing written."""
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE + "\n")
    done = run_roost("restore", str(_copy(plain, tmp_path)), "--passphrase-file",
                     str(pass_file), env=target.env, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "is not encrypted" in done.stderr and "Traceback" not in done.stderr
    assert not (target.data_dir / "keys").exists()


def test_a_link_out_of_the_repositories_is_left_out_of_the_backup_with_a_warning(
        source: Place, tmp_path: Path, target: Place) -> None:
    """An operator links repositories kept elsewhere into DATA_DIR/repos: a restore
    refuses a link out of the directory, so the backup leaves it out, naming it in a
    warning, and what the backup wrote restores (it wrote one the restore refused)."""
    elsewhere = tmp_path / "old-repos"
    elsewhere.mkdir()
    repos = source.data_dir / "repos"
    repos.mkdir(exist_ok=True)
    (repos / "kept.txt").write_text("mine")
    (repos / "legacy").symlink_to(elsewhere)
    (repos / "inside").symlink_to("kept.txt")  # a link within stays
    path = tmp_path / "with-link"
    try:
        done = run_roost("backup", str(path), env=source.env, timeout=300)
    finally:
        shutil.rmtree(repos)
    assert done.returncode == 0, done.stderr
    assert "repos/legacy is a link out of the directory" in done.stdout + done.stderr
    done = run_roost("restore", str(path), env=target.env, timeout=300)
    assert done.returncode == 0, done.stderr
    restored = target.data_dir / "repos"
    assert sorted(p.name for p in restored.iterdir()) == ["inside", "kept.txt"]
    assert (restored / "inside").read_text() == "mine"

