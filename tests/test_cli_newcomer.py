"""The ``roost`` command line as a newcomer meets it: a database that is not there, not
reachable, not PostgreSQL or not migrated; files that are missing, directories or not
text; numbers out of any sane range; typos in choices.  Each is a short message naming
what is wrong and what to do, and a non-zero exit: never a traceback, never exit 0 on a
failure, never a command that keeps running.  Also what ``roost serve`` tells the person
who started it, and that its worker runs jobs other processes enqueue."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pty
import socket
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer
import typer.main

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import load_keys
from tests.support.cli import ROOST, command_env, readable, run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.server import free_port, roost_server

Z = "00000000-0000-0000-0000-000000000000"
REPO = Path(__file__).parent.parent


def _env(pg_server: Any, db_name: str, data: Path, **extra: str) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
            "ROOST_DATA_DIR": str(data), **extra}


def assert_clean_failure(out: subprocess.CompletedProcess[str], *, mentions: str = "",
                         code: int | None = None) -> None:
    """Non-zero (``code`` if given), no traceback, a message of one or two lines on
    stderr naming ``mentions``."""
    shown = f"rc={out.returncode}\nstdout:\n{out.stdout[-1500:]}\nstderr:\n{out.stderr[-3000:]}"
    assert out.returncode != 0 if code is None else out.returncode == code, shown
    assert "Traceback" not in out.stderr + out.stdout, shown
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, shown
    if mentions:
        assert mentions.lower() in out.stderr.lower(), shown


def assert_usage_error(out: subprocess.CompletedProcess[str], option: str) -> None:
    """Refused as click refuses a bad value (exit 2, the option named), before any work."""
    shown = f"rc={out.returncode}\nstderr:\n{out.stderr[-2000:]}"
    assert out.returncode == 2, shown
    assert option in out.stderr and "Traceback" not in out.stderr, shown


@pytest.fixture(scope="module")
def keyed_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding Roost's keys, as `roost serve` leaves it (backups need them)."""
    data = tmp_path_factory.mktemp("newcomer") / "data"
    load_keys(Settings(data_dir=data, secret_key=None, message_keys=None, secrets_key=None,
                       admin_token=None))
    return data


@pytest.fixture
def refused_env(keyed_data_dir: Path) -> dict[str, str]:
    """A database URL where nothing listens: a command that opened it would say so."""
    return {"ROOST_DATABASE_URL": f"postgresql://roost:s3cret@127.0.0.1:{free_port()}/roost",
            "ROOST_DATA_DIR": str(keyed_data_dir)}


def _commands() -> Iterator[tuple[list[str], Any]]:
    from roost.cli import app

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        if hasattr(cmd, "list_commands"):
            ctx = typer.Context(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    yield from walk(typer.main.get_command(app), [])


# --- help and options ------------------------------------------------------------------------

HELP_EVERY_COMMAND = """
import contextlib, io, json
import typer, typer.main
from roost.cli import app

root, paths = typer.main.get_command(app), []
def walk(cmd, path):
    paths.append(path)
    if hasattr(cmd, "list_commands"):
        ctx = typer.Context(cmd)
        for name in cmd.list_commands(ctx):
            walk(cmd.get_command(ctx, name), [*path, name])
walk(root, [])
bad = []
for path in paths:
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(shown):
            code = root.main([*path, "--help"], prog_name="roost", standalone_mode=False)
    except BaseException as exc:
        code = repr(exc)
    if code != 0 or "Usage" not in shown.getvalue() or "Traceback" in shown.getvalue():
        bad.append([path, code, shown.getvalue()[-500:]])
print(json.dumps({"commands": len(paths), "bad": bad}))
"""


def test_every_command_prints_its_help_without_touching_data(tmp_path: Path) -> None:
    import json

    env = command_env({"ROOST_DATA_DIR": str(tmp_path / "never-created")})
    done = subprocess.run([sys.executable, "-c", HELP_EVERY_COMMAND], env=env, text=True,
                          capture_output=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["commands"] > 100 and found["bad"] == [], found["bad"][:3]
    assert not (tmp_path / "never-created").exists()


def test_every_numeric_option_has_bounds() -> None:
    """A number out of range is refused as the user typed it, never an overflow deep
    inside (a timedelta, an int32 column, an interval, a port that wraps)."""
    unbounded = []
    for path, cmd in _commands():
        if hasattr(cmd, "list_commands"):
            continue
        hints = typing.get_type_hints(inspect.unwrap(cmd.callback), include_extras=True)
        for name, hint in hints.items():
            if typing.get_origin(hint) is not typing.Annotated:
                continue
            base, *meta = typing.get_args(hint)
            kinds = set(typing.get_args(base)) or {base}
            if not kinds & {int, float} or bool in kinds:
                continue
            info = next(m for m in meta if isinstance(m, typer.models.ParameterInfo))
            if info.min is None or info.max is None:
                unbounded.append(f"roost {' '.join(path)} {name}")
    assert unbounded == []


def test_users_list_status_choices_are_the_account_statuses() -> None:
    from roost.identity.cli import UserStatus
    from roost.identity.models import STATUSES

    assert typing.get_args(UserStatus) == STATUSES


@pytest.mark.parametrize(("argv", "option"), [
    (("keys", "create", "--user", "u", "--expires-days", "3000000"), "--expires-days"),
    (("keys", "create", "--user", "u", "--expires-days", "99999999999999999999"),
     "--expires-days"),
    (("audit", "prune", "--older-than-days", "999999999"), "--older-than-days"),
    (("prompts", "show", "k.x", "--version", "99999999999999999999"), "--version"),
    (("workflows", "run", "w", "--version", "2147483648"), "--version"),
    (("serve", "--no-migrate", "--port", "99999"), "--port"),
    (("worker", "--lease", "inf"), "--lease"),
    (("worker", "--lease", "nan"), "--lease"),
    (("memory", "ls", "--limit", "100000"), "--limit"),
    (("users", "list", "--status", "pending"), "--status"),
])
def test_out_of_range_numbers_and_unknown_choices_are_usage_errors(
    argv: tuple[str, ...], option: str, refused_env: dict[str, str]
) -> None:
    assert_usage_error(run_roost(*argv, env=refused_env, timeout=60), option)


# --- the database: unreachable, refusing, not PostgreSQL, not migrated ----------------------


@pytest.mark.parametrize("argv", [
    ("users", "list"), ("db", "current"), ("agents", "ls"), ("settings", "ls"),
    ("ingest", "README.md"), ("backup", "bk"), ("worker",), ("serve",),
])
def test_an_unreachable_database_is_one_line(argv: tuple[str, ...],
                                              refused_env: dict[str, str],
                                              tmp_path: Path) -> None:
    port = refused_env["ROOST_DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    out = run_roost(*argv, env=refused_env, timeout=60, cwd=tmp_path)
    assert_clean_failure(out, mentions=f"cannot reach the database at 127.0.0.1:{port}", code=1)
    assert "ROOST_DATABASE_URL" in out.stderr and "s3cret" not in out.stderr


@contextlib.contextmanager
def _answering_server(read: int, answer: bytes) -> Iterator[int]:
    """A TCP server on loopback that reads up to ``read`` bytes of each connection and
    answers ``answer``; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(read)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture
def no_ssl_server() -> Iterator[int]:
    """A TCP server that answers PostgreSQL's SSL request with 'N' (no SSL here)."""
    with _answering_server(8, b"N") as port:
        yield port


def test_a_server_without_ssl_and_a_libpq_only_option_are_named(
    no_ssl_server: int, keyed_data_dir: Path
) -> None:
    url = f"postgresql://roost:s3cret@127.0.0.1:{no_ssl_server}/roost"
    env = {"ROOST_DATA_DIR": str(keyed_data_dir)}
    refused = run_roost("users", "list", env={**env, "ROOST_DATABASE_URL": url + "?ssl=require"})
    assert_clean_failure(refused, mentions="refused SSL", code=1)
    libpq = run_roost("users", "list", env={**env, "ROOST_DATABASE_URL": url + "?sslmode=require"})
    assert_clean_failure(libpq, mentions="ssl=require", code=2)


def test_an_unknown_database_or_role_is_one_line(pg_server: PgTestServer,
                                                 keyed_data_dir: Path) -> None:
    env = {"ROOST_DATA_DIR": str(keyed_data_dir)}
    missing = run_roost("users", "list", env={
        **env, "ROOST_DATABASE_URL": pg_server.libpq_url("no_such_database_x")})
    assert_clean_failure(missing, mentions='database "no_such_database_x" does not exist')
    stranger = pg_server.url_for("postgres").set(drivername="postgresql", username="nobody_x")
    refused = run_roost("users", "list", env={
        **env, "ROOST_DATABASE_URL": stranger.render_as_string(hide_password=False)})
    assert_clean_failure(refused, mentions="refused the sign-in")


@pytest.mark.parametrize("url", ["notaurl", "mysql://x:s3cret@localhost/db",
                                 "postgresql://x:s3cret@localhost:port/db"])
def test_a_malformed_database_url_is_a_configuration_error(url: str, tmp_path: Path) -> None:
    out = run_roost("users", "list", env={"ROOST_DATABASE_URL": url,
                                          "ROOST_DATA_DIR": str(tmp_path / "d")})
    assert_clean_failure(out, mentions="invalid configuration: ROOST_DATABASE_URL", code=2)
    assert "s3cret" not in out.stderr


@pytest.fixture
def http_server() -> Iterator[int]:
    """A TCP server that answers anything with an HTTP 400 (not PostgreSQL)."""
    with _answering_server(1000, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as port:
        yield port


def test_a_database_url_at_a_server_that_is_not_postgresql_asks_about_the_port(
    http_server: int, keyed_data_dir: Path,
) -> None:
    """A URL without any ssl option at a web server: 'no PostgreSQL server answered', never
    'drop the ssl option' (asyncpg's own SSL attempt got the web server's answer)."""
    url = f"postgresql://roost:s3cret@127.0.0.1:{http_server}/roost"
    out = run_roost("users", "list", env={"ROOST_DATA_DIR": str(keyed_data_dir),
                                          "ROOST_DATABASE_URL": url}, timeout=60)
    assert_clean_failure(out, mentions=f"no PostgreSQL server answered at 127.0.0.1:"
                         f"{http_server} (is this the right port?)", code=1)
    assert "ssl option" not in out.stderr and "s3cret" not in out.stderr, out.stderr



def test_a_database_url_option_that_is_not_a_number_is_a_configuration_error(
    keyed_data_dir: Path,
) -> None:
    """``?command_timeout=abc``: one line naming the option, not a traceback."""
    url = "postgresql://roost:s3cret@127.0.0.1:5/roost?command_timeout=abc"
    out = run_roost("users", "list", env={"ROOST_DATA_DIR": str(keyed_data_dir),
                                          "ROOST_DATABASE_URL": url}, timeout=60)
    assert_clean_failure(out, mentions="invalid configuration: ROOST_DATABASE_URL: "
                         "command_timeout=abc is not a number", code=2)
    assert "s3cret" not in out.stderr

@pytest.mark.parametrize("port", ["0", "99999"])
def test_a_database_url_port_out_of_range_is_a_configuration_error(
    port: str, keyed_data_dir: Path,
) -> None:
    """Not 5432 in place of 0, nor 'connection refused' for 99999."""
    url = f"postgresql://roost:s3cret@127.0.0.1:{port}/roost"
    out = run_roost("users", "list", env={"ROOST_DATA_DIR": str(keyed_data_dir),
                                          "ROOST_DATABASE_URL": url}, timeout=60)
    assert_clean_failure(out, mentions="invalid configuration: ROOST_DATABASE_URL: the port "
                         "must be 1-65535", code=2)
    assert "s3cret" not in out.stderr


async def test_an_unmigrated_database_says_run_db_upgrade(pg_server: PgTestServer,
                                                          keyed_data_dir: Path) -> None:
    name = unique_db_name("cliempty")
    await pg_server.create_database(name)
    try:
        env = _env(pg_server, name, keyed_data_dir)
        made = await asyncio.to_thread(run_roost, "users", "create", "alice", "--email",
                                       "alice@example.com", "--no-password", env=env)
        assert_clean_failure(made, mentions="roost db upgrade", code=1)
        serving = await asyncio.to_thread(run_roost, "serve", "--no-migrate", env=env)
        assert_clean_failure(serving, mentions="roost db upgrade", code=1)
        # The audit commands first call a function the migrations create.
        for argv in (("audit", "verify"), ("audit", "prune", "--older-than-days", "30")):
            audit = await asyncio.to_thread(run_roost, *argv, env=env)
            assert_clean_failure(audit, mentions="roost db upgrade", code=1)
    finally:
        await pg_server.drop_database(name)


def test_a_revision_migrations_cannot_reach_is_one_line(pg_server: PgTestServer, db_name: str,
                                                        tmp_path: Path) -> None:
    """`roost db upgrade|downgrade` to an unknown revision, or a relative step past the
    last one, says so in a line (it was Alembic's traceback); the database stays as it was."""
    env = _env(pg_server, db_name, tmp_path)
    for argv, mentions in (
        (("db", "upgrade", "bogus"), "cannot upgrade to 'bogus': can't locate revision"),
        (("db", "downgrade", "bogus"), "cannot downgrade to 'bogus': can't locate revision"),
        (("db", "downgrade", "+1"), "cannot downgrade to '+1'"),
    ):
        assert_clean_failure(run_roost(*argv, env=env, timeout=60), mentions=mentions, code=1)
    assert_usage_error(run_roost("db", "upgrade", "", env=env, timeout=60), "REVISION")
    current = run_roost("db", "current", env=env, timeout=60)
    assert current.returncode == 0 and current.stdout.rstrip().endswith("— head"), current


def test_db_downgrade_minus_one_steps_back_as_its_help_says(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """`roost db downgrade -1` (the help's own example) was 'No such option: -1'."""
    env = _env(pg_server, db_name, tmp_path)
    down = run_roost("db", "downgrade", "-1", env=env, timeout=120)
    assert down.returncode == 0, down.stderr[-2000:]
    current = run_roost("db", "current", env=env, timeout=60)
    assert current.returncode == 0 and "behind (head is" in current.stdout, current


def test_serve_no_migrate_on_a_database_behind_head_refuses(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """--no-migrate on a database one revision behind: refused, naming both revisions
    (it served, failing request by request on what the last migration adds)."""
    env = _env(pg_server, db_name, tmp_path, ROOST_LLM_LOCAL_MODEL="false",
               ROOST_SERVE_WORKER="false")
    down = run_roost("db", "downgrade", "--", "-1", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    try:
        out = run_roost("serve", "--no-migrate", "--port", str(free_port()), env=env,
                        timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("serve --no-migrate ran on a database behind head")
    assert_clean_failure(out, mentions="head is", code=1)
    assert "run `roost db upgrade`" in out.stderr, out.stderr


async def set_revision(pg_server: PgTestServer, name: str, revision: str) -> None:
    """Stamp the database at ``revision``, as a newer Roost's migration would leave it."""
    conn = await asyncpg.connect(pg_server.libpq_url(name))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await conn.close()


async def test_serve_on_a_database_a_newer_roost_migrated_is_one_line(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """A database at a revision this Roost does not know (a newer Roost migrated it, then
    the software was rolled back): `roost serve`, with or without --no-migrate, in one
    process or several, refuses in one line naming the revision and saying to upgrade
    Roost (it was Alembic's "Can't locate revision" traceback); so does `roost db upgrade`."""
    await set_revision(pg_server, db_name, "9999")
    env = _env(pg_server, db_name, tmp_path, ROOST_LLM_LOCAL_MODEL="false",
               ROOST_SERVE_WORKER="false")
    for extra in ((), ("--no-migrate",), ("--workers", "2")):
        out = await asyncio.to_thread(run_roost, "serve", "--port", str(free_port()), *extra,
                                      env=env, timeout=120)
        # The refusal comes first: no start banner (the supervisor printed one before it).
        assert "is starting on" not in out.stderr, out.stderr
        assert_clean_failure(out, mentions="migrated by a newer Roost (revision 9999", code=1)
        assert "upgrade Roost" in out.stderr, out.stderr
    upgrade = await asyncio.to_thread(run_roost, "db", "upgrade", env=env, timeout=120)
    assert_clean_failure(upgrade, mentions="cannot upgrade to 'heads': migrated by a newer "
                         "Roost (revision 9999", code=1)


async def test_db_upgrade_on_a_read_only_database_is_one_line(
    pg_server: PgTestServer, tmp_path: Path,
) -> None:
    """`roost db upgrade` on a read-only database (a standby, default_transaction_read_only)
    says so in one line, exit 1: the database's reason, not a traceback ending in the
    whole CREATE TABLE statement."""
    name = unique_db_name("cliro")
    await pg_server.create_database(name)
    try:
        env = _env(pg_server, name, tmp_path)
        up = await asyncio.to_thread(run_roost, "db", "upgrade", "0860", env=env, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        admin = await pg_server.connect_admin()
        try:
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        finally:
            await admin.close()
        upgrade = await asyncio.to_thread(run_roost, "db", "upgrade", env=env, timeout=120)
        assert_clean_failure(upgrade, mentions="is read-only: cannot execute CREATE TABLE in "
                             "a read-only transaction", code=1)
        assert "[SQL:" not in upgrade.stderr, upgrade.stderr  # SQLAlchemy's statement
    finally:
        admin = await pg_server.connect_admin()
        try:
            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        finally:
            await admin.close()
        await pg_server.drop_database(name)


async def test_db_upgrade_as_a_user_without_the_right_is_one_line(
    pg_server: PgTestServer, tmp_path: Path,
) -> None:
    """A user of ROOST_DATABASE_URL that may not create what the migrations create: the
    database's "permission denied" in one line, exit 1, not a traceback."""
    name, role = unique_db_name("clinoright"), unique_db_name("weak")
    await pg_server.create_database(name)
    admin = await pg_server.connect_admin()
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        url = pg_server.url_for(name).set(drivername="postgresql", username=role)
        env = {"ROOST_DATABASE_URL": url.render_as_string(hide_password=False),
               "ROOST_DATA_DIR": str(tmp_path)}
        upgrade = await asyncio.to_thread(run_roost, "db", "upgrade", env=env, timeout=120)
        assert_clean_failure(upgrade, mentions="refused: permission denied", code=1)
        assert "[SQL:" not in upgrade.stderr, upgrade.stderr
    finally:
        await pg_server.drop_database(name)
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


def test_a_new_embedded_data_dir_gets_its_tables_on_first_use(tmp_path: Path) -> None:
    """As `roost serve` would: a command on a data dir never served first migrates it."""
    env = {"ROOST_DATA_DIR": str(tmp_path / "fresh")}
    made = run_roost("users", "create", "alice", "--email", "alice@example.com",
                     "--no-password", env=env, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "(root)" in made.stdout and made.stderr == ""
    current = run_roost("db", "current", env=env, timeout=60)
    assert current.returncode == 0 and "head" in current.stdout, current.stderr


def test_a_data_dir_that_is_a_file_is_one_line_and_fails_doctor(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    env = {"ROOST_DATA_DIR": str(tmp_path / "afile")}
    listed = run_roost("users", "list", env=env, timeout=60)
    assert_clean_failure(listed, mentions=f"{tmp_path / 'afile'} is not a directory", code=1)
    doctor = run_roost("doctor", env=env, timeout=90)
    assert doctor.returncode == 1
    row = next(line for line in doctor.stdout.splitlines() if "data dir" in line)
    assert "FAIL" in row and "not a directory" in row, doctor.stdout


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ROOST_CODE_CHECKS", "notjson", "not valid JSON"),
    ("ROOST_CODE_CHECKS", '[["ruff"', "not valid JSON"),
    ("ROOST_LOG_LEVEL", "warnig", "'debug', 'info', 'warning', 'error' or 'critical'"),
])
def test_a_setting_that_does_not_parse_is_a_configuration_error(
    name: str, value: str, says: str, refused_env: dict[str, str],
) -> None:
    """Like every bad setting: one line naming the variable (never its value), exit 2; not
    pydantic-settings' traceback for a JSON one, not a log level typo run at info."""
    out = run_roost("users", "list", env={**refused_env, name: value}, timeout=60)
    assert_clean_failure(out, mentions=f"invalid configuration: {name}: ", code=2)
    assert says in out.stderr and value not in out.stderr, out.stderr


def test_a_data_dir_under_an_unknown_users_home_is_one_line(
    refused_env: dict[str, str],
) -> None:
    """ROOST_DATA_DIR=~nosuchuser/roost: one line naming the variable (it was two
    tracebacks: the home directory could not be determined)."""
    out = run_roost("users", "list", env={**refused_env,
                                          "ROOST_DATA_DIR": "~nosuchuser_x/roost"}, timeout=60)
    assert_clean_failure(out, mentions="invalid configuration: ROOST_DATA_DIR: ", code=2)


def test_a_dot_env_file_that_is_not_utf8_is_one_line(refused_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_bytes(b"ROOST_PORT=\xff\xfe8000\n")
    out = run_roost("users", "list", env=refused_env, timeout=60, cwd=work)
    assert_clean_failure(out, mentions="invalid configuration: .env (in the working "
                         "directory) is not UTF-8 text", code=2)


def test_an_empty_data_dir_variable_means_the_default_not_the_working_directory(
    refused_env: dict[str, str], tmp_path: Path,
) -> None:
    """ROOST_DATA_DIR= (empty) was Path("."): serve wrote keys/ into the directory it was
    started from."""
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    out = run_roost("serve", "--port", str(free_port()), timeout=60, cwd=work,
                    env={**refused_env, "ROOST_DATA_DIR": "", "XDG_DATA_HOME": str(xdg)})
    assert out.returncode == 1, out.stderr  # the database is unreachable
    assert not (work / "keys").exists(), out.stderr
    assert (xdg / "roost" / "keys" / "secret_key").exists(), out.stderr


def test_a_misspelt_roost_variable_is_named_with_the_setting_it_may_mean(
    refused_env: dict[str, str],
) -> None:
    """A warning, not a refusal: the command goes on (to the unreachable database)."""
    out = run_roost("users", "list", env={**refused_env,
                                          "ROOST_DATABSE_URL": "postgresql://x@h/db"},
                    timeout=60)
    assert out.returncode == 1 and "cannot reach the database" in out.stderr, out.stderr
    assert ("warning: ROOST_DATABSE_URL is not a Roost setting (did you mean "
            "ROOST_DATABASE_URL?); it is ignored") in out.stderr, out.stderr


def test_a_misspelt_variable_in_the_env_file_is_named_too(
    refused_env: dict[str, str], tmp_path: Path,
) -> None:
    """Settings come from the environment or a .env file: a typo there is named as one in
    the environment is (ROOST_DATABSE_URL in .env started the embedded PostgreSQL
    instead of the server, without a word)."""
    (tmp_path / ".env").write_text("# a comment\nexport ROOST_DB_POOL_SIZEE=5\n"
                                   "ROOST_DB_POOL_SIZE=5\n", encoding="utf-8")
    out = run_roost("users", "list", env=refused_env, cwd=tmp_path, timeout=60)
    assert out.returncode == 1 and "cannot reach the database" in out.stderr, out.stderr
    assert ("warning: ROOST_DB_POOL_SIZEE (in .env) is not a Roost setting (did you mean "
            "ROOST_DB_POOL_SIZE?); it is ignored") in out.stderr, out.stderr
    assert out.stderr.count("warning:") == 1, out.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("ROOST_WORKER_CONCURRENCY", "0"), ("ROOST_WORKER_CONCURRENCY", "abc"),
    ("ROOST_WORKER_LEASE_S", "-5"),
])
def test_a_bad_worker_setting_is_a_configuration_error(
    name: str, value: str, refused_env: dict[str, str],
) -> None:
    """Like ROOST_PORT=0: one line naming the variable, exit 2 (it was a traceback)."""
    out = run_roost("worker", env={**refused_env, name: value}, timeout=60)
    assert_clean_failure(out, mentions=f"invalid configuration: {name}: ", code=2)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_an_unknown_llm_fallback_kind_is_refused_at_start(
    command: str, refused_env: dict[str, str],
) -> None:
    """ROOST_LLM_FALLBACK_ON=bogus: serve exited with a traceback in its log, and a worker
    ran, dead-lettering every LLM job; now the settings refuse it before any work."""
    out = run_roost(command, env={**refused_env, "ROOST_LLM_FALLBACK_ON": "timeout,bogus"},
                    timeout=60)
    assert_clean_failure(out, mentions="invalid configuration: ROOST_LLM_FALLBACK_ON: ", code=2)
    assert "unknown kinds ['bogus']" in out.stderr, out.stderr


@pytest.mark.parametrize("argv", [
    ("runs", "ls", "--agent", "\udce9x", "--user", "someone"),
    ("runs", "ls", "--user", "\udce9"),
    ("users", "list", "--status", "\udce9"),
])
def test_an_argument_that_is_not_utf8_is_a_usage_error(
    argv: tuple[str, ...], refused_env: dict[str, str],
) -> None:
    """"\udce9": how Python reads the byte 0xE9 (a Latin-1 "é") in argv.  Refused once, for
    every command, before any work (it reached the database driver: a traceback)."""
    out = run_roost(*argv, env=refused_env, timeout=60, fresh=True)
    assert_clean_failure(out, mentions="invalid argument: '\\xe9", code=2)


def test_a_libpq_only_option_in_a_replica_url_is_a_configuration_error(
    refused_env: dict[str, str],
) -> None:
    """sslmode= in a replica URL is named at start, as for ROOST_DATABASE_URL (asyncpg
    has no such option): not a replica that is only ever 'unreachable: TypeError'."""
    replica = f"postgresql://roost:s3cret@127.0.0.1:{free_port()}/roost?sslmode=require"
    out = run_roost("doctor", env={**refused_env, "ROOST_DATABASE_REPLICA_URLS": replica},
                    timeout=60)
    assert_clean_failure(out, mentions="ROOST_DATABASE_REPLICA_URLS: the driver (asyncpg) "
                         "has no option sslmode; for SSL write ssl=require", code=2)
    assert "s3cret" not in out.stdout + out.stderr


@pytest.mark.parametrize(("name", "url"), [
    ("ROOST_DATABASE_REPLICA_URLS", "postgresql://postgres@/roost?host=/tmp&port=abc"),
    ("ROOST_DATABASE_REPLICA_URLS",
     "postgresql://postgres@/roost?host=/tmp&host=/x&port=1&port=2&port=3"),
    ("ROOST_DATABASE_REPLICA_URLS", "postgresql://postgres@/roost?host=/tmp&port=99999"),
    ("ROOST_DATABASE_URL", "postgresql://postgres@/roost?host=/tmp&port=abc"),
])
def test_host_and_port_options_the_driver_refuses_are_a_configuration_error(
    refused_env: dict[str, str], name: str, url: str,
) -> None:
    """A port given in the URL's query that is no number (or out of range), or several
    hosts written two ways: the start-up check names the setting, exit 2.  The driver's
    ArgumentError came out of the engine's creation as a traceback, exit 1, and `roost
    doctor` blamed the primary database for a replica's URL."""
    out = run_roost("doctor", env={**refused_env, name: url}, timeout=60)
    assert_clean_failure(out, mentions=f"{name}: ", code=2)

def test_a_password_in_the_url_query_is_an_option_the_driver_takes(tmp_path: Path) -> None:
    """asyncpg.connect takes password= (user=, database=): the URL check lets it through
    (the database is then only unreachable here), never printing it; an option asyncpg
    lacks is refused without an SSL hint unless it is about SSL."""
    env = {"ROOST_DATA_DIR": str(tmp_path / "d"), "ROOST_DB_CONNECT_TIMEOUT_S": "2"}
    url = f"postgresql://roost@127.0.0.1:{free_port()}/roost"
    doctor = run_roost("doctor", env={**env, "ROOST_DATABASE_URL": url + "?password=s3cretpw"},
                       timeout=60)
    out = doctor.stdout + doctor.stderr
    assert doctor.returncode == 1 and "unreachable" in doctor.stdout, out
    assert "s3cretpw" not in out and "has no option" not in out, out
    named = run_roost("users", "list", env={**env, "ROOST_DATABASE_URL":
                                            url + "?application_name=x"}, timeout=60)
    assert_clean_failure(named, mentions="has no option application_name", code=2)
    assert "ssl" not in named.stderr.lower(), named.stderr
    elsewhere = run_roost("users", "list", env={**env, "ROOST_DATABASE_URL":
                                                url + "?database=other"}, timeout=60)
    assert_clean_failure(elsewhere, mentions="name the database in the URL's path", code=2)


def test_doctor_on_a_mistyped_data_dir_creates_nothing(tmp_path: Path) -> None:
    """`roost doctor` reports the state: on a data dir holding no Roost (a typo, a disk
    not mounted yet) it says so, and neither generates keys nor initialises a cluster."""
    data = tmp_path / "typo-data-dir"
    doctor = run_roost("doctor", env={"ROOST_DATA_DIR": str(data)}, timeout=180)
    assert doctor.returncode == 1, doctor.stdout
    assert not data.exists(), doctor.stdout
    assert "no Roost database in" in doctor.stdout, doctor.stdout
    row = next(line for line in doctor.stdout.splitlines() if line.lstrip("│ ").startswith("keys"))
    assert "ok" in row and "not generated yet" in row, doctor.stdout


def test_doctor_fails_on_a_key_missing_beside_a_cluster(tmp_path: Path) -> None:
    """Keys are generated with the cluster: one missing once a cluster exists was lost
    (a new one could not decrypt what is stored), and doctor does not replace it."""
    data = tmp_path / "data"
    (data / "pg").mkdir(parents=True)
    (data / "pg" / "PG_VERSION").write_text("18\n")  # (not a usable cluster: that row fails too)
    doctor = run_roost("doctor", env={"ROOST_DATA_DIR": str(data)}, timeout=90)
    assert doctor.returncode == 1, doctor.stdout
    row = next(line for line in doctor.stdout.splitlines() if line.lstrip("│ ").startswith("keys"))
    assert "FAIL" in row and "restore it" in doctor.stdout, doctor.stdout
    assert not (data / "keys").exists()


def test_doctor_says_a_keys_file_is_not_a_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keys").write_text("x")
    doctor = run_roost("doctor", env={"ROOST_DATA_DIR": str(data)}, timeout=90)
    assert doctor.returncode == 1, doctor.stdout
    assert "is a file, not a directory" in doctor.stdout and "Errno" not in doctor.stdout, \
        doctor.stdout


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ROOST_SECRETS_KEY", "sh0rt-v4lue", "ROOST_SECRETS_KEY must decode to exactly 32 bytes"),
    ("ROOST_MESSAGE_KEYS", "not-a-fernet-key", "ROOST_MESSAGE_KEYS entry 1 is not a valid"),
    ("ROOST_SECRET_KEY", "sh0rt-v4lue", "ROOST_SECRET_KEY is too short: at least 32 bytes"),
])
def test_serve_refuses_a_key_it_cannot_use_before_any_work(
    name: str, value: str, says: str, refused_env: dict[str, str],
) -> None:
    """One line naming the variable, exit 2, before the database is even tried (it is
    unreachable here): not a traceback, nor a server whose every sign-in is a 500."""
    out = run_roost("serve", "--port", str(free_port()), env={**refused_env, name: value},
                    timeout=60)
    assert_clean_failure(out, mentions=f"invalid configuration: {says}", code=2)
    assert value not in out.stderr


@pytest.mark.parametrize(("option", "env"), [
    (("--host", "\uff11\uff12\uff17.0.0.1"), {}),
    ((), {"ROOST_HOST": "127.0.0.1\u200b"}),
])
def test_serve_refuses_a_bind_host_no_client_could_use(
    option: tuple[str, ...], env: dict[str, str], refused_env: dict[str, str],
) -> None:
    """A host in fullwidth digits (--host) or with a zero-width space (ROOST_HOST): one line,
    exit 2, before any work; it bound 127.0.0.1 and announced a URL no client can use."""
    out = run_roost("serve", "--port", str(free_port()), *option,
                    env={**refused_env, **env}, timeout=60)
    assert_clean_failure(out, mentions="is not an IP address or a host name", code=2)


def test_serve_with_a_key_file_others_can_read_is_one_line(
    tmp_path: Path, refused_env: dict[str, str],
) -> None:
    data = tmp_path / "data"
    load_keys(Settings(data_dir=data, secret_key=None, message_keys=None, secrets_key=None,
                       admin_token=None))
    key_file = data / "keys" / "secret_key"
    key_file.chmod(0o644)
    out = run_roost("serve", "--port", str(free_port()),
                    env={**refused_env, "ROOST_DATA_DIR": str(data)}, timeout=60)
    assert_clean_failure(out, mentions=f"{key_file} is readable by group or others (mode 644);"
                         f" run: chmod 600 {key_file}", code=2)


def test_a_key_file_that_is_not_text_is_one_line_naming_it(
    tmp_path: Path, refused_env: dict[str, str],
) -> None:
    """A corrupted (binary) key file: serve says which file, exit 2 (it was a
    UnicodeDecodeError traceback), and doctor's keys row names it too."""
    data = tmp_path / "data"
    load_keys(Settings(data_dir=data, secret_key=None, message_keys=None, secrets_key=None,
                       admin_token=None))
    key_file = data / "keys" / "secret_key"
    key_file.write_bytes(b"\xff\xfe\x00garbage")
    env = {**refused_env, "ROOST_DATA_DIR": str(data)}
    out = run_roost("serve", "--port", str(free_port()), env=env, timeout=60)
    assert_clean_failure(out, mentions=f"invalid configuration: {key_file} is not a key "
                         "(not UTF-8 text)", code=2)
    doctor = run_roost("doctor", env=env, timeout=90)
    row = next(line for line in doctor.stdout.splitlines() if line.lstrip("│ ").startswith("keys"))
    assert "FAIL" in row and "not a key" in doctor.stdout, doctor.stdout


def test_serve_on_a_port_in_use_is_one_line(refused_env: dict[str, str]) -> None:
    """Said before any work (the database here is unreachable), and only once: no
    'Task exception was never retrieved' traceback after it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = run_roost("serve", "--port", str(port), env=refused_env, timeout=60, fresh=True)
    assert_clean_failure(out, mentions=f"cannot listen on 127.0.0.1:{port}: address already "
                         "in use", code=1)


@pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["one-process", "workers"])
def test_serve_on_an_smtp_address_in_use_is_one_line(
    args: tuple[str, ...], refused_env: dict[str, str],
) -> None:
    """ROOST_SMTP_LISTEN on a taken port is refused as the HTTP port is: before any work
    (the database is unreachable here), one line, exit 1.  It stopped only once uvicorn
    ran the app's start-up, after the database was migrated: two tracebacks, exit 3."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = run_roost("serve", "--port", str(free_port()), *args, timeout=60, fresh=True,
                        env={**refused_env, "ROOST_SMTP_LISTEN": f"127.0.0.1:{port}"})
    assert_clean_failure(out, mentions=f"cannot listen on SMTP 127.0.0.1:{port}: address "
                         "already in use", code=1)


def test_serve_refuses_a_malformed_relay_url_before_any_work(
    refused_env: dict[str, str],
) -> None:
    """An invalid configuration like any other bad setting (exit 2, the URL and its
    password unsaid), not a traceback from the app's start-up after the migrations."""
    value = "smtp://mailer:s3cretpw@[bad"
    out = run_roost("serve", "--port", str(free_port()), timeout=60,
                    env={**refused_env, "ROOST_SMTP_RELAY_URL": value})
    assert_clean_failure(out, mentions="invalid configuration: ROOST_SMTP_RELAY_URL: ", code=2)
    assert "s3cretpw" not in out.stderr and "[bad" not in out.stderr, out.stderr


# --- files an option names -------------------------------------------------------------------


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x81bad")
    return {"missing": tmp_path / "nonexistent.json", "directory": tmp_path / "a-directory",
            "binary": tmp_path / "binary.json"}


FILE_COMMANDS = {
    "debates start --file": ("debates", "start", "--file", "{}"),
    "workflows run --inputs-json": ("workflows", "run", "w", "--inputs-json", "{}"),
    "workflows validate": ("workflows", "validate", "{}"),
    "prompts publish --file": ("prompts", "publish", "k.x", "--file", "{}"),
    "calendar import": ("calendar", "import", "{}", "-c", "Work"),
    "backup --passphrase-file": ("backup", "bk", "--passphrase-file", "{}"),
}
FILE_CASES = [(command, kind) for command in FILE_COMMANDS
              for kind in ("missing", "directory", "binary")
              # typer checks --passphrase-file exists and is a file; binary data is read as bytes
              if not (command == "backup --passphrase-file" and kind != "binary")
              and not (command == "calendar import" and kind == "binary")
              and not (command == "workflows validate" and kind == "directory")]


@pytest.mark.parametrize(("command", "kind"), FILE_CASES)
def test_a_file_that_cannot_be_read_is_one_line_naming_it(
    command: str, kind: str, bad_files: dict[str, Path], refused_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Read before the database is opened (nothing listens at refused_env's URL)."""
    path = str(bad_files[kind])
    argv = [path if a == "{}" else a for a in FILE_COMMANDS[command]]
    out = run_roost(*argv, env=refused_env, timeout=60, cwd=tmp_path)
    assert_clean_failure(out, mentions=path, code=1)
    reason = {"missing": "no such file", "directory": "is a directory",
              "binary": "not UTF-8 text"}[kind]
    assert reason in out.stderr, out.stderr


async def test_calendar_export_to_a_path_that_cannot_be_written_is_one_line(
    bad_files: dict[str, Path], database: Database, pg_server: Any, db_name: str,
    tmp_path: Path,
) -> None:
    await make_user(database, username="cal-user")
    env = _env(pg_server, db_name, tmp_path / "data")
    ics = tmp_path / "e.ics"
    ics.write_text("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//p//p//EN\r\nBEGIN:VEVENT\r\n"
                   "UID:e1@x\r\nDTSTART:20270101T090000Z\r\nDTEND:20270101T100000Z\r\n"
                   "SUMMARY:Meet\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    made = await asyncio.to_thread(run_roost, "calendar", "import", str(ics), "-c", "Work",
                                   "--user", "cal-user", env=env)
    assert made.returncode == 0, made.stderr
    for target, reason in ((bad_files["directory"], "is a directory"),
                           (tmp_path / "no" / "x.ics", "does not exist")):
        out = await asyncio.to_thread(run_roost, "calendar", "export", "-c", "Work", "-o",
                                      str(target), "--user", "cal-user", env=env)
        assert_clean_failure(out, mentions=str(target), code=1)
        assert reason in out.stderr


def test_a_backup_directory_that_cannot_be_created_is_one_line(
    refused_env: dict[str, str]
) -> None:
    out = run_roost("backup", "/proc/roost-newcomer/bk", env=refused_env, timeout=60)
    assert_clean_failure(out, mentions="/proc/roost-newcomer", code=1)


# --- messages that say what is wrong and what to do ------------------------------------------


@pytest.mark.parametrize(("argv", "mentions", "code"), [
    (("mcp", "add", "bad name!", "--command", "ls"), "name: String should match pattern", 1),
    (("mcp", "add", "s", "--url", "https://mcp.example.com/mcp", "--header",
      "Authorization: Bearer s3cret-token"), "write Authorization=VALUE", 1),
    (("mcp", "add", "s", "--command", "ls", "--env", "API_KEYs3cret-token"),
     "--env must be KEY=VALUE", 1),
    (("mcp", "add", "s", "--url", "https://mcp.example.com/mcp", "--header",
      "X-Key= s3cret-token"), "headers: Value error, the value of header 'X-Key'", 1),
    (("users", "create", "bob", "--email", "bob@example.com"), "--password-stdin", 2),
    (("settings", "get", "nokey"), "`roost settings ls`", 1),
    (("ingest", "ftp://example.com/file.txt"), "ftp:// URLs are not supported", 2),
])
def test_refusals_say_what_is_wrong_and_never_echo_a_secret(
    argv: tuple[str, ...], mentions: str, code: int, refused_env: dict[str, str]
) -> None:
    """Refused before the database is opened (nothing listens at refused_env's URL)."""
    out = run_roost(*argv, env=refused_env, timeout=60)
    assert_clean_failure(out, mentions=mentions, code=code)
    assert "s3cret" not in out.stderr + out.stdout
    assert "errors.pydantic.dev" not in out.stderr


async def test_ingest_reports_a_missing_path_once_in_words(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    await make_user(database, username="reader")
    out = await asyncio.to_thread(run_roost, "ingest", str(tmp_path / "nowhere.md"), "--user",
                                  "reader", env=_env(pg_server, db_name, tmp_path / "data"))
    assert out.returncode == 2, out.stderr  # a bad argument, as docs/knowledge.md says
    # Words, not lines: the message wraps where the terminal's width and the (varying)
    # length of the temporary path put it.
    assert " ".join(out.stderr.split()).count("does not exist") == 1, out.stderr
    assert not [line for line in out.stderr.splitlines() if line.startswith("{")], out.stderr


# --- tenancy: another user's ids are unknown ids -----------------------------------------------


async def test_another_users_persona_is_as_unknown_as_a_missing_one(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    await make_user(database, username="owner-a")
    await make_user(database, username="other-b")
    env = _env(pg_server, db_name, tmp_path / "data")
    made = await asyncio.to_thread(run_roost, "personas", "create", "Ops", "--user", "owner-a",
                                   env=env)
    assert made.returncode == 0, made.stderr
    persona_id = made.stdout.split("(")[1].split(")")[0]
    for argv in (("personas", "show", persona_id), ("personas", "rm", persona_id),
                 ("secrets", "ls", persona_id), ("agents", "create", "x2", "--persona",
                                                 persona_id)):
        theirs = await asyncio.to_thread(run_roost, *argv, "--user", "other-b", env=env)
        unknown = await asyncio.to_thread(run_roost, *[Z if a == persona_id else a
                                                       for a in argv], "--user", "other-b",
                                          env=env)
        assert_clean_failure(theirs, mentions="not found")
        assert theirs.stderr.replace(persona_id, Z) == unknown.stderr


# --- secrets typed at a terminal are not echoed --------------------------------------------------


async def test_a_secret_typed_at_a_terminal_is_not_echoed(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    await make_user(database, username="secret-owner")
    env = command_env(_env(pg_server, db_name, tmp_path / "data"))
    made = await asyncio.to_thread(run_roost, "personas", "create", "Vault", "--user",
                                   "secret-owner", env=env)
    assert made.returncode == 0, made.stderr
    secret = "TopSecretValue9-xyzzy"

    def typed() -> tuple[int, str]:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            os.execve(ROOST, [ROOST, "secrets", "set", "Vault", "api_token", "TOK", "--user",  # noqa: S606
                              "secret-owner"], env)
        out, answers, deadline = b"", [secret, secret], time.monotonic() + 90
        while time.monotonic() < deadline:
            if not readable(fd, 0.5):
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if answers and b":" in chunk:
                time.sleep(0.2)
                os.write(fd, answers.pop(0).encode() + b"\r")
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")

    code, shown = await asyncio.to_thread(typed)
    assert code == 0, shown
    assert secret not in shown


# --- roost serve ---------------------------------------------------------------------------------


async def test_serve_worker_runs_jobs_enqueued_by_another_process(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path
) -> None:
    """The worker inside `roost serve` claims every domain's job types, not only those
    its own process happened to import."""
    from roost.principal import OPERATOR
    from roost.tasks import service

    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d"), "ROOST_LLM_LOCAL_MODEL": "false",
           "ROOST_WORKER_SCHEDULES": "false", "ROOST_SERVE_WORKER": "true"}

    async def status_of(task_id: Any) -> str:
        async with database.transaction() as session:
            task = await service.get_task(session, OPERATOR, task_id)
            return str(getattr(task.status, "value", task.status))

    def serve_and_wait(task_id: Any, loop: asyncio.AbstractEventLoop) -> str:
        with roost_server(env):
            deadline = time.monotonic() + 20
            while True:
                state = asyncio.run_coroutine_threadsafe(status_of(task_id), loop).result()
                if state not in ("pending", "running") or time.monotonic() > deadline:
                    return state
                time.sleep(0.3)

    async with database.transaction() as session:
        task = await service.enqueue(session, "tasks.prune", {})
    state = await asyncio.to_thread(serve_and_wait, task.id, asyncio.get_running_loop())
    assert state == "completed", state


def test_serve_says_where_it_listens_where_data_lives_and_how_to_sign_in(
    tmp_path: Path, pg_server: PgTestServer, db_name: str
) -> None:
    data = tmp_path / "d"
    url = pg_server.url_for(db_name).set(drivername="postgresql", password="s3cret")
    with roost_server({"ROOST_DATABASE_URL": url.render_as_string(hide_password=False),
                       "ROOST_DATA_DIR": str(data), "ROOST_LLM_LOCAL_MODEL": "false"}) as server:
        pass
    told = [line for line in server.output.splitlines() if not line.startswith("{")]
    shown = "\n".join(told)
    assert f"is listening on {server.base_url}" in shown, server.output[-3000:]
    for expected in (f"{server.base_url}/console", f"{server.base_url}/docs", str(data),
                     str(data / "keys" / "admin_token"), db_name):
        assert expected in shown, shown
    assert "s3cret" not in server.output
    assert shown.count("is listening on") == 1


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_chat_system_prompt_with_a_placeholder_chat_does_not_fill_is_refused_at_start(
    command: str, refused_env: dict[str, str],
) -> None:
    """ROOST_CHAT_SYSTEM_PROMPT="Hello {{name}}": start-up only logged
    prompts.factory_refused and chat sent the raw text, braces and all, to the model; now
    the settings refuse it before any work, naming the one placeholder chat fills."""
    out = run_roost(command, env={**refused_env,
                                  "ROOST_CHAT_SYSTEM_PROMPT": "Hello {{ name }}, it is {{date}}."},
                    timeout=60)
    assert_clean_failure(out, mentions="invalid configuration: ROOST_CHAT_SYSTEM_PROMPT: ", code=2)
    assert "{{date}}" in out.stderr and "'name'" in out.stderr, out.stderr


def _refused_url() -> str:
    return f"postgresql://roost:s3cret@127.0.0.1:{free_port()}/roost"


def test_a_mixed_case_variable_that_is_used_is_not_called_ignored(tmp_path: Path) -> None:
    """ROOST_Data_Dir is used (settings are read whatever the case), so no warning calls it
    ignored (one said "ROOST_Data_Dir is not a Roost setting ...; it is ignored")."""
    data = tmp_path / "chosen"
    out = run_roost("doctor", env={"ROOST_DATABASE_URL": _refused_url(),
                                   "ROOST_Data_Dir": str(data)}, fresh=True)
    assert str(data) in out.stdout, out.stdout  # the setting is in effect...
    assert "it is ignored" not in out.stderr, out.stderr  # ...so it is not "ignored"


@pytest.mark.parametrize("name", ["roost_databse_url", "Roost_Databse_Url"])
def test_a_misspelt_variable_in_lower_or_mixed_case_is_warned_about(
        tmp_path: Path, name: str) -> None:
    """roost_database_url configures Roost as ROOST_DATABASE_URL does, so its typo
    roost_databse_url is named as ROOST_DATABSE_URL is (only upper-case names were)."""
    out = run_roost("doctor", env={"ROOST_DATABASE_URL": _refused_url(),
                                   "ROOST_DATA_DIR": str(tmp_path / "d"),
                                   name: "postgresql://x@127.0.0.1/x"}, fresh=True)
    assert name in out.stderr and "not a Roost setting" in out.stderr, out.stderr


def test_a_database_url_with_a_leading_space_is_not_a_traceback(tmp_path: Path) -> None:
    """A URL pasted with a space before it (ROOST_DATABASE_URL=" postgresql://...") is used
    as the URL: the check trimmed it, the engine did not (an ArgumentError traceback)."""
    out = run_roost("users", "list", env={"ROOST_DATABASE_URL": " " + _refused_url(),
                                          "ROOST_DATA_DIR": str(tmp_path / "d")})
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    assert len([line for line in out.stderr.splitlines() if line.strip()]) <= 2, out.stderr
