"""``roost backup`` and ``roost restore`` as a user runs them, on real data dirs.

One source data dir (embedded PostgreSQL) per module holds a user, an encrypted chat
message, an ingested document and a persona's secret, written through the app.  The
backups are taken by the real ``roost`` command; restores go into new data dirs (and an
external database), and every table's row count and content are compared before and
after with checksums computed here, independently of the ones the manifest carries.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
from tests.knowledge.support import drain_jobs
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer, unique_db_name

from roost.agents.secrets import resolve_secret
from roost.app import create_app
from roost.config import Settings
from roost.db import backup
from roost.db.engine import Database, create_database
from roost.db.migrate import upgrade
from roost.keyfiles import load_keys
from roost.knowledge.config import KnowledgeConfig
from roost.security.crypto import SecretBox

MESSAGE = "The vault code is 4-8-15-16-23-42"
SECRET = "ghp_backup_restore_secret_value"
DOCUMENT = ("Penguins of the Antarctic coast huddle in winter to keep warm. " * 20).encode()
PASSPHRASE = "correct horse battery staple"
ENV = {"ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_JSON": "true"}

Snapshot = dict[str, tuple[int, str]]


def settings_for(data_dir: Path, **extra: object) -> Settings:
    return Settings(data_dir=data_dir, knowledge_embedding_provider="hash", log_json=True,
                    **extra)  # type: ignore[arg-type]


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**ENV, "ROOST_DATA_DIR": str(data_dir), **extra}


def dsn(db: Database) -> str:
    return db.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def table_snapshot(url: str) -> Snapshot:
    """Per table: row count and an md5 over its rows' text in sorted order (the oracle:
    not the manifest's algorithm)."""
    conn = await asyncpg.connect(url, server_settings={
        "TimeZone": "UTC", "DateStyle": "ISO, YMD", "extra_float_digits": "3"})
    try:
        tables = [r[0] for r in await conn.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
            "AND NOT c.relispartition AND n.nspname = 'public' ORDER BY 1")]
        out: Snapshot = {}
        for table in tables:
            row = await conn.fetchrow(
                f"SELECT count(*), md5(coalesce(string_agg(md5(t::text), ',' "
                f"ORDER BY md5(t::text)), '')) FROM {table} t")
            assert row is not None
            out[table] = (int(row[0]), str(row[1]))
        return out
    finally:
        await conn.close()


def key_files(data_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((data_dir / "keys").iterdir())}


@dataclass
class Source:
    data_dir: Path
    db: Database
    headers: dict[str, str]
    chat_id: str
    persona_id: uuid.UUID
    document_id: str
    before: Snapshot
    keys: dict[str, str]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="roost-test-backup-") as tmp:
        yield Path(tmp)


def _client(settings: Settings, db: Database) -> httpx.AsyncClient:
    app = create_app(settings, database=db, keys=load_keys(settings), configure_logs=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)),
                             base_url="http://roost.test")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def source(workdir: Path) -> AsyncIterator[Source]:
    """A data dir with real data, written through the app; its server stays up (attached
    by this process) while the module's commands back it up."""
    data_dir = workdir / "source"
    settings = settings_for(data_dir)
    db = await asyncio.to_thread(create_database, settings)
    try:
        await upgrade(db.engine)
        _, headers = await make_user(db, username="backup-user")
        async with _client(settings, db) as client:
            chat = await client.post("/api/v1/chat/sessions", json={"title": "vault"},
                                     headers=headers)
            assert chat.status_code == 201, chat.text
            chat_id = chat.json()["id"]
            sent = await client.post(f"/api/v1/chat/sessions/{chat_id}/messages",
                                     json={"content": MESSAGE, "reply": False}, headers=headers)
            assert sent.status_code == 201, sent.text
            persona = await client.post("/api/v1/personas", json={"name": "Desk"},
                                        headers=headers)
            assert persona.status_code == 201, persona.text
            persona_id = uuid.UUID(persona.json()["id"])
            secret = await client.put(
                f"/api/v1/personas/{persona_id}/secrets", headers=headers,
                json={"secret_type": "mcp_env", "key_name": "GITHUB_TOKEN", "value": SECRET})
            assert secret.status_code == 200, secret.text
            upload = await client.post(
                "/api/v1/knowledge/documents", headers=headers,
                files={"file": ("penguins.txt", DOCUMENT, "text/plain")})
            assert upload.status_code == 202, upload.text
            document_id = upload.json()["document"]["id"]
        assert await drain_jobs(db, KnowledgeConfig.from_settings(settings)) == 1
        before = await table_snapshot(dsn(db))
        # The message is stored encrypted: the plaintext is nowhere in the table.
        conn = await asyncpg.connect(dsn(db))
        try:
            raw = await conn.fetchval("SELECT string_agg(t::text, '') FROM chat_messages t")
        finally:
            await conn.close()
        assert MESSAGE not in raw
        assert before["public.chat_messages"][0] == 1
        assert before["public.document_chunks"][0] >= 1
        yield Source(data_dir, db, headers, chat_id, persona_id, document_id, before,
                     key_files(data_dir))
    finally:
        await db.dispose()
        if db.embedded is not None:
            await asyncio.to_thread(db.embedded.stop)


@pytest.fixture(scope="module")
def plain_backup(source: Source, workdir: Path) -> Path:
    path = workdir / "backups" / "plain"
    done = run_roost("backup", str(path), env=env_for(source.data_dir), timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"backup written to {path}" in done.stdout
    assert "unencrypted" in done.stderr  # the keys are in it: the user is told
    return path


@pytest.fixture(scope="module")
def encrypted_backup(source: Source, workdir: Path) -> Path:
    secret_file = workdir / "passphrase"
    secret_file.write_text(PASSPHRASE + "\n")
    path = workdir / "backups" / "encrypted"
    done = run_roost("backup", str(path), "--passphrase-file", str(secret_file),
                     env=env_for(source.data_dir), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "encrypted" in done.stdout
    return path


async def _restored_checks(source: Source, data_dir: Path, db: Database,
                           expected: Snapshot | None = None,
                           messages: tuple[str, ...] = (MESSAGE,)) -> None:
    """Same tables, rows and content; the restored keys decrypt messages and secrets."""
    assert await table_snapshot(dsn(db)) == (expected or source.before)
    assert key_files(data_dir) == source.keys
    for path in (data_dir / "keys").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    settings = settings_for(data_dir)
    async with _client(settings, db) as client:
        listed = await client.get(f"/api/v1/chat/sessions/{source.chat_id}/messages",
                                  headers=source.headers)
        assert listed.status_code == 200, listed.text
        assert sorted(m["content"] for m in listed.json()["items"]) == sorted(messages)
        document = await client.get(f"/api/v1/knowledge/documents/{source.document_id}",
                                    headers=source.headers)
        assert document.status_code == 200, document.text
        found = await client.post("/api/v1/knowledge/search", headers=source.headers,
                                  json={"query": "penguins huddle in winter", "mode": "text"})
        assert found.status_code == 200, found.text
        assert source.document_id in {r["document_id"] for r in found.json()["results"]}
    box = SecretBox.from_keys(load_keys(settings).secrets_key)
    assert await resolve_secret(db, box, source.persona_id, "mcp_env", "GITHUB_TOKEN") == SECRET


def test_manifest_describes_the_backup(source: Source, plain_backup: Path) -> None:
    manifest = json.loads((plain_backup / "manifest.json").read_text())
    assert manifest["format"] == backup.FORMAT and manifest["kind"] == "logical"
    assert manifest["server_version"].startswith("18")
    assert manifest["alembic_revisions"]
    assert set(manifest["files"]) == {"database.dump", "keys.json"}
    tables = {f"{t['schema']}.{t['name']}": t["rows"] for t in manifest["tables"]}
    assert tables == {name: rows for name, (rows, _) in source.before.items()}
    assert "roost_app" in manifest["roles"]
    assert (plain_backup / "keys.json").stat().st_mode & 0o777 == 0o600


async def test_backup_then_restore_into_an_empty_data_dir(
    source: Source, plain_backup: Path, workdir: Path,
) -> None:
    target = workdir / "restored"
    done = await asyncio.to_thread(run_roost, "restore", str(plain_backup),
                                   env=env_for(target), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout
    db = await asyncio.to_thread(create_database, settings_for(target))
    try:
        await _restored_checks(source, target, db)
    finally:
        await db.dispose()
        if db.embedded is not None:
            await asyncio.to_thread(db.embedded.stop)


async def test_encrypted_backup_into_an_external_database_and_force(
    source: Source, encrypted_backup: Path, workdir: Path, pg_server: PgTestServer,
) -> None:
    assert not (encrypted_backup / "database.dump").exists()
    dump = (encrypted_backup / "database.dump.enc").read_bytes()
    assert b"GITHUB_TOKEN" not in dump and b"penguins" not in dump
    name = unique_db_name("restore")
    await pg_server.create_database(name)
    data_dir = workdir / "external"
    env = env_for(data_dir, ROOST_DATABASE_URL=pg_server.libpq_url(name),
                  ROOST_BACKUP_PASSPHRASE=PASSPHRASE)
    try:
        done = await asyncio.to_thread(run_roost, "restore", str(encrypted_backup), env=env,
                                       timeout=300)
        assert done.returncode == 0, done.stderr
        db = create_database(settings_for(data_dir), url=pg_server.url_for(name))
        try:
            await _restored_checks(source, data_dir, db)
            # The target now holds data: refused without --force, nothing changed...
            async with db.transaction() as s:
                from sqlalchemy import text
                await s.execute(text("DELETE FROM chat_messages"))
            changed = await table_snapshot(dsn(db))
            external = settings_for(data_dir, database_url=pg_server.libpq_url(name))
            with pytest.raises(backup.TargetNotEmpty, match=r"has \d+ tables"):
                await backup.restore_backup(external, encrypted_backup, passphrase=PASSPHRASE)
            assert await table_snapshot(dsn(db)) == changed
            # ...and replaced with it.  A backup of the external database matches too.
            forced = await asyncio.to_thread(run_roost, "restore", "--force",
                                             str(encrypted_backup), env=env, timeout=300)
            assert forced.returncode == 0, forced.stderr
            assert await table_snapshot(dsn(db)) == source.before
            # The replaced database is kept aside, under a name the output gives.
            assert f"kept as '{name}_replaced_" in forced.stderr, forced.stderr
            second = workdir / "backups" / "of-external"
            taken = await asyncio.to_thread(
                run_roost, "backup", str(second),
                env={k: v for k, v in env.items() if k != "ROOST_BACKUP_PASSPHRASE"}, timeout=300)
            assert taken.returncode == 0, taken.stderr
            original = json.loads((encrypted_backup / "manifest.json").read_text())["tables"]
            copy = json.loads((second / "manifest.json").read_text())["tables"]
            assert copy == original
        finally:
            await db.dispose()
    finally:
        await pg_server.drop_database(name)
        admin = await pg_server.connect_admin()
        try:
            for row in await admin.fetch("SELECT datname FROM pg_database "
                                         "WHERE starts_with(datname, $1)", f"{name}_replaced_"):
                await admin.execute(f'DROP DATABASE "{row[0]}" WITH (FORCE)')
        finally:
            await admin.close()


def _nothing_written(target: Path) -> None:
    """No cluster created, no key written."""
    assert not (target / "pg").exists() and not (target / "keys").exists()


def _refused(backup_dir: Path, target: Path, expected: str, passphrase: str | None = None,
             ) -> None:
    """The service refuses (the CLI's exit code and message: test_truncated...)."""
    with pytest.raises(backup.BackupError, match=expected):
        asyncio.run(backup.restore_backup(settings_for(target), backup_dir,
                                          passphrase=passphrase))
    _nothing_written(target)


def test_truncated_backup_is_refused_by_the_command(plain_backup: Path, workdir: Path) -> None:
    broken = workdir / "broken-truncated"
    shutil.copytree(plain_backup, broken)
    dump = broken / "database.dump"
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) // 2])
    target = workdir / "t-truncated"
    done = run_roost("restore", str(broken), env=env_for(target), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "truncated" in done.stderr, done.stderr
    _nothing_written(target)


def test_flipped_byte_is_refused(plain_backup: Path, workdir: Path) -> None:
    broken = workdir / "broken-flipped"
    shutil.copytree(plain_backup, broken)
    dump = broken / "database.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 3] ^= 0x01
    dump.write_bytes(bytes(data))
    _refused(broken, workdir / "t-flipped", "does not match its checksum")


def test_missing_manifest_is_refused(plain_backup: Path, workdir: Path) -> None:
    broken = workdir / "broken-manifest"
    shutil.copytree(plain_backup, broken)
    (broken / "manifest.json").unlink()
    _refused(broken, workdir / "t-manifest", "no manifest.json")


def test_wrong_or_missing_passphrase_is_refused(encrypted_backup: Path, workdir: Path) -> None:
    _refused(encrypted_backup, workdir / "t-wrong", "wrong passphrase",
             passphrase="not the passphrase")
    _refused(encrypted_backup, workdir / "t-wrong", "this backup is encrypted")
    with pytest.raises(backup.BackupError, match="passphrase is empty"):
        asyncio.run(backup.create_backup(settings_for(workdir / "t-wrong"),
                                         workdir / "never", passphrase=""))
    assert not (workdir / "never").exists()


def test_encrypted_file_altered_with_a_matching_checksum_is_refused(
    encrypted_backup: Path, workdir: Path,
) -> None:
    """Someone who rewrites a file's sha256 in the manifest is still caught: by the
    manifest's MAC, and (MAC aside) by each chunk's authentication tag."""
    broken = workdir / "broken-forged"
    shutil.copytree(encrypted_backup, broken)
    stored = broken / "keys.json.enc"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0x01
    stored.write_bytes(bytes(data))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["keys.json.enc"]["sha256"] = backup._sha256(stored)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    _refused(broken, workdir / "t-forged", "altered", passphrase=PASSPHRASE)


def test_chunks_are_authenticated_in_order_and_to_the_end(tmp_path: Path) -> None:
    cipher = backup.Cipher.derive("pw", b"0" * 16, n=2**10)
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(backup.CHUNK * 2 + 100))
    sealed = tmp_path / "sealed"
    backup.encrypt_file(cipher, plain, sealed, "f")
    opened = tmp_path / "opened"
    backup.decrypt_file(cipher, sealed, opened, "f")
    assert opened.read_bytes() == plain.read_bytes()
    whole = sealed.read_bytes()
    header = len(whole) - (backup.CHUNK * 2 + 100) - 3 * 16
    # cut after the second chunk: the new last chunk was not sealed as the last one
    (tmp_path / "cut").write_bytes(whole[: header + 2 * (backup.CHUNK + 16)])
    with pytest.raises(backup.BackupError, match="corrupted or truncated"):
        backup.decrypt_file(cipher, tmp_path / "cut", opened, "f")
    # same bytes under another file name (associated data): refused
    with pytest.raises(backup.BackupError):
        backup.decrypt_file(cipher, sealed, opened, "g")


def test_non_empty_target_without_force_is_refused(
    source: Source, plain_backup: Path,
) -> None:
    before = asyncio.run(table_snapshot(dsn(source.db)))
    done = run_roost("restore", str(plain_backup), env=env_for(source.data_dir), timeout=300)
    assert done.returncode == 1
    assert "not empty" in done.stderr and "--force" in done.stderr
    assert key_files(source.data_dir) == source.keys
    assert asyncio.run(table_snapshot(dsn(source.db))) == before


async def test_physical_full_then_incremental_backup_and_restore(
    source: Source, workdir: Path,
) -> None:
    """pg_basebackup, then an encrypted incremental one on top of it after more writes;
    the restore combines the chain (pg_combinebackup) into a new embedded data dir."""
    full = workdir / "backups" / "physical-full"
    done = await asyncio.to_thread(run_roost, "backup", "--physical", str(full),
                                   env=env_for(source.data_dir), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "physical backup written" in done.stdout
    later = "A message written after the full backup"
    async with _client(settings_for(source.data_dir), source.db) as client:
        sent = await client.post(f"/api/v1/chat/sessions/{source.chat_id}/messages",
                                 json={"content": later, "reply": False},
                                 headers=source.headers)
        assert sent.status_code == 201, sent.text
    expected = await table_snapshot(dsn(source.db))
    increment = workdir / "backups" / "physical-increment"
    # The code versions' repositories (DATA_DIR/repos) are in a physical backup too.
    repo_objects = source.data_dir / "repos" / "owner" / "session.git" / "objects" / "ab"
    repo_objects.mkdir(parents=True)
    (repo_objects / "cdef").write_bytes(b"object")
    (repo_objects / "cdef").chmod(0o444)
    try:
        done = await asyncio.to_thread(
            run_roost, "backup", "--incremental-from", str(full), str(increment),
            env=env_for(source.data_dir, ROOST_BACKUP_PASSPHRASE=PASSPHRASE), timeout=300)
    finally:
        shutil.rmtree(source.data_dir / "repos")  # the other tests' backups have none
    assert done.returncode == 0, done.stderr
    # The full backup is plain: said now, and a restore asking for authentication (a
    # passphrase file) refuses the chain, naming it; the environment's passphrase warns.
    assert f"{full}, the backup this one builds on, is not encrypted" in " ".join(
        (done.stdout + done.stderr).split())
    pass_file = workdir / "chain-pass"
    pass_file.write_text(PASSPHRASE + "\n")
    refused = await asyncio.to_thread(
        run_roost, "restore", str(increment), "--passphrase-file", str(pass_file),
        env=env_for(workdir / "chain-refused"), timeout=300)
    assert refused.returncode == 1 and str(full) in refused.stderr, refused.stderr
    _nothing_written(workdir / "chain-refused")
    assert (increment / "repos.tar.enc").exists() and not (full / "repos.tar").exists()
    assert (increment / "base.tar.enc").exists() and not (increment / "base.tar").exists()
    # smaller than the full one: only changed blocks
    assert (increment / "base.tar.enc").stat().st_size < (full / "base.tar").stat().st_size

    with pytest.raises(backup.BackupError, match="embedded data dir"):
        await backup.restore_backup(
            settings_for(workdir / "phys-ext", database_url="postgresql://x@127.0.0.1/x"),
            increment, passphrase=PASSPHRASE)
    target = workdir / "physical-restored"
    done = await asyncio.to_thread(
        run_roost, "restore", str(increment),
        env=env_for(target, ROOST_BACKUP_PASSPHRASE=PASSPHRASE), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "is not encrypted: nothing authenticates its files" in " ".join(done.stderr.split())
    assert "changed during the backup" not in done.stderr
    restored = target / "repos" / "owner" / "session.git" / "objects" / "ab" / "cdef"
    assert restored.read_bytes() == b"object" and restored.stat().st_mode & 0o777 == 0o444
    db = await asyncio.to_thread(create_database, settings_for(target))
    try:
        await _restored_checks(source, target, db, expected, (MESSAGE, later))
    finally:
        await db.dispose()
        if db.embedded is not None:
            await asyncio.to_thread(db.embedded.stop)


async def test_backup_of_a_running_roost_is_one_consistent_snapshot(
    source: Source, workdir: Path, pg_server: PgTestServer,
) -> None:
    """Messages keep arriving while `roost backup` runs: the dump and the manifest's
    counts and checksums still describe one moment (the restore checks every table
    against the manifest and would refuse a mismatch)."""
    before = (await table_snapshot(dsn(source.db)))["public.chat_messages"][0]
    path = workdir / "backups" / "while-writing"
    backup_done = asyncio.Event()
    sent = 0

    async def keep_writing() -> None:
        nonlocal sent
        async with _client(settings_for(source.data_dir), source.db) as client:
            while not backup_done.is_set() or sent < 3:
                answer = await client.post(
                    f"/api/v1/chat/sessions/{source.chat_id}/messages",
                    json={"content": f"busy {sent}", "reply": False}, headers=source.headers)
                assert answer.status_code == 201, answer.text
                sent += 1

    async def take_backup() -> None:
        try:
            done = await asyncio.to_thread(run_roost, "backup", str(path),
                                           env=env_for(source.data_dir), timeout=300)
            assert done.returncode == 0, done.stderr
        finally:
            backup_done.set()

    await asyncio.gather(keep_writing(), take_backup())
    manifest = json.loads((path / "manifest.json").read_text())
    in_backup = next(t["rows"] for t in manifest["tables"] if t["name"] == "chat_messages")
    assert before <= in_backup <= before + sent

    name = unique_db_name("busy")
    await pg_server.create_database(name)
    try:
        data_dir = workdir / "busy-restored"
        result = await backup.restore_backup(
            settings_for(data_dir, database_url=pg_server.libpq_url(name)), path)
        assert result.rows == sum(t["rows"] for t in manifest["tables"])
        conn = await asyncpg.connect(pg_server.libpq_url(name))
        try:
            assert await conn.fetchval("SELECT count(*) FROM chat_messages") == in_backup
        finally:
            await conn.close()
    finally:
        await pg_server.drop_database(name)


# --------------------------------------------------------------------------- another owner


@pytest_asyncio.fixture(loop_scope="session")
async def owned(pg_server: PgTestServer) -> AsyncIterator[tuple[str, str, list[str]]]:
    """A source database owned by a login role of its own, an empty target database and
    that role's name (a list: a test may rename it)."""
    src, dst = unique_db_name("owned_src"), unique_db_name("owned_dst")
    role = [unique_db_name("owner")]
    for name in (src, dst):
        await pg_server.create_database(name)
    admin = await pg_server.connect_admin()
    try:
        await admin.execute(f"CREATE ROLE {role[0]} LOGIN SUPERUSER PASSWORD 'pw'")
        await admin.execute(f'ALTER DATABASE "{src}" OWNER TO {role[0]}')
    finally:
        await admin.close()
    try:
        yield src, dst, role
    finally:
        for name in (src, dst):
            await pg_server.drop_database(name)
        admin = await pg_server.connect_admin()
        try:
            await admin.execute(f"DROP OWNED BY {role[0]} CASCADE")
            await admin.execute(f"DROP ROLE {role[0]}")
        finally:
            await admin.close()


async def backup_migrated_by_owner(pg_server: PgTestServer, src: str, role: str,
                                   revision: str, out: Path) -> None:
    """Migrate ``src`` to ``revision`` as ``role`` and back it up (as ``role``)."""
    url = pg_server.url_for(src).set(username=role, password="pw")
    settings = settings_for(out.parent / "src", database_url=url.set(
        drivername="postgresql").render_as_string(hide_password=False))
    load_keys(settings)
    db = create_database(settings, url=url)
    try:
        await upgrade(db.engine, revision)
    finally:
        await db.dispose()
    await backup.create_backup(settings, out)


async def test_a_backup_restores_on_a_server_without_the_role_that_migrated_it(
    pg_server: PgTestServer, owned: tuple[str, str, list[str]], tmp_path: Path,
) -> None:
    """A backup of a database migrated by role A restores where no role A exists (a new
    machine, a managed database with another user). Before, the default privileges of
    migration 0200 were replayed FOR ROLE A and the whole restore failed."""
    src, dst, role = owned
    await backup_migrated_by_owner(pg_server, src, role[0], "heads", tmp_path / "b")
    admin = await pg_server.connect_admin()
    try:  # this server has no role of that name
        await admin.execute(f"ALTER ROLE {role[0]} RENAME TO {role[0]}_gone")
        role[0] += "_gone"
    finally:
        await admin.close()
    await backup.restore_backup(
        settings_for(tmp_path / "dst", database_url=pg_server.libpq_url(dst)), tmp_path / "b")
    conn = await asyncpg.connect(pg_server.libpq_url(dst))
    try:  # the default privileges are the restoring user's now
        owners = await conn.fetch("SELECT DISTINCT defaclrole::regrole::text FROM pg_default_acl")
        assert [r[0] for r in owners] == [await conn.fetchval("SELECT current_user")]
    finally:
        await conn.close()


async def test_tables_a_later_migration_creates_after_a_restore_are_granted_to_roost_app(
    pg_server: PgTestServer, owned: tuple[str, str, list[str]], tmp_path: Path,
) -> None:
    """A backup at 1130 of a database migrated by role A, restored by another user who
    then migrates it to head: the table 1140 creates is usable by roost_app, as on a
    database migrated from scratch. Before, the default grants stayed role A's, and
    group_invitations had none (requests failed with permission denied)."""
    src, dst, role = owned
    await backup_migrated_by_owner(pg_server, src, role[0], "1130", tmp_path / "b")
    settings = settings_for(tmp_path / "dst", database_url=pg_server.libpq_url(dst))
    await backup.restore_backup(settings, tmp_path / "b")
    db = create_database(settings, url=pg_server.url_for(dst))
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()
    conn = await asyncpg.connect(pg_server.libpq_url(dst))
    try:
        assert await conn.fetchval(
            "SELECT has_table_privilege('roost_app', 'group_invitations', 'SELECT')")
    finally:
        await conn.close()
