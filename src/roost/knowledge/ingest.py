"""Running an ingestion: sources -> bytes -> sections -> chunks -> vectors -> rows.

:func:`run_ingestion` is what the ``knowledge.ingest`` job (and ``roost ingest``) runs.
It is resumable and idempotent, because the queue runs a job again when its worker
dies mid-run:

* Each source (an upload, one file, one URL) is committed in **one transaction**: the
  document row (upserted on ``UNIQUE (user_id, path_hash)``), the replacement of all
  its chunks, and the run's counters.  A crash before the commit leaves nothing
  behind; a crash after it leaves the source finished.
* That transaction first locks the run row and checks whether the source is already
  done *for this run* (its document carries this run's id and the ingested content
  hash and is ready, or the run lists an error for it), so a resumed run (or a second
  worker) neither duplicates chunks nor counts a file twice.
* Parsing, chunking and embedding happen before that transaction, outside any
  transaction, off the event loop (threads for CPU work; the embedder's own threads or
  HTTP calls), so no database transaction waits on a model.

A source that cannot be ingested (unsupported type, corrupt PDF, no text, too large, refused
URL, unreadable file, a bug it sets off, a value the database refuses) becomes an entry
in the run's ``errors``; the run goes on.  A failure of the database itself is raised.  An
embedding backend that is down raises, so the queue retries the run later (finished
sources are skipped); on the last attempt the run is marked failed instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.db.errors import sqlstate
from roost.errors import LimitReached, NotFound, RoostError, Unprocessable
from roost.identity.common import is_admin_user
from roost.identity.models import User, UserGroupMembership
from roost.identity.tenancy import apply_principal
from roost.knowledge.bulk import insert_chunks
from roost.knowledge.chunking import Chunk, chunk_sections
from roost.knowledge.config import KnowledgeConfig, get_embedder
from roost.knowledge.embeddings import EmbedderUnavailable, EmbeddingError
from roost.knowledge.fetching import fetch_url
from roost.knowledge.index import ensure_model
from roost.knowledge.jobs import CURATE_TASK
from roost.knowledge.models import Document, DocumentChunk, DocumentUpload, IngestionRun
from roost.knowledge.parsing import NoTextFound, ParsedDocument, parse_document
from roost.knowledge.paths import (
    PathNotAllowed,
    iter_files,
    read_ingest_file,
    resolve_ingest_path,
)
from roost.knowledge.service import (
    check_document_limit,
    clean_filename,
    printable_name,
    sha256_hex,
    upload_identity,
)
from roost.process import cpu_bound
from roost.tasks.service import enqueue

log = structlog.get_logger("roost.knowledge.ingest")

FINAL_STATUSES = frozenset({"success", "partial", "failed"})
MAX_ERROR_CHARS = 1000
MAX_RUN_ERRORS = 10_000

#: ``progress(done, total, source, outcome)``; outcome is "ingested", "unchanged",
#: "skipped" (already done by this run) or "error".
Progress = Callable[[int, int, str, str], None]


@dataclass(frozen=True)
class RunPrincipal:
    """The run's owner, for row-level security inside the job's transactions."""

    user_id: uuid.UUID
    is_admin: bool = False
    group_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Source:
    kind: str  # "upload" | "file" | "web"
    identity: str  # hashed into documents.path_hash
    display: str  # shown in errors and progress
    name: str
    path: Path | None = None
    uri: str | None = None
    document_id: uuid.UUID | None = None

    @property
    def path_hash(self) -> str:
        # A file name the OS gave as bytes that are not UTF-8 holds surrogate escapes:
        # hashed as those very bytes (any other name as its UTF-8, as ever).
        return sha256_hex(self.identity.encode("utf-8", "surrogateescape"))


@dataclass
class Loaded:
    data: bytes
    filename: str
    mime: str | None
    uri: str | None = None


@dataclass
class Prepared:
    parsed: ParsedDocument
    chunks: list[Chunk]


class _Done(Exception):
    """The source was finished earlier by this run."""


async def _scoped(session: AsyncSession, cfg: KnowledgeConfig, user_id: uuid.UUID) -> None:
    await apply_principal(session, RunPrincipal(user_id), app_role=cfg.app_role)


def _error_entry(source: Source | None, exc: BaseException | str) -> dict[str, Any]:
    if isinstance(exc, RoostError):
        message, kind = exc.detail, exc.type_slug
    elif isinstance(exc, BaseException) and (isinstance(exc, SQLAlchemyError)
                                             or sqlstate(exc) is not None):
        # The owner reads ``errors``: a database error's text holds the whole statement
        # and its parameters (other rows' ids, a document's text); the log has it all.
        code = sqlstate(exc)
        message = (f"{type(exc).__name__}: a database error "
                   + ("refused this source" if source is not None else "stopped the ingestion")
                   + (f" (SQLSTATE class {code[:2]})" if code else "")
                   + "; the worker's log has the details")
        kind = "error"
    elif isinstance(exc, BaseException):
        message, kind = f"{type(exc).__name__}: {exc}", "error"
    else:
        message, kind = exc, "error"
    return {
        "path": source.display if source else None,
        "path_hash": source.path_hash if source else None,
        "error": message[:MAX_ERROR_CHARS],
        "type": kind,
    }


# --- the run ----------------------------------------------------------------------------


async def run_ingestion(
    database: Database,
    run_id: uuid.UUID,
    cfg: KnowledgeConfig,
    *,
    force: bool = False,
    confine: bool = True,
    document_id: uuid.UUID | None = None,
    final_attempt: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Ingest everything the run targets; returns the run's summary.

    ``confine=False`` skips the allowed-roots check (the operator's own CLI).
    """
    run = await _begin(database, run_id)
    if run is None:
        return {"skipped": "the ingestion run no longer exists"}
    if run.status in FINAL_STATUSES:
        return _summary(run)
    try:
        return await _ingest(database, cfg, run, force=force, confine=confine,
                             document_id=document_id, final_attempt=final_attempt,
                             progress=progress)
    except _RunGone:  # deleted meanwhile (with its owner): nothing left to write to
        return _gone(run)
    except Exception as exc:
        # A bug or an outage mid-run: retried while attempts remain (finished sources are
        # skipped then); on the last one the run ends failed, never left "running".
        if not final_attempt:
            raise
        log.exception("ingest_run_crashed", run_id=str(run.id))
        try:
            return await _fail_run(database, cfg, run, _error_entry(None, exc))
        except _RunGone:
            return _gone(run)


async def interrupt_run(database: Database, cfg: KnowledgeConfig, run_id: uuid.UUID,
                        why: str) -> None:
    """The process running ``run_id`` in the foreground (``roost ingest``) was stopped
    (Ctrl-C, SIGTERM): the run ends failed with ``why`` instead of staying "running"
    with nothing behind it.  Running the command again goes on from there (unchanged
    files are skipped)."""
    async with database.transaction() as s:
        run = await s.get(IngestionRun, run_id)
    if run is None or run.status in FINAL_STATUSES:
        return
    entry = _error_entry(None, why) | {"type": "interrupted"}
    with contextlib.suppress(_RunGone):
        await _fail_run(database, cfg, run, entry)


def _gone(run: IngestionRun) -> dict[str, Any]:
    log.info("ingest_run_gone", run_id=str(run.id))
    return {"run_id": str(run.id), "skipped": "the ingestion run was deleted while it ran"}


async def _ingest(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, *, force: bool,
    confine: bool, document_id: uuid.UUID | None, final_attempt: bool,
    progress: Progress | None,
) -> dict[str, Any]:
    spec = cfg.spec_for(run.embedding_model)
    try:
        await ensure_model(database.engine, spec.model, spec.dimensions, spec.provider,
                           pgbouncer=cfg.pgbouncer)
        sources, listing_errors, root = await _sources(run, cfg, confine=confine,
                                                       document_id=document_id)
    except RoostError as exc:
        return await _fail_run(database, cfg, run, _error_entry(None, exc))
    for source, failure in listing_errors:
        await _record_error(database, cfg, run, source, failure)
    total = len(sources)
    for done, source in enumerate(sources, start=1):
        try:
            outcome = await _ingest_source(database, cfg, run, source, force=force)
        except EmbedderUnavailable as exc:
            return await _fail_run(database, cfg, run, _error_entry(source, exc))
        except EmbeddingError as exc:
            if not final_attempt:
                raise  # the queue retries the run; finished sources are skipped then
            return await _fail_run(database, cfg, run, _error_entry(source, exc))
        if progress is not None:
            progress(done, total, source.display, outcome)
    if run.prune and root is not None and await asyncio.to_thread(root.is_dir):
        await _prune(database, cfg, run, root, sources, listing_errors)
    return _summary(await _finish(database, cfg, run))


async def _fail_run(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, entry: dict[str, Any]
) -> dict[str, Any]:
    """The run cannot go on (no embedder, a setting missing in this process...): the run
    and its unfinished documents end failed with the reason, which the summary carries
    as ``fatal`` (the job then fails its task, visibly)."""
    log.error("ingest_run_failed", run_id=str(run.id), error=entry["error"][:500])
    summary = _summary(await _finish(database, cfg, run, fatal=entry))
    summary["fatal"] = entry["error"]
    return summary


def _summary(run: IngestionRun) -> dict[str, Any]:
    summary = {
        "run_id": str(run.id), "status": run.status, "totals_files": run.totals_files,
        "totals_chunks": run.totals_chunks, "errors": len(run.errors or []),
    }
    if run.prune:
        summary["totals_pruned"] = run.totals_pruned
    return summary


async def _begin(database: Database, run_id: uuid.UUID) -> IngestionRun | None:
    async with database.transaction() as s:
        run = (await s.scalars(
            select(IngestionRun).where(IngestionRun.id == run_id).with_for_update()
        )).one_or_none()
        if run is None:
            return None
        if run.status not in FINAL_STATUSES:
            run.status = "running"
            run.started_at = run.started_at or utcnow()
        return run


async def _finish(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, *,
    fatal: dict[str, Any] | None = None,
) -> IngestionRun:
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        locked = await _lock_run(s, run)
        if locked.status in FINAL_STATUSES:
            return locked
        errors = list(locked.errors or [])
        if fatal is not None:
            errors.append(fatal)
            locked.errors = errors
            locked.status = "failed"  # the run could not go on
            # Its documents still waiting (an upload) end with the reason, not "processing".
            await s.execute(
                update(Document)
                .where(Document.ingestion_run_id == locked.id,
                       Document.status.in_(("pending", "processing")))
                .values(status="error", error_message=fatal["error"], updated_at=utcnow())
            )
        elif not errors:
            locked.status = "success"
        else:
            locked.status = "partial" if locked.totals_files > 0 else "failed"
        locked.finished_at = utcnow()
        await s.flush()
        await audit.record(
            s, "knowledge.ingestion_run.finished", user_id=locked.user_id,
            resource_type="ingestion_run", resource_id=locked.id,
            changes={"status": locked.status, "totals_files": locked.totals_files,
                     "totals_chunks": locked.totals_chunks, "errors": len(errors)},
            success=locked.status != "failed",
        )
        return locked


# --- sources ----------------------------------------------------------------------------


async def _sources(
    run: IngestionRun, cfg: KnowledgeConfig, *, confine: bool, document_id: uuid.UUID | None
) -> tuple[list[Source], list[tuple[Source, BaseException]], Path | None]:
    """The run's sources, the paths its walk could not read, and the file or directory
    it names (None for an upload or a URL)."""
    if run.source == "upload":
        if document_id is None:
            raise NotFound("the upload's document id is missing from the job")
        return [Source("upload", upload_identity(run.target), run.target, run.target,
                       document_id=document_id)], [], None
    if run.source == "web":
        return [Source("web", run.target, run.target, _name_from_url(run.target),
                       uri=run.target)], [], None
    def locate() -> Path:
        if confine:
            try:
                return resolve_ingest_path(run.target, cfg.ingest_roots)
            except PathNotAllowed as exc:
                # The API checked the target against the server's roots; the worker checks
                # again against its own: say which setting to fix (not the directories).
                where = ("file ingestion is disabled in the worker that ran this job: its "
                         "ROOST_KNOWLEDGE_INGEST_ROOTS is empty" if not cfg.ingest_roots
                         else f"{exc.detail} of the worker that ran this job")
                raise PathNotAllowed(
                    f"{where}; `roost worker` needs the same ROOST_KNOWLEDGE_INGEST_ROOTS "
                    "as `roost serve`"
                ) from None
        path = Path(os.path.realpath(run.target))
        if not path.exists():
            raise NotFound(f"the path {run.target!r} does not exist")
        return path

    root = await asyncio.to_thread(locate)
    failures: list[tuple[Source, BaseException]] = []

    def on_error(path: Path, exc: OSError) -> None:
        failures.append((_file_source(path), exc))

    def walk() -> list[Path]:
        if root.is_dir():
            return list(iter_files(root, recursive=run.recursive, on_error=on_error))
        return [root]

    files = await asyncio.to_thread(walk)
    return [_file_source(path) for path in files], failures, root


async def _prune(database: Database, cfg: KnowledgeConfig, run: IngestionRun, root: Path,
                 sources: list[Source], unreadable: list[tuple[Source, BaseException]]) -> None:
    """Delete the owner's documents of files under ``root`` (its direct children unless
    the run is recursive) that no longer exist.  A document of a file this run walked is
    kept whatever its ingestion did (the file is there), and so is one whose file still
    exists but was not walked (a hidden file ingested on its own) or lies under a
    directory the walk could not read.  After every source, so a run retried after a
    crash prunes again (nothing more) and adds to ``totals_pruned``."""
    walked = {source.path_hash for source in sources}
    prefix = _repaired(str(root)).rstrip("/") + "/"
    skipped = [_repaired(str(failed.path)).rstrip("/") + "/"
               for failed, _ in unreadable if failed.path is not None]
    pattern = (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
               + "%")
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        rows = (await s.execute(
            select(Document.id, Document.path, Document.path_hash).where(
                Document.user_id == run.user_id, Document.source == "file",
                Document.path.like(pattern, escape="\\")))).all()

    def gone(path: str) -> bool:
        rest = path[len(prefix):]
        if not rest or (not run.recursive and "/" in rest):
            return False
        if any(path.startswith(directory) for directory in skipped):
            return False
        if "\ufffd" in path:
            # A name that is not UTF-8 is stored repaired (U+FFFD for its bytes), which
            # names no file on disk: it cannot be proven gone, so it is kept.
            return False
        try:
            found = os.stat(path)  # a link to a file is the file; a dangling one is gone
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:  # there, but unreadable (permissions): not proven gone
            return False
        # A directory or a device in its place is no file: its document's text is no more.
        return not stat.S_ISREG(found.st_mode)

    candidates = [(row.id, row.path) for row in rows if row.path_hash not in walked]
    flags = await asyncio.to_thread(lambda: [gone(path) for _, path in candidates])
    doomed = [(doc_id, path) for (doc_id, path), out in zip(candidates, flags, strict=True)
              if out]
    if not doomed:
        return
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        locked = await _lock_run(s, run)
        deleted = (await s.execute(
            delete(Document).where(Document.id.in_([doc_id for doc_id, _ in doomed]),
                                   Document.user_id == run.user_id)
            .returning(Document.id))).scalars().all()
        locked.totals_pruned += len(deleted)
        run.totals_pruned = locked.totals_pruned
        gone_ids = set(deleted)
        await audit.record(
            s, "knowledge.documents.pruned", user_id=run.user_id,
            resource_type="ingestion_run", resource_id=run.id,
            changes={"deleted": len(deleted),
                     "paths": [path for doc_id, path in doomed if doc_id in gone_ids][:100]})
    log.info("ingest_pruned", run_id=str(run.id), deleted=len(deleted))


def _file_source(path: Path) -> Source:
    # Shown and stored (name, path, errors) with a name's bytes that are not UTF-8 as
    # U+FFFD: PostgreSQL text cannot hold the surrogate escapes Python reads them as.  The
    # document's name is cleaned as an upload's is (no line break, bidi override, escape;
    # composed); the path, and so the document's identity, stays the file's own.
    name = _repaired(path.name)
    try:
        name = printable_name(name)
    except Unprocessable:  # nothing printable in it: the name as it is, cut
        name = name[:255]
    return Source("file", str(path), _repaired(str(path)), name, path=path)


def _repaired(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _name_from_url(url: str) -> str:
    """The document's name: the path's last segment, percent-decoded ("My%20Notes.html"
    is "My Notes.html"), else the URL."""
    try:
        path = httpx.URL(url).path
    except (httpx.InvalidURL, ValueError):
        path = url.split("#", 1)[0].split("?", 1)[0]
    try:
        return clean_filename(path.rstrip("/"))
    except Unprocessable:  # nothing printable in it (a bare host, "%00"): the URL names it
        return url[:255]


async def _load(database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source) -> Loaded:
    if source.kind == "upload":
        async with database.transaction() as s:
            await _scoped(s, cfg, run.user_id)
            upload = await s.get(DocumentUpload, source.document_id)
            doc = await s.get(Document, source.document_id)
            if upload is None or _upload_superseded(run, source, doc):
                raise _Done()
            if doc is not None and doc.status == "pending":
                doc.status = "processing"
            return Loaded(upload.data, upload.filename, upload.content_type)
    if source.kind == "web":
        fetched = await fetch_url(
            source.identity, allow_private=cfg.allow_private_fetch,
            max_bytes=min(cfg.fetch_max_bytes, cfg.max_upload_bytes), timeout_s=cfg.fetch_timeout_s,
        )
        return Loaded(fetched.data, fetched.filename or source.name, fetched.content_type,
                      uri=fetched.final_url)
    assert source.path is not None
    data = await asyncio.to_thread(read_ingest_file, source.path, max_bytes=cfg.max_upload_bytes)
    return Loaded(data, _repaired(source.path.name), None)


def _prepare(loaded: Loaded, cfg: KnowledgeConfig) -> Prepared:
    parsed = parse_document(loaded.data, filename=loaded.filename, mime=loaded.mime,
                            time_limit_s=cfg.parse_time_limit_s)
    chunks = chunk_sections(parsed.sections, chunk_tokens=cfg.chunk_tokens,
                            overlap_tokens=cfg.overlap_tokens)
    if not chunks:
        # Not a silent "ready" with nothing to search: the source's error (its document
        # keeps the chunks of an earlier version), with the parser's reason when it has one.
        raise NoTextFound(parsed.warnings[0] if parsed.warnings else
                          "no text was found in the document (only markup, scripts or "
                          "front matter, or nothing at all)")
    return Prepared(parsed, chunks)


# --- one source -------------------------------------------------------------------------


# SQLSTATE classes a source's own values set off (22 data exception: a NUL, a number out
# of range; 23 integrity constraint; 54 program limit: a value too large to index): the
# transaction of that source rolled back, the connection is sound, the run goes on.
_SOURCE_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def _unsafe_to_go_on(exc: Exception) -> bool:
    """Whether ``exc`` is the database's (or the network's) failure rather than one
    source's: a lost connection, a transaction the server ended, a pool timeout."""
    if isinstance(exc, OSError):  # loading's own OSErrors were recorded per source already
        return True
    code = sqlstate(exc)
    if code is not None:
        return code[:2] not in _SOURCE_SQLSTATE_CLASSES or bool(
            getattr(exc, "connection_invalidated", False))
    return isinstance(exc, SQLAlchemyError)


async def _ingest_source(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source, *, force: bool
) -> str:
    """One source, whose failure is one entry in the run's ``errors``: a bug it sets off
    (an odd codec, a value the database refuses) too, logged with its traceback, and the
    run goes on with the next source.  The run's own failures (no embedder, an embedding
    server down, the database gone, the run deleted) are raised."""
    try:
        return await _ingest_one(database, cfg, run, source, force=force)
    except (_RunGone, EmbedderUnavailable, EmbeddingError):
        raise
    except Exception as exc:
        if _unsafe_to_go_on(exc):
            raise
        log.exception("ingest_source_crashed", run_id=str(run.id), source=source.display)
        await _record_error(database, cfg, run, source, exc)
        return "error"


async def _ingest_one(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source, *, force: bool
) -> str:
    spec = cfg.spec_for(run.embedding_model)
    try:
        if await _finished_before(database, cfg, run, source):
            return "skipped"
        await _precheck_document_limit(database, cfg, run, source)
        loaded = await _load(database, cfg, run, source)
        content_hash = sha256_hex(loaded.data)
        if not force and await _mark_unchanged(database, cfg, run, source, content_hash):
            return "unchanged"
        prepared = await cpu_bound(_prepare, loaded, cfg)
    except _Done:
        return "skipped"
    except (RoostError, OSError) as exc:
        await _record_error(database, cfg, run, source, exc)
        return "error"
    embedder = get_embedder(spec)
    vectors = await embedder.embed([c.text for c in prepared.chunks]) if prepared.chunks else []
    try:
        written = await _commit(database, cfg, run, source, loaded, content_hash, prepared,
                                vectors, spec.model, spec.dimensions)
    except LimitReached as exc:  # another run or upload took the plan's last document
        await _record_error(database, cfg, run, source, exc)
        return "error"
    return "ingested" if written else "skipped"


class _RunGone(Exception):
    """The run was deleted while it ran (with its owner): it ends, nothing to retry."""


# The owner's row first, as a deletion of the owner takes them (the user's row, then by
# cascade the run's): in the other order a transaction holding the run's row waited, at
# its document's foreign key, for the user's row the deletion held while the deletion
# waited for the run's, a deadlock PostgreSQL broke by aborting the deletion.  KEY SHARE
# blocks only a deletion (or a change of the id), never an update of the user.
_LOCK_OWNER = text("SELECT 1 FROM users WHERE id = :user_id FOR KEY SHARE")


async def _lock_run(s: AsyncSession, run: IngestionRun) -> IngestionRun:
    """The run's row, locked (its owner's row locked first); :class:`_RunGone` when the
    run or its owner was deleted meanwhile."""
    if (await s.execute(_LOCK_OWNER, {"user_id": run.user_id})).first() is None:
        raise _RunGone
    locked = (await s.scalars(
        select(IngestionRun).where(IngestionRun.id == run.id).with_for_update()
    )).one_or_none()
    if locked is None:
        raise _RunGone
    return locked


async def _existing(s: AsyncSession, user_id: uuid.UUID, source: Source, *,
                    lock: bool = False) -> Document | None:
    """The source's document; ``lock``: its row locked, so an owner's edit of its sharing
    (PATCH) is either seen here or made after this transaction, never overwritten."""
    if source.document_id is not None:
        return await s.get(Document, source.document_id, with_for_update=lock or None,
                           populate_existing=lock)
    query = select(Document).where(Document.user_id == user_id,
                                   Document.path_hash == source.path_hash)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await s.scalars(query)).one_or_none()


async def _precheck_document_limit(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source
) -> None:
    """A new document past the plan's max_documents is refused before it is fetched,
    read or embedded (403, one entry in the run's errors); :func:`_commit` checks again
    under the lock.  An upload's document was counted when it was stored."""
    if source.kind == "upload":
        return
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        await check_document_limit(s, run.user_id, source.path_hash)


def _done_for_run(run: IngestionRun, doc: Document | None, source: Source,
                  content_hash: str | None) -> bool:
    if any(e.get("path_hash") == source.path_hash for e in run.errors or []):
        return True
    if doc is None or doc.ingestion_run_id != run.id or doc.status != "ready":
        return False
    return content_hash is None or doc.content_hash == content_hash


async def _finished_before(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source
) -> bool:
    """Cheap check before loading: done by this run already (a resumed run)."""
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        fresh = await s.get(IngestionRun, run.id)
        if fresh is None:
            raise _RunGone
        return _done_for_run(fresh, await _existing(s, run.user_id, source), source, None)


def _upload_superseded(run: IngestionRun, source: Source, doc: Document | None) -> bool:
    """An upload's document deleted, or uploaded again (a later run owns it and its
    bytes, scope included) since this run was queued: this run has nothing to write."""
    return source.kind == "upload" and (doc is None or doc.ingestion_run_id != run.id)


async def _scope_of(s: AsyncSession, locked: IngestionRun,
                    doc: Document | None) -> IngestionRun | Document:
    """Where a document's scope (sharing, persona, project, tags, collection) comes from:
    the run's options, except for the document the run was queued with (an upload),
    which got them when it was stored and may have been edited since: the edit stands.
    ``locked`` is the run's row as locked in the writing transaction, never the copy
    read when the run began: a group, persona or project deleted since cleared it there
    (a foreign key's SET NULL, the persona trigger), and a stale id would either point
    at nothing or fail the insert on the foreign key.  Sharing with a group requires
    membership: an owner who has left the group (or was removed) since the run started
    shares nothing more with it; the run's group is cleared, as a deletion clears it."""
    if doc is not None and doc.ingestion_run_id == locked.id:
        return doc
    if locked.group_id is not None and not await _may_share(s, locked.user_id, locked.group_id):
        locked.group_id = None
    return locked


async def _may_share(s: AsyncSession, user_id: uuid.UUID, group_id: uuid.UUID) -> bool:
    """A member of the group, or an administrator (who shares with any group, as the API
    lets them).  The job's row-level-security scope is the owner's: they see their own
    membership and user rows."""
    member = await s.scalar(select(UserGroupMembership.user_id).where(
        UserGroupMembership.user_id == user_id, UserGroupMembership.group_id == group_id))
    if member is not None:
        return True
    owner = await s.get(User, user_id)
    return owner is not None and is_admin_user(owner)


def _scope_values(scope: IngestionRun | Document) -> dict[str, Any]:
    return {
        "group_id": scope.group_id, "is_private": scope.is_private,
        "persona_id": scope.persona_id, "project_id": scope.project_id,
        "tags": scope.tags or [], "collection": scope.collection,
    }


def _chunk_scope(user_id: uuid.UUID, scope: IngestionRun | Document) -> dict[str, Any]:
    return {
        "user_id": user_id, "group_id": None if scope.is_private else scope.group_id,
        "persona_id": scope.persona_id, "collection": scope.collection,
        "tags": scope.tags or [],
    }


async def _mark_unchanged(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source, content_hash: str
) -> bool:
    """Same bytes, same model, ready: count it for this run without re-embedding."""
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        locked = await _lock_run(s, run)
        doc = await _existing(s, run.user_id, source, lock=True)
        if _done_for_run(locked, doc, source, content_hash):
            return True
        if _upload_superseded(run, source, doc):
            raise _Done()
        # The same file uploaded again: the upload set its document pending for this run,
        # its chunks (of these very bytes) still there; it was parsed and embedded again.
        again = (source.kind == "upload" and doc is not None and doc.ingestion_run_id == run.id
                 and doc.status in ("pending", "processing"))
        if (doc is None or (doc.status != "ready" and not again)
                or doc.content_hash != content_hash
                or doc.embedding_model != run.embedding_model):
            return False
        if again and not await s.scalar(select(DocumentChunk.id).where(
                DocumentChunk.document_id == doc.id).limit(1)):
            return False
        doc.status, doc.error_message = "ready", None
        scope = await _scope_of(s, locked, doc)
        for key, value in _scope_values(scope).items():
            setattr(doc, key, value)
        doc.ingestion_run_id = run.id
        doc.last_ingested_at = utcnow()
        doc.updated_at = utcnow()
        await s.execute(update(DocumentChunk).where(DocumentChunk.document_id == doc.id)
                        .values(**_chunk_scope(run.user_id, scope)))
        if source.kind == "upload":
            await s.execute(delete(DocumentUpload).where(DocumentUpload.document_id == doc.id))
        locked.totals_files += 1
        await s.flush()
        await audit.record(
            s, "knowledge.document.reingested", user_id=run.user_id, resource_type="document",
            resource_id=doc.id, changes={"unchanged": True},
            metadata={"ingestion_run_id": str(run.id)},
        )
        return True


async def _commit(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source, loaded: Loaded,
    content_hash: str, prepared: Prepared, vectors: list[list[float]], model: str, dims: int,
) -> bool:
    """The one transaction per source: document, all its chunks, the run's counters."""
    chunks = prepared.chunks
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        locked = await _lock_run(s, run)
        doc = await _existing(s, run.user_id, source, lock=True)
        if _done_for_run(locked, doc, source, content_hash) or _upload_superseded(run, source, doc):
            return False
        stamp = utcnow()
        scope = await _scope_of(s, locked, doc)
        values: dict[str, Any] = {
            **_scope_values(scope),
            "mime": prepared.parsed.mime, "bytes_size": len(loaded.data), "source": source.kind,
            "content_hash": content_hash, "status": "ready", "error_message": None,
            "chunk_count": len(chunks), "embedding_model": model, "ingestion_run_id": run.id,
            "last_ingested_at": stamp, "updated_at": stamp,
        }
        if source.kind == "file":
            values["path"] = source.display  # its name made valid UTF-8 (_file_source)
        if source.kind == "web":
            values["uri"] = source.uri
        created = doc is None
        if doc is None:
            # The plan's max_documents, counted under its lock (parallel runs, uploads).
            await check_document_limit(s, run.user_id, source.path_hash)
            stmt = pg_insert(Document).values(
                id=uuid7(), user_id=run.user_id, path_hash=source.path_hash, name=source.name,
                **values,
            ).on_conflict_do_update(index_elements=["user_id", "path_hash"], set_=values)
            doc_id = (await s.execute(stmt.returning(Document.id))).scalar_one()
        else:
            doc_id = doc.id
            await s.execute(update(Document).where(Document.id == doc_id).values(**values))
        # Replace every chunk (curated summaries too: their sources are gone).
        await s.execute(delete(DocumentChunk).where(DocumentChunk.document_id == doc_id))
        if chunks:
            chunk_scope = _chunk_scope(run.user_id, scope)
            rows = [
                {
                    "id": uuid7(), "document_id": doc_id, **chunk_scope, "chunk_index": c.index,
                    "content": c.text, "token_count": c.token_count, "embedding": vector,
                    "embedding_model": model, "embedding_dim": dims, "is_curated": False,
                    "chunk_metadata": _chunk_metadata(c, prepared.parsed),
                }
                for c, vector in zip(chunks, vectors, strict=True)
            ]
            await insert_chunks(s, rows)
        if source.kind == "upload":
            await s.execute(delete(DocumentUpload).where(DocumentUpload.document_id == doc_id))
        locked.totals_files += 1
        locked.totals_chunks += len(chunks)
        if cfg.curation_enabled and len(chunks) >= 2:
            await enqueue(s, CURATE_TASK, {"document_id": str(doc_id), "user_id": str(run.user_id)},
                          idempotency_key=f"{CURATE_TASK}:{doc_id}:{content_hash}:{run.id}")
        await s.flush()
        await audit.record(
            s, "knowledge.document.ingested", user_id=run.user_id, resource_type="document",
            resource_id=doc_id,
            changes={"created": created, "chunks": len(chunks), "bytes": len(loaded.data),
                     "mime": prepared.parsed.mime, "embedding_model": model},
            metadata={"ingestion_run_id": str(run.id),
                      "warnings": prepared.parsed.warnings[:10]} if prepared.parsed.warnings
            else {"ingestion_run_id": str(run.id)},
        )
        return True


def _chunk_metadata(chunk: Chunk, parsed: ParsedDocument) -> dict[str, Any]:
    meta: dict[str, Any] = {"char_start": chunk.char_start, "char_end": chunk.char_end}
    if chunk.page is not None:
        meta["page"] = chunk.page
    if chunk.heading is not None:
        meta["section"] = chunk.heading
    if parsed.title:
        meta["title"] = parsed.title
    return meta


async def _record_error(
    database: Database, cfg: KnowledgeConfig, run: IngestionRun, source: Source, exc: BaseException
) -> None:
    entry = _error_entry(source, exc)
    async with database.transaction() as s:
        await _scoped(s, cfg, run.user_id)
        locked = await _lock_run(s, run)
        if _done_for_run(locked, None, source, None):
            return
        errors = list(locked.errors or [])
        if len(errors) < MAX_RUN_ERRORS:
            errors.append(entry)
        locked.errors = errors
        doc = await _existing(s, run.user_id, source)
        if _upload_superseded(run, source, doc):
            doc = None  # a later upload's (or gone): its own run reports on it
        if doc is not None:
            # The chunks of an earlier successful ingestion stay searchable.
            doc.status = "error"
            doc.error_message = entry["error"]
            doc.ingestion_run_id = run.id
            doc.updated_at = utcnow()
            if source.kind == "upload":
                await s.execute(delete(DocumentUpload).where(DocumentUpload.document_id == doc.id))
        await s.flush()
        log.info("ingest_source_failed", run_id=str(run.id), source=source.display,
                 error=entry["error"][:200])
        await audit.record(
            s, "knowledge.document.ingest_failed", user_id=run.user_id,
            resource_type="document", resource_id=doc.id if doc else None,
            changes={"path": entry["path"], "type": entry["type"]},
            metadata={"ingestion_run_id": str(run.id)},
            success=False, error_message=entry["error"],
        )


__all__ = ["Progress", "RunPrincipal", "Source", "run_ingestion"]
