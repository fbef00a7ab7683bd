"""Attachments: mail attachments and run artifacts, their bytes stored once per content.

The bytes live under ``DATA_DIR/attachments/<aa>/<sha256>`` (``aa``: the hash's first two
hex digits, so no directory grows huge); a row (``attachments``) says whose they are,
their sanitized name and type.  Two mails carrying the same file share one blob.  The
name a sender chose is never part of a path: ``../../etc/passwd`` is only a label.

A blob is written before the transaction that records its row commits; a failed
transaction leaves an unreferenced blob, harmless (the next identical file reuses it).
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import re
import tempfile
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import Attachment, Run
from roost.audit.service import record
from roost.errors import NotFound, PayloadTooLarge
from roost.principal import Principal

BLOB_DIR: Final = "attachments"
MAX_NAME_CHARS: Final = 255
DEFAULT_MIME: Final = "application/octet-stream"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
# A charset name as IANA registers them (at most 40 characters): a token, never a
# quote, a ";" or a line break that would end up in the download's Content-Type.
_CHARSET = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,39}$")
# The column that holds a content type.
MAX_MIME_CHARS: Final = 255
# Characters a name keeps; anything else (separators, quotes, controls) becomes "_",
# except combining marks (category M, kept by _unsafe_to_underscore): \w leaves out the
# vowel signs of Devanagari, the harakat of Arabic, parts of the letters they follow.
_UNSAFE = re.compile(r"[^\w .()+,=@\[\]{}~!#&'-]")


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    file_path: str  # relative to the data directory


_LEADING = re.compile(r"^[\s.]+")


def sanitize_filename(name: str | None, mime_type: str | None = None) -> str:
    """A display name safe in a header and on any file system: the last path component,
    no control characters, separators or quotes, no leading dots, at most 255 chars
    (the extension kept).  Empty: ``attachment`` plus an extension for the type."""
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[/\\]", text)[-1]  # a path's last component, whichever separator
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    # Dots and spaces interleaved (". .htaccess"): all of them, not one strip of each.
    text = _LEADING.sub("", _UNSAFE.sub(_unsafe_to_underscore, text)).strip()
    if not text or set(text) <= {"_", " "}:
        bare_type = (mime_type or "").split(";", 1)[0]  # without its charset
        extension = mimetypes.guess_extension(bare_type) or ""
        return f"attachment{extension}"
    if len(text) > MAX_NAME_CHARS:
        _stem, dot, extension = text.rpartition(".")
        keep = extension if dot and 0 < len(extension) <= 16 else ""
        text = text[: MAX_NAME_CHARS - len(keep) - 1] + "." + keep if keep \
            else text[:MAX_NAME_CHARS]
    return text


def _unsafe_to_underscore(found: re.Match[str]) -> str:
    char = found.group()
    return char if unicodedata.category(char)[0] == "M" else "_"


def clean_mime(mime_type: str | None, charset: str | None = None) -> str:
    """A well-formed ``type/subtype`` (lower case), else ``application/octet-stream``;
    with ``; charset=<name>`` when the sender declared a well-formed one, so the bytes
    are served as what they are (an ISO-8859-1 text is not labelled UTF-8)."""
    value = (mime_type or "").strip().lower()
    if not _MIME.fullmatch(value):
        return DEFAULT_MIME
    name = (charset or "").strip().lower()
    with_charset = f"{value}; charset={name}"
    return with_charset if _CHARSET.fullmatch(name) and len(with_charset) <= MAX_MIME_CHARS \
        else value


def blob_path(data_dir: Path, sha256: str) -> Path:
    if not _SHA256.fullmatch(sha256):  # fullmatch: $ also matches before a final newline
        raise ValueError("not a sha256 hex digest")
    return data_dir / BLOB_DIR / sha256[:2] / sha256


def _write(data_dir: Path, data: bytes) -> StoredBlob:
    digest = hashlib.sha256(data).hexdigest()
    target = blob_path(data_dir, digest)
    relative = target.relative_to(data_dir).as_posix()
    if target.is_file() and target.stat().st_size == len(data):
        return StoredBlob(digest, len(data), relative)  # content-addressed: already there
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written aside and renamed: a reader never sees half a file, concurrent writers of
    # the same content both end with the same complete file.
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return StoredBlob(digest, len(data), relative)


async def store_blob(data_dir: Path, data: bytes, *, max_bytes: int | None = None) -> StoredBlob:
    """Write ``data`` once under its hash (in a thread: hashing and fsync are blocking)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit is {max_bytes}")
    return await asyncio.to_thread(_write, data_dir, data)


def open_path(data_dir: Path, attachment: Attachment) -> Path:
    """The blob of a row; it must be the content-addressed file its hash names."""
    path = blob_path(data_dir, attachment.sha256)
    if attachment.file_path != path.relative_to(data_dir).as_posix() or not path.is_file():
        raise NotFound(f"the content of attachment {attachment.id} is missing")
    return path


async def get_attachment(session: AsyncSession, actor: Principal,
                         attachment_id: uuid.UUID) -> Attachment:
    """An attachment the actor may read (row-level security: its owner, the persona's
    members), else 404."""
    attachment = await session.get(Attachment, attachment_id)
    if attachment is None:
        raise NotFound(f"attachment {attachment_id} does not exist")
    return attachment


async def list_for_email(session: AsyncSession, email_id: uuid.UUID) -> list[Attachment]:
    return list((await session.scalars(
        select(Attachment).where(Attachment.email_id == email_id)
        .order_by(Attachment.created_at, Attachment.id))).all())


async def add_run_artifact(
    session: AsyncSession, actor: Principal, data_dir: Path, run_id: uuid.UUID, *,
    name: str, data: bytes, mime_type: str | None = None, max_bytes: int | None = None,
) -> Attachment:
    """A file a run produced, kept as an attachment of the run (visible to whoever sees
    the run), in the caller's transaction."""
    run = await session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    mime = clean_mime(mime_type)
    blob = await store_blob(data_dir, data, max_bytes=max_bytes)
    attachment = Attachment(run_id=run.id, persona_id=run.persona_id, user_id=run.user_id,
                            name=sanitize_filename(name, mime), file_path=blob.file_path,
                            file_size=blob.size, mime_type=mime, sha256=blob.sha256)
    session.add(attachment)
    await session.flush()
    await record(session, "agent.artifact.create", user_id=actor.user_id or run.user_id,
                 resource_type="attachment", resource_id=attachment.id, trace_id=run.trace_id,
                 metadata={"run_id": str(run.id), "sha256": blob.sha256, "size": blob.size})
    return attachment
