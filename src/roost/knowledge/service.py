"""Documents and ingestion runs for a principal: upload, list, get, update, delete, start.

Who sees what: a document is visible to its owner, to administrators, and, when it has
a ``group_id`` and is not ``is_private``, to that group's members.  Only the owner (or an
administrator) changes or deletes it.  Another user's document answers 404, never 403,
so ids cannot be probed.  Row-level security (migration 0400) enforces the same rules a
second time.  The work itself (parsing, chunking, embedding) happens in
:mod:`roost.knowledge.ingest`, run by the task queue.
"""

from __future__ import annotations

import hashlib
import ipaddress
import unicodedata
import uuid
from pathlib import PurePosixPath
from typing import Any

import httpx
from sqlalchemy import Select, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from roost.audit import service as audit
from roost.billing import credits, limits
from roost.db.base import utcnow, uuid7
from roost.db.errors import flush_unique
from roost.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from roost.identity.common import require_user
from roost.identity.models import Group
from roost.inputs import is_blank
from roost.knowledge.config import KnowledgeConfig, check_embedder
from roost.knowledge.fetching import (
    FetchInvalidURL,
    FetchRefused,
    address_refusal,
    browser_host_form,
    check_port,
)
from roost.knowledge.jobs import INGEST_TASK
from roost.knowledge.models import Document, DocumentChunk, DocumentUpload, IngestionRun
from roost.knowledge.paths import resolve_ingest_path
from roost.knowledge.schemas import (
    DocumentUpdate,
    IngestionRunCreate,
    check_collection,
    collection_filter,
    trimmed,
)
from roost.pagination import (
    DEFAULT_LIMIT,
    cursor_uuid,
    encode_cursor,
    newest_first,
    page_of,
    where_equal,
)
from roost.principal import Principal
from roost.tasks.service import enqueue
from roost.workspace.service import require_project

MAX_NAME_CHARS = 255
# A longer suffix is not an extension: a name over MAX_NAME_CHARS is cut at its end.
MAX_SUFFIX_CHARS = 16
MAX_CONTENT_TYPE_CHARS = 255  # document_uploads.content_type
MAX_MIME_CHARS = 128  # documents.mime


def sha256_hex(value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


def upload_identity(filename: str) -> str:
    return f"upload:{filename}"


async def check_group(session: AsyncSession, actor: Principal, group_id: uuid.UUID | None) -> None:
    """A member shares with their own groups (403 otherwise); an administrator with any
    group that exists (404 naming the field, not the foreign key's 409)."""
    if group_id is None:
        return
    if actor.is_admin:
        if await session.get(Group, group_id) is None:
            raise NotFound(f"group {group_id} does not exist", extra={"field": "group_id"})
    elif group_id not in actor.group_ids:
        raise Forbidden("you can only share documents with a group you are a member of")


async def _check_persona(session: AsyncSession, actor: Principal,
                         persona_id: uuid.UUID | None) -> None:
    """A document names a persona only its uploader is a member of (the personas domain
    sits above this one: its SQL function ``roost_persona_role``, migration 0600, answers
    the caller's role, NULL for none); 422 otherwise, as for any other tenant's id."""
    if persona_id is None:
        return
    if actor.is_admin:
        # An administrator names any persona that exists (its owner: the same domain's
        # ``roost_persona_owner``, NULL for none).
        owner = await session.scalar(text("SELECT roost_persona_owner(:p)"), {"p": persona_id})
        if owner is None:
            raise Unprocessable(f"persona_id: there is no persona with the id {persona_id}",
                                extra={"field": "persona_id"})
        return
    role = await session.scalar(text("SELECT roost_persona_role(:p)"), {"p": persona_id})
    if role is None:
        raise Unprocessable(f"persona_id: you are not a member of a persona with the id "
                            f"{persona_id}", extra={"field": "persona_id"})


def visible_to(actor: Principal) -> Any:
    """SQL condition: documents ``actor`` may read: an administrator reads (and so may
    change or delete, :func:`_owned_document`) every one, signed in as a user or not;
    search keeps its own, narrower scope (:func:`roost.knowledge.search.build_filters`)."""
    if actor.is_admin:
        return Document.id.is_not(None)
    if actor.user_id is None:
        return Document.id.is_(None)
    shared = Document.group_id.in_(list(actor.group_ids)) & ~Document.is_private
    return or_(Document.user_id == actor.user_id, shared) if actor.group_ids else (
        Document.user_id == actor.user_id
    )


def clean_filename(filename: str | None,
                   problem: str = "the uploaded file needs a file name") -> str:
    """A document's name, uploaded or given by a rename: the last path segment, printable
    characters only, trimmed; 422 with ``problem`` when nothing is left.  A name over
    :data:`MAX_NAME_CHARS` is shortened before its extension, which tells its type
    (``.md``) and stays."""
    return printable_name((filename or "").replace("\\", "/").rsplit("/", 1)[-1], problem)


def printable_name(name: str, problem: str = "the document needs a name") -> str:
    """``name`` as a document is named: printable characters only (no line break, bidi
    override, zero-width or escape), composed, trimmed, shortened before its extension;
    422 with ``problem`` when nothing is left."""
    # Composed (NFC): a name typed decomposed (macOS file names) is the same document.
    name = unicodedata.normalize("NFC", "".join(ch for ch in name if ch.isprintable())).strip()
    if is_blank(name):  # Hangul fillers are printable letters that show nothing
        raise Unprocessable(problem)
    if len(name) <= MAX_NAME_CHARS:
        return name
    suffix = PurePosixPath(name).suffix
    if len(suffix) > MAX_SUFFIX_CHARS:
        suffix = ""
    return name[:MAX_NAME_CHARS - len(suffix)].rstrip() + suffix


# --- documents --------------------------------------------------------------------------


async def check_document_limit(session: AsyncSession, user_id: uuid.UUID,
                               path_hash: str) -> None:
    """The plan's max_documents (403 naming it) for a metered user, before an upload or
    an ingestion writes the document keyed ``path_hash``: one already stored under that
    key is replaced, so it does not count."""
    payer = await credits.payer_for(session, user_id)
    if payer is None or payer.limits.get("max_documents") is None:
        return
    await limits.lock_count(session, payer, "max_documents")
    if await session.scalar(select(Document.id).where(Document.user_id == user_id,
                                                      Document.path_hash == path_hash)):
        return
    await limits.check_count(session, user_id, "max_documents",
                             await limits.owned_count(session, payer, "documents"),
                             payer=payer)


async def create_upload(
    session: AsyncSession,
    actor: Principal,
    cfg: KnowledgeConfig,
    *,
    filename: str | None,
    content_type: str | None,
    data: bytes,
    collection: str | None = None,
    tags: list[str] | None = None,
    group_id: uuid.UUID | None = None,
    is_private: bool = False,
    persona_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
    description: str | None = None,
) -> tuple[Document, IngestionRun]:
    """Store an upload and queue its ingestion (one transaction: both or neither).

    Uploading a file with the same name again updates that document: its chunks are
    replaced when the new ingestion finishes.
    """
    user_id = require_user(actor, "documents")
    await check_group(session, actor, group_id)
    await require_project(session, actor, project_id)  # another user's: 404
    await _check_persona(session, actor, persona_id)
    if len(data) > cfg.max_upload_bytes:
        raise PayloadTooLarge(
            f"the upload is {len(data)} bytes; the limit is {cfg.max_upload_bytes} bytes"
        )
    if not data:
        raise Unprocessable("the uploaded file is empty")
    for label, value in (("description", description), ("the file's Content-Type", content_type)):
        if value is not None and "\x00" in value:
            raise Unprocessable(f"{label} must not contain NUL characters")
    try:
        collection = check_collection(collection)
    except ValueError as exc:
        raise Unprocessable(f"collection {exc}", extra={"field": "collection"}) from None
    # Kept as the columns hold them (a header with long parameters is still a file).
    content_type = (content_type or None) and content_type[:MAX_CONTENT_TYPE_CHARS]
    name = clean_filename(filename)
    check_embedder(cfg.embedder)  # 409 now rather than a document stuck "processing"
    # The key create_upload upserts on: a re-upload of that name is not one more.
    await check_document_limit(session, user_id, sha256_hex(upload_identity(name)))
    model = cfg.embedder.model
    run = IngestionRun(
        user_id=user_id, target=name, source="upload", tags=tags or [], collection=collection,
        group_id=group_id, is_private=is_private, persona_id=persona_id, project_id=project_id,
        embedding_model=model, status="pending",
    )
    session.add(run)
    await session.flush()
    values: dict[str, Any] = {
        "user_id": user_id, "group_id": group_id, "is_private": is_private,
        "persona_id": persona_id, "project_id": project_id, "name": name,
        "description": description, "mime": content_type and content_type[:MAX_MIME_CHARS],
        "bytes_size": len(data), "source": "upload", "tags": tags or [],
        "collection": collection, "status": "pending", "error_message": None,
        "ingestion_run_id": run.id, "updated_at": utcnow(),
    }
    path_hash = sha256_hex(upload_identity(name))
    stmt = pg_insert(Document).values(id=uuid7(), path_hash=path_hash, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["user_id", "path_hash"], set_=values)
    doc_id = (await session.execute(stmt.returning(Document.id))).scalar_one()
    upload = pg_insert(DocumentUpload).values(
        document_id=doc_id, filename=name, content_type=content_type, data=data
    )
    await session.execute(upload.on_conflict_do_update(
        index_elements=["document_id"],
        set_={"filename": name, "content_type": content_type, "data": data, "created_at": utcnow()},
    ))
    task = await enqueue(session, INGEST_TASK, {"run_id": str(run.id), "document_id": str(doc_id)})
    run.task_id = task.id
    doc = (await session.scalars(
        select(Document).where(Document.id == doc_id).execution_options(populate_existing=True)
    )).one()
    # A re-upload changes the document's scope now; its old chunks stay (until the new
    # ingestion replaces them, for good if it fails) and must follow it at once.
    await _copy_scope_to_chunks(session, doc)
    await audit.record(
        session, "knowledge.document.uploaded", user_id=user_id, resource_type="document",
        resource_id=doc_id,
        changes={"name": name, "bytes": len(data), "collection": collection, "tags": tags or [],
                 "group_id": str(group_id) if group_id else None, "is_private": is_private},
        metadata={"ingestion_run_id": str(run.id)},
    )
    return doc, run


def _documents_query(actor: Principal) -> Select[Document]:
    return select(Document).where(visible_to(actor))


async def list_documents(
    session: AsyncSession,
    actor: Principal,
    *,
    collection: str | None = None,
    status: str | None = None,
    persona_id: uuid.UUID | None = None,
    tag: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    project_id: uuid.UUID | None = None,
) -> tuple[list[Document], str | None]:
    """Newest first, keyset-paginated on (created_at, id); ``collection`` and ``tag``
    spelled as they are stored (composed, trimmed)."""
    collection = collection_filter(collection)
    stmt = where_equal(_documents_query(actor), (Document.collection, collection),
                       (Document.status, status), (Document.persona_id, persona_id),
                       (Document.project_id, project_id))
    # Spelled as tags are stored; blank: no filter (no tag is).
    tag = None if tag is None or is_blank(trimmed(tag)) else trimmed(tag)
    if tag is not None:
        stmt = stmt.where(Document.tags.contains([tag]))
    return await newest_first(session, stmt, Document.created_at, Document.id,
                              limit=limit, cursor=cursor)


async def get_document(session: AsyncSession, actor: Principal, document_id: uuid.UUID) -> Document:
    doc = (await session.scalars(
        _documents_query(actor).where(Document.id == document_id)
    )).one_or_none()
    if doc is None:
        raise NotFound(f"document {document_id} does not exist")
    return doc


async def _owned_document(
    session: AsyncSession, actor: Principal, document_id: uuid.UUID
) -> Document:
    """The document to change or delete, its row locked until the transaction ends: a
    concurrent change waits and then reads the row as committed (its scope copies are
    written from that, never from a stale view), and one deleted meanwhile answers 404."""
    doc = (await session.scalars(
        _documents_query(actor).where(Document.id == document_id).with_for_update()
        .execution_options(populate_existing=True)
    )).one_or_none()
    if doc is None:
        # Row-level security lets only the owner (or an administrator) lock it: a group
        # member who sees it gets the 403 below, anyone else (or after a delete) 404.
        doc = await get_document(session, actor, document_id)
    if not actor.is_admin and doc.user_id != actor.user_id:
        raise Forbidden("only the document's owner may change or delete it")
    return doc


async def delete_document(session: AsyncSession, actor: Principal, document_id: uuid.UUID) -> None:
    """Delete a document with its chunks (ON DELETE CASCADE) and any pending upload."""
    doc = await _owned_document(session, actor, document_id)
    chunks = (await session.execute(
        select(func.count()).select_from(DocumentChunk).where(DocumentChunk.document_id == doc.id)
    )).scalar_one()
    await session.execute(delete(Document).where(Document.id == doc.id))
    await audit.record(
        session, "knowledge.document.deleted", user_id=actor.user_id, resource_type="document",
        resource_id=doc.id, changes={"name": doc.name, "chunks": int(chunks), "owner": str(doc.user_id)},
    )


async def _copy_scope_to_chunks(session: AsyncSession, doc: Document) -> None:
    """The chunks' copies of their document's scope (effective sharing group, persona,
    collection, tags) follow a change of it in the same transaction: row-level security
    and search read them, so chunks must never stay shared after their document is not."""
    await session.execute(
        update(DocumentChunk).where(DocumentChunk.document_id == doc.id).values(
            group_id=None if doc.is_private else doc.group_id, persona_id=doc.persona_id,
            collection=doc.collection, tags=doc.tags,
        )
    )


async def _rekey_upload(session: AsyncSession, doc: Document) -> None:
    """An upload is keyed on its name (a re-upload of that name replaces it): a renamed
    upload takes its new name's key, so an upload of its old name is a new document, not
    an overwrite of this one; 409 if another upload of the owner has that name."""
    path_hash = sha256_hex(upload_identity(doc.name))
    taken = await session.scalar(select(Document.id).where(
        Document.user_id == doc.user_id, Document.path_hash == path_hash, Document.id != doc.id))
    if taken is not None:
        raise Conflict(f"the owner already has an uploaded document named {doc.name!r} "
                       f"({taken}): delete or rename it first", extra={"field": "name"})
    doc.path_hash = path_hash
    # Written now, in a savepoint: a rename or an upload to the same name committed since
    # the check above breaks the unique index here, and is the same 409 (it was the
    # generic conflict naming the columns user_id and path_hash).
    await flush_unique(session, "uq_documents_user_path_hash",
                       f"the owner already has an uploaded document named {doc.name!r}: "
                       "delete or rename it first", field="name")


async def update_document(
    session: AsyncSession, actor: Principal, document_id: uuid.UUID, body: DocumentUpdate
) -> Document:
    """Rename, describe, re-tag, move to a collection, or change sharing.

    The chunks' copies of scope (sharing group, collection, tags) change in the same
    transaction, so search never sees a half-updated document.
    """
    doc = await _owned_document(session, actor, document_id)
    fields = body.model_fields_set
    changes: dict[str, Any] = {}
    # Membership is checked for what would newly be shared: a group_id sent back unchanged
    # (by an owner who has left the group since) shares nothing new; a private document
    # made public again shares it with its group anew.
    group_id = body.group_id if "group_id" in fields else doc.group_id
    if group_id != doc.group_id or (doc.is_private and body.is_private is False):
        await check_group(session, actor, group_id)
    for name in ("name", "description", "collection", "tags", "group_id", "is_private"):
        if name not in fields:
            continue
        value = getattr(body, name)
        if name in ("name", "is_private", "tags") and value is None:
            raise Unprocessable(f"{name} cannot be null")
        if name == "name":
            # The upload's rules: a name an upload could have (its key, see _rekey_upload).
            value = clean_filename(value, "name needs a printable character other than a "
                                          "space (and is only what follows the last slash)")
        if getattr(doc, name) != value:
            changes[name] = str(value) if isinstance(value, uuid.UUID) else value
            setattr(doc, name, value)
    if not changes:
        return doc
    if "name" in changes and doc.source == "upload":
        await _rekey_upload(session, doc)
    doc.updated_at = utcnow()
    await session.flush()
    await _copy_scope_to_chunks(session, doc)
    await audit.record(session, "knowledge.document.updated", user_id=actor.user_id,
                       resource_type="document", resource_id=doc.id, changes=changes)
    return doc


async def list_chunks(
    session: AsyncSession, actor: Principal, document_id: uuid.UUID
) -> list[DocumentChunk]:
    doc = await get_document(session, actor, document_id)
    return list((await session.scalars(
        select(DocumentChunk).where(DocumentChunk.document_id == doc.id)
        .options(defer(DocumentChunk.embedding), defer(DocumentChunk.content_tsv))
        .order_by(DocumentChunk.is_curated, DocumentChunk.chunk_index)
    )).all())


# --- ingestion runs ---------------------------------------------------------------------


def is_web_target(target: str) -> bool:
    return target.strip().lower().startswith(("http://", "https://"))


def precheck_url(target: str, cfg: KnowledgeConfig) -> str:
    """Refuse at once what the fetch would refuse for certain (bad URL, literal private
    host); names are resolved and checked again at fetch time (DNS may change)."""
    try:
        # No fragment: the server never sees one (page#a and page#b are one document).
        url = httpx.URL(browser_host_form(target.strip())).copy_with(fragment=None)
        url.host  # noqa: B018  decoded on first read: a bad "xn--" label is idna's ValueError
        if url.path == "/":  # "http://host" asks for "/": one document, one key, with it
            url = url.copy_with(path="/")
    except (httpx.InvalidURL, ValueError, TypeError):
        raise FetchInvalidURL(f"{target[:200]!r} is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise FetchInvalidURL("web ingestion needs an http:// or https:// URL with a host")
    if url.userinfo:
        raise FetchInvalidURL("URLs with a user name or password are not accepted")
    check_port(url)
    host = url.host
    if host == "localhost" or host.endswith(".localhost"):
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return str(url)
    reason = address_refusal(ip, allow_private=cfg.allow_private_fetch)
    if reason is not None:
        raise FetchRefused(f"fetching {url.host} is not allowed: it is {reason}; only public "
                           "internet addresses can be ingested")
    return str(url)


async def start_run(
    session: AsyncSession, actor: Principal, cfg: KnowledgeConfig, body: IngestionRunCreate
) -> IngestionRun:
    """Check the target now (so a bad one is a 4xx, not a failed run), record the run
    and queue it; the run's job does the work."""
    user_id = require_user(actor, "documents")
    await check_group(session, actor, body.group_id)
    await require_project(session, actor, body.project_id)
    await _check_persona(session, actor, body.persona_id)
    from_web = is_web_target(body.target) if body.from_web is None else body.from_web
    if from_web:
        if body.prune:
            raise Unprocessable("prune applies to a directory on the server, not a URL",
                                extra={"field": "prune"})
        target = precheck_url(body.target, cfg)
        source = "web"
    else:
        if is_web_target(body.target):
            raise Unprocessable("target is a URL: set from_web to true (or leave it out)")
        target = str(resolve_ingest_path(body.target, cfg.ingest_roots))
        source = "file"
    check_embedder(cfg.embedder)
    run = IngestionRun(
        user_id=user_id, target=target, source=source, from_web=from_web,
        recursive=body.recursive, prune=body.prune, tags=body.tags, collection=body.collection,
        group_id=body.group_id, is_private=body.is_private, persona_id=body.persona_id,
        project_id=body.project_id, embedding_model=cfg.embedder.model, status="pending",
    )
    session.add(run)
    await session.flush()
    task = await enqueue(session, INGEST_TASK, {"run_id": str(run.id), "force": body.force})
    run.task_id = task.id
    await session.flush()
    await audit.record(
        session, "knowledge.ingestion_run.started", user_id=user_id,
        resource_type="ingestion_run", resource_id=run.id,
        changes={"target": target, "source": source, "recursive": body.recursive,
                 "collection": body.collection, "tags": body.tags, "force": body.force,
                 "prune": body.prune},
    )
    return run


async def list_runs(
    session: AsyncSession, actor: Principal, *, status: str | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[IngestionRun], str | None]:
    stmt = select(IngestionRun)
    if actor.user_id is not None:
        stmt = stmt.where(IngestionRun.user_id == actor.user_id)
    elif not actor.is_admin:
        return [], None
    if status is not None:
        stmt = stmt.where(IngestionRun.status == status)
    if cursor is not None:
        stmt = stmt.where(IngestionRun.id < cursor_uuid(cursor))
    rows = (await session.scalars(stmt.order_by(IngestionRun.id.desc()).limit(limit + 1))).all()
    return page_of(rows, limit, lambda run: encode_cursor({"id": str(run.id)}))


async def get_run(session: AsyncSession, actor: Principal, run_id: uuid.UUID) -> IngestionRun:
    run = await session.get(IngestionRun, run_id)
    if run is None or (not actor.is_admin and run.user_id != actor.user_id):
        raise NotFound(f"ingestion run {run_id} does not exist")
    return run
