"""Message keys: reading stored text, the start-up check and ``roost keys rotate-messages``.

Every column that holds conversation text is Fernet ciphertext under the message keys
(``ROOST_MESSAGE_KEYS``: the first encrypts, all decrypt).  Rotating means: put the new
key first, keep the old ones after it, re-encrypt every row (this module), then drop the
old keys.

The rotation walks each table in primary-key order, one batch per transaction
(``SELECT ... FOR UPDATE``, re-encrypt, ``UPDATE``), so an interruption leaves every row
either under an old key or under the new one, both readable.  A checkpoint file in the
data directory records how far it got for the current key; running the command again
resumes there.  A row no configured key decrypts is never written: it is reported and
the command exits non-zero.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from roost.db.engine import Database
from roost.errors import Conflict, RoostError
from roost.security.crypto import DecryptionError, MessageCipher

log = structlog.get_logger(__name__)


class MessageKeysMismatch(RoostError):
    """Stored ciphertext does not open with the configured keys: an operator problem."""

    status, title, type_slug = 500, "Message keys do not match", "message-keys-mismatch"


def decrypt(cipher: MessageCipher, token: bytes) -> str:
    """Stored conversation text in clear; a key problem is a 500 that names the setting."""
    return decrypt_many(cipher, (token,))[0]


def decrypt_many(cipher: MessageCipher, tokens: Sequence[bytes]) -> list[str]:
    """:func:`decrypt` of each token, in one batch (``MessageCipher.decrypt_many``)."""
    try:
        return cipher.decrypt_many(tokens)
    except DecryptionError:
        log.error("chat.decrypt_failed")
        raise MessageKeysMismatch(
            "stored message content cannot be decrypted with the configured message keys; "
            "an operator must restore the missing key in ROOST_MESSAGE_KEYS"
        ) from None


# (table, encrypted columns).  Every table has a UUID primary key ``id``.
ENCRYPTED_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chat_messages", ("content", "tool_calls")),
    ("chat_history", ("message",)),
    ("chat_session_summaries", ("summary",)),
    ("llm_requests", ("prompt", "messages")),
    ("llm_responses", ("content",)),
)
CHECKPOINT_FILE = "rotate-messages.checkpoint.json"
LOCK_FILE = "rotate-messages.lock"


class MessageKeysError(RuntimeError):
    """The configured message keys cannot read what is stored: Roost must not start."""


async def verify_message_keys(db: Database, cipher: MessageCipher) -> None:
    """Decrypt the oldest and the newest stored row of each table the message keys
    encrypt (:data:`ENCRYPTED_COLUMNS`, the first column); refuse to start if one fails.

    A wrong key (or a lost key file, which makes Roost generate a new one) would otherwise
    surface as errors on every read, or worse, as a mix of old and new ciphertexts.  Every
    table, not only chat messages: a deployment that serves only ``/v1`` stores model
    calls and no messages.
    """
    sql = text(" UNION ALL ".join(
        f"(SELECT '{table}', id, {columns[0]} FROM {table} "  # noqa: S608 (fixed names)
        f"WHERE {columns[0]} IS NOT NULL ORDER BY id {order} LIMIT 1)"
        for table, columns in ENCRYPTED_COLUMNS for order in ("", "DESC")))
    try:
        async with db.transaction() as session:
            rows = (await session.execute(sql)).all()
    except DBAPIError as exc:  # no table yet (serve --no-migrate on an empty database)
        log.warning("chat.keys.check_skipped", error=type(exc.orig).__name__)
        return
    for row in rows:
        table, row_id, content = row[0], row[1], row[2]
        try:
            cipher.decrypt_bytes(bytes(content))
        except DecryptionError:
            raise MessageKeysError(
                f"ROOST_MESSAGE_KEYS cannot decrypt the data already stored ({table} row "
                f"{row_id}): the message key is wrong, or a key still in use was removed or "
                "its key file (DATA_DIR/keys/message_keys) was lost. Put the previous key back "
                "after the new one (ROOST_MESSAGE_KEYS=new,old) and run 'roost keys "
                "rotate-messages' before removing it."
            ) from None


def key_fingerprint(cipher_keys: tuple[str, ...]) -> str:
    """Names the current encryption key in the checkpoint without revealing it."""
    return hashlib.sha256(b"roost-message-key\x00" + cipher_keys[0].encode()).hexdigest()[:16]


@dataclass
class RotationReport:
    rows_seen: int = 0
    rows_rotated: int = 0
    batches: int = 0
    undecryptable: list[tuple[str, str]] = field(default_factory=list)  # (table, id)
    resumed_from: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return not self.undecryptable


def _is_table(value: object) -> bool:
    return any(value == table for table, _ in ENCRYPTED_COLUMNS)


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass
class _Checkpoint:
    path: Path | None
    fingerprint: str
    table: str | None = None
    last_id: str | None = None
    done_tables: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None, fingerprint: str) -> _Checkpoint:
        if path is None or not path.exists():
            return cls(path, fingerprint)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path, fingerprint)
        if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
            return cls(path, fingerprint)  # not ours, or a different rotation: start over
        table, last_id, done = data.get("table"), data.get("last_id"), data.get("done_tables", [])
        if not (_is_table(table) or table is None) or not (_is_uuid(last_id) or last_id is None) \
                or not isinstance(done, list) or not all(_is_table(t) for t in done):
            log.warning("chat.keys.checkpoint_ignored", path=str(path))  # hand-edited, damaged
            return cls(path, fingerprint)
        return cls(path, fingerprint, table, last_id, list(done))

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A name of its own (mkstemp: mode 0600), then renamed over the checkpoint.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"fingerprint": self.fingerprint, "table": self.table,
                           "last_id": self.last_id, "done_tables": self.done_tables}, handle)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class RotationBusy(Conflict):
    """Another rotation of this data directory is running."""


@contextlib.contextmanager
def _one_rotation(checkpoint: Path | None) -> Iterator[None]:
    """One rotation at a time per data directory (the checkpoint's): a lock file held
    with ``flock`` (released by the kernel if the process dies), else RotationBusy.  Two at
    once would share the work safely (rows are locked a batch at a time) but overwrite each
    other's checkpoint."""
    if checkpoint is None:
        yield
        return
    checkpoint.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = checkpoint.with_name(LOCK_FILE)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RotationBusy(f"another rotation of these keys is running (it holds {lock}): "
                               "let it finish, or stop it and run this again to resume") from None
        yield
    finally:
        os.close(fd)


async def count_encrypted_rows(db: Database) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with db.transaction() as session:
        for table, _ in ENCRYPTED_COLUMNS:
            # Table names come from the constant above, never from input.
            counts[table] = int((await session.execute(
                text(f"SELECT count(*) FROM {table}")  # noqa: S608
            )).scalar_one())
    return counts


def _rotate_value(cipher: MessageCipher, value: Any) -> bytes | None:
    """The value under the current key, or None when it already is (raises if unreadable)."""
    if value is None:
        return None
    raw = bytes(value)
    if not cipher.needs_rotation(raw):
        return None
    return cipher.rotate(raw)


async def rotate_messages(
    db: Database, cipher: MessageCipher, cipher_keys: tuple[str, ...], *,
    batch_size: int = 500, checkpoint: Path | None = None,
    on_batch: Callable[[str, int], None] | None = None,
    stop_after_batches: int | None = None,
) -> RotationReport:
    """Re-encrypt every encrypted column under the first message key.

    ``on_batch(table, rows)`` reports progress.  ``stop_after_batches`` ends early (as an
    interruption would), leaving the checkpoint for the next run.
    """
    with _one_rotation(checkpoint):
        return await _rotate(db, cipher, cipher_keys, batch_size=batch_size,
                             checkpoint=checkpoint, on_batch=on_batch,
                             stop_after_batches=stop_after_batches)


async def _rows_up_to(db: Database, table: str, last_id: uuid.UUID | None) -> int:
    """How many rows of ``table`` a resumed rotation passes over (all when ``last_id`` is
    None), for its progress."""
    async with db.transaction() as session:
        where = "WHERE id <= :last" if last_id is not None else ""
        return int((await session.execute(
            text(f"SELECT count(*) FROM {table} {where}"),  # noqa: S608
            {"last": last_id} if last_id is not None else {})).scalar_one())


async def _rotate(
    db: Database, cipher: MessageCipher, cipher_keys: tuple[str, ...], *, batch_size: int,
    checkpoint: Path | None, on_batch: Callable[[str, int], None] | None,
    stop_after_batches: int | None,
) -> RotationReport:
    state = _Checkpoint.load(checkpoint, key_fingerprint(cipher_keys))
    report = RotationReport()
    if state.table is not None or state.done_tables:
        report.resumed_from = {"table": state.table or "", "last_id": state.last_id or ""}
    for table, columns in ENCRYPTED_COLUMNS:
        if table in state.done_tables:
            if on_batch is not None:  # done by the run this one resumes: its bar full
                on_batch(table, await _rows_up_to(db, table, None))
            continue
        last_id = uuid.UUID(state.last_id) if state.table == table and state.last_id else None
        if last_id is not None and on_batch is not None:
            on_batch(table, await _rows_up_to(db, table, last_id))
        cols = ", ".join(columns)
        while True:
            if stop_after_batches is not None and report.batches >= stop_after_batches:
                return report
            async with db.transaction() as session:
                where = "WHERE id > :last " if last_id is not None else ""
                rows = (await session.execute(
                    text(f"SELECT id, {cols} FROM {table} {where}"  # noqa: S608
                         "ORDER BY id LIMIT :n FOR UPDATE"),
                    {"last": last_id, "n": batch_size} if last_id else {"n": batch_size},
                )).all()
                if not rows:
                    break
                updates: list[dict[str, Any]] = []
                for row in rows:
                    new: dict[str, Any] = {}
                    try:
                        for i, column in enumerate(columns, start=1):
                            rotated = _rotate_value(cipher, row[i])
                            if rotated is not None:
                                new[column] = rotated
                    except DecryptionError:
                        report.undecryptable.append((table, str(row[0])))
                        continue
                    if new:
                        updates.append({"id": row[0], **{c: new.get(c) for c in columns},
                                        **{f"set_{c}": c in new for c in columns}})
                if updates:
                    sets = ", ".join(f"{c} = CASE WHEN :set_{c} THEN :{c} ELSE {c} END"
                                     for c in columns)
                    await session.execute(
                        text(f"UPDATE {table} SET {sets} WHERE id = :id"),  # noqa: S608
                        updates,
                    )
                last_id = rows[-1][0]
            report.rows_seen += len(rows)
            report.rows_rotated += len(updates)
            report.batches += 1
            state.table, state.last_id = table, str(last_id)
            state.save()
            if on_batch is not None:
                on_batch(table, len(rows))
            if len(rows) < batch_size:
                break
        state.done_tables.append(table)
        state.table, state.last_id = None, None
        state.save()
    state.clear()  # every table walked: the next run starts a fresh pass
    return report
