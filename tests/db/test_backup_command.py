"""``roost backup`` as an operator runs it: the database URL's driver options, a role that
cannot read the tables, a data dir without a database, SIGTERM mid-dump, oversized keys
and a long directory name: a backup that works, or one line (exit 1) and nothing left.

Like test_backup_hostile.py, the backups are of an external database (a copy of the
migrated template) and its data dir's keys.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import make_url
from tests.support.cli import ROOST, command_env, run_roost
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.places import Place, execute_sql, public_tables

from roost.config import Settings
from roost.db.backup import SMALL_FILE_MAX, Target
from roost.db.replicas import describe
from roost.keyfiles import load_keys


def _clean(done: subprocess.CompletedProcess[str], code: int = 1) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr


# --- the database URL ----------------------------------------------------------------------


@pytest.mark.parametrize("query", ["ssl=disable", "statement_cache_size=0",
                                   "command_timeout=60"])
def test_a_database_url_with_driver_options_backs_up(
    source: Place, tmp_path: Path, query: str,
) -> None:
    """ROOST_DATABASE_URL's options are asyncpg's (docs/scale.md: ``ssl=require``); they
    were sent to the server as settings (a traceback) and to pg_dump as libpq options."""
    out = tmp_path / "b"
    sep = "&" if "?" in source.url else "?"
    env = {**source.env, "ROOST_DATABASE_URL": source.url + sep + query}
    done = run_roost("backup", str(out), env=env, timeout=300)
    _clean(done, 0)
    assert (out / "manifest.json").exists()


def test_a_database_url_with_driver_options_is_restored_into(
    source: Place, tmp_path: Path, pg_server: PgTestServer,
) -> None:
    """`roost restore` connects (and runs pg_restore) with the same options as `roost
    backup`: it failed on them the same way."""
    out = tmp_path / "b"
    _clean(run_roost("backup", str(out), env=source.env, timeout=300), 0)
    name = unique_db_name("command_dst")
    asyncio.run(pg_server.create_database(name))
    try:
        url = pg_server.libpq_url(name)
        sep = "&" if "?" in url else "?"
        env = {"ROOST_DATABASE_URL": url + sep + "ssl=disable&statement_cache_size=0",
               "ROOST_DATA_DIR": str(tmp_path / "dst")}
        done = run_roost("restore", str(out), env=env, timeout=300)
        _clean(done, 0)
        assert "restored" in done.stdout, done.stdout
    finally:
        asyncio.run(pg_server.drop_database(name))


def test_the_client_programs_get_the_url_options_libpq_has_under_its_names() -> None:
    """ssl= becomes sslmode=, timeout= connect_timeout= (whole seconds), direct_tls=
    sslnegotiation=direct; asyncpg's own tuning options are left out; asyncpg gets every
    option, its numbers as numbers."""
    target = Target(url=make_url(
        "postgresql://u:pw@db.example:6432/roost?ssl=verify-full&timeout=2.5&direct_tls=true"
        "&statement_cache_size=0&command_timeout=60&target_session_attrs=read-write"))
    dbname, env = target.libpq_args()
    assert dbname == ("host='db.example' port='6432' user='u' dbname='roost' "
                      "sslmode='verify-full' connect_timeout='3' sslnegotiation='direct' "
                      "target_session_attrs='read-write'")
    assert env["PGPASSWORD"] == "pw"
    kwargs = target.connect_kwargs(database="postgres")
    assert kwargs == {"host": "db.example", "port": 6432, "user": "u", "password": "pw",
                      "database": "postgres", "ssl": "verify-full", "timeout": 2.5,
                      "direct_tls": True, "statement_cache_size": 0, "command_timeout": 60.0,
                      "target_session_attrs": "read-write"}


def test_a_user_and_password_in_the_url_query_reach_the_client_programs() -> None:
    """asyncpg takes ?user= and ?password= (the operations docs allow them): pg_dump and
    pg_restore get them too (the password in the environment, never on the command
    line), and the URL as printed shows neither password."""
    url = make_url("postgresql://db.example/roost?user=u&password=s3cret-pw&ssl=disable")
    dbname, env = Target(url=url).libpq_args()
    assert dbname == "host='db.example' user='u' dbname='roost' sslmode='disable'"
    assert env["PGPASSWORD"] == "s3cret-pw" and "s3cret" not in dbname
    assert "s3cret" not in describe(url) and "s3cret" not in describe(
        make_url("postgresql://u:s3cret-pw@db.example/roost"))


def test_a_role_that_cannot_read_the_tables_gets_one_line(
    source: Place, tmp_path: Path, pg_server: PgTestServer,
) -> None:
    """ROOST_DATABASE_URL's role lacks SELECT on the tables: `backup failed: ...` naming the
    permission problem, exit 1, nothing left (it was an InsufficientPrivilegeError
    traceback)."""
    role = unique_db_name("command_role")
    execute_sql(source.url, f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        dbname = urlsplit(source.url).path.lstrip("/")
        url = pg_server.url_for(dbname).set(
            username=role, password="pw", drivername="postgresql")
        env = {**source.env, "ROOST_DATABASE_URL": url.render_as_string(hide_password=False)}
        done = run_roost("backup", str(tmp_path / "b"), env=env, timeout=300)
        _clean(done)
        assert "backup failed: permission denied" in done.stderr, done.stderr
        assert "owner or a superuser" in done.stderr, done.stderr
        assert list(tmp_path.iterdir()) == []
    finally:
        execute_sql(source.url, f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_a_data_dir_without_a_database_is_not_backed_up_as_an_empty_one(
    open_tmp: Path,
) -> None:
    """ROOST_DATA_DIR holds keys but no cluster and ROOST_DATABASE_URL is unset (a shell
    without the service's environment, a wrong data dir): one line and nothing created; it
    created a new empty cluster and reported "0 tables, 0 rows" as a backup (exit 0)."""
    data_dir = open_tmp / "data"
    load_keys(Settings(data_dir=data_dir))
    out = open_tmp / "b"
    done = run_roost("backup", str(out), env={"ROOST_DATA_DIR": str(data_dir)}, timeout=300)
    assert not (data_dir / "pg").exists(), "a backup must not create a database cluster"
    _clean(done)
    assert "no database to back up" in done.stderr and "ROOST_DATABASE_URL" in done.stderr
    assert not out.exists()


# --- the backup directory and the keys -----------------------------------------------------


def test_a_backup_directory_with_a_long_valid_name_is_written(
    source: Place, tmp_path: Path,
) -> None:
    """A 250-byte directory name (Linux allows 255) can be a backup's name; it was refused
    as "file name too long" naming a hidden temporary path the user never gave."""
    out = tmp_path / ("b" * 250)
    done = run_roost("backup", str(out), env=source.env, timeout=300)
    _clean(done, 0)
    assert (out / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_key_file_larger_than_a_restore_reads_is_refused_by_the_backup(
    source: Place, tmp_path: Path,
) -> None:
    """A file over 64 MiB in DATA_DIR/keys: `roost backup` refuses it, naming it; it wrote
    a keys.json that `roost restore` always refuses (a backup that cannot be restored)."""
    data_dir = tmp_path / "data"
    shutil.copytree(source.data_dir, data_dir)
    big = data_dir / "keys" / "big"
    big.write_text("k" * (SMALL_FILE_MAX + 1024))
    out = tmp_path / "b"
    done = run_roost("backup", str(out), env={**source.env, "ROOST_DATA_DIR": str(data_dir)},
                     timeout=300)
    _clean(done)
    assert f"backup failed: {big} is" in done.stderr, done.stderr
    assert not out.exists()


# --- SIGTERM -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(pg_server: PgTestServer, template_db: str, source: Place) -> Iterator[Place]:
    """A database with a table big enough that its dump takes a few seconds."""
    name = unique_db_name("command_big")
    asyncio.run(pg_server.create_database(name, template=template_db))
    url = pg_server.libpq_url(name)
    execute_sql(url, "CREATE TABLE public.command_big AS SELECT g, md5(g::text) AS h "
               "FROM generate_series(1, 1500000) g")
    try:
        yield Place(url, source.data_dir)
    finally:
        asyncio.run(pg_server.drop_database(name))


def _clients_naming(where: Path, program: str = "pg_dump") -> dict[int, str]:
    """pid -> command line of the ``program`` processes whose arguments name ``where``."""
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if program in args and str(where) in args:
            found[int(proc.name)] = args
    return found


def test_sigterm_during_a_backup_stops_pg_dump_and_leaves_nothing(
    big: Place, tmp_path: Path,
) -> None:
    """SIGTERM (systemd, docker stop, a cron timeout) during the dump: pg_dump stops with
    roost and the half-written backup is removed (docs: "complete or absent"); it left a
    hidden directory with a partial dump, and pg_dump running."""
    out = tmp_path / "b"
    proc = subprocess.Popen([ROOST, "backup", str(out)], env=command_env(big.env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    orphans: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _clients_naming(tmp_path):
            time.sleep(0.02)
        assert proc.poll() is None, "the backup ended before the signal"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, stderr)
        assert "Traceback" not in stderr and "backup stopped" in stderr, stderr
        # roost waited for pg_dump to end before it exited: nothing of it is left.
        orphans = _clients_naming(tmp_path)
        assert orphans == {}, "pg_dump still runs after roost backup was terminated"
        assert list(tmp_path.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in orphans:  # children of the roost process this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigterm_during_a_restore_stops_pg_restore_and_writes_nothing(
    big: Place, tmp_path: Path, pg_server: PgTestServer,
) -> None:
    """SIGTERM while pg_restore runs into an empty database: pg_restore stops with roost,
    its single transaction rolls back, no key file is written."""
    backup = tmp_path / "b"
    _clean(run_roost("backup", str(backup), env=big.env, timeout=300), 0)
    name = unique_db_name("command_dst")
    asyncio.run(pg_server.create_database(name))
    target = Place(pg_server.libpq_url(name), tmp_path / "dst")
    proc = subprocess.Popen([ROOST, "restore", str(backup)], env=command_env(target.env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def restoring() -> bool:
        return bool(_clients_naming(backup, "pg_restore"))

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not restoring():
            time.sleep(0.02)
        assert proc.poll() is None, "the restore ended before the signal"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, stderr)
        assert "Traceback" not in stderr and "restore stopped" in stderr, stderr
        assert not restoring(), "pg_restore still runs after roost restore was terminated"
        assert public_tables(target.url) == 0
        keys = target.data_dir / "keys"
        assert not keys.exists() or not any(keys.iterdir())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        asyncio.run(pg_server.drop_database(name))
