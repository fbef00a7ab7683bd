"""``roost restore`` of corrupted or hand-edited backups and ``roost backup`` of a data dir
or disk it cannot use: one clear line, exit 1, and nothing written (docs/operations.md:
"a corrupted backup ... is a clear error (exit 1) with nothing written").

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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer, unique_db_name

from roost.config import Settings
from roost.keyfiles import load_keys

PASSPHRASE = "correct horse battery staple"
Manifest = dict[str, Any]


@dataclass
class Place:
    """A database and a data dir, as ``roost`` is pointed at them."""

    url: str
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {"ROOST_DATABASE_URL": self.url, "ROOST_DATA_DIR": str(self.data_dir)}


@pytest.fixture(scope="module")
def source(pg_server: PgTestServer, template_db: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    name = unique_db_name("hostile_src")
    asyncio.run(pg_server.create_database(name, template=template_db))
    data_dir = tmp_path_factory.mktemp("hostile-source")
    load_keys(Settings(data_dir=data_dir))
    try:
        yield Place(pg_server.libpq_url(name), data_dir)
    finally:
        asyncio.run(pg_server.drop_database(name))


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


def _tables(url: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
        finally:
            await conn.close()

    return asyncio.run(count())


def _refused_cleanly(done: subprocess.CompletedProcess[str], target: Place,
                     mentions: str) -> None:
    """Exit 1, one line naming the problem, no table restored, no key file written."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert mentions in done.stderr, done.stderr
    assert _tables(target.url) == 0, "nothing may be restored from a corrupted backup"
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
], ids=["file-entry-a-string", "file-size-a-string", "files-a-list", "tables-a-number",
        "table-without-fields", "table-without-rows", "sequence-malformed", "roles-a-string"])
def test_a_manifest_of_the_wrong_shape_is_refused_before_anything_is_written(
    plain: Path, target: Place, tmp_path: Path, edit: Callable[[Manifest], None],
    mentions: str,
) -> None:
    """Each field the restore reads is checked (type and presence) with the manifest: a
    table entry without its row count was found only after pg_restore had restored the
    database and the keys were written."""
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
