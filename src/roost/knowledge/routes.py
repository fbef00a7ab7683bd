"""Knowledge API: documents (upload, list, get, update, delete), ingestion runs, search."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Depends, File, Form, Query, Request, Response, UploadFile, status
from sqlalchemy.ext.asyncio import AsyncSession

from roost.http.auth import CurrentPrincipal, scoped_request_transaction
from roost.http.deps import Cursor, DbSession, Limit, SettingsDep, get_database
from roost.http.reads import ReadSession, read_session, replica_fallback
from roost.http.routing import RoostRouter
from roost.http.uploads import read_capped, sent_once
from roost.identity.resolver import known_caller
from roost.knowledge import search as search_mod
from roost.knowledge import service
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.schemas import (
    SENT_COLLECTION_CHARS,
    SENT_TAG_CHARS,
    ChunkOut,
    DocumentOut,
    DocumentUpdate,
    IngestionRunCreate,
    IngestionRunOut,
    SearchRequest,
    SearchResponse,
    UploadAccepted,
    parse_tags_field,
)
from roost.pagination import DEFAULT_LIMIT, Page
from roost.principal import Principal

router = RoostRouter(prefix="/api/v1/knowledge", tags=["knowledge"])



async def get_knowledge_config(request: Request, settings: SettingsDep) -> KnowledgeConfig:
    """Built from the app's settings once, kept on the app."""
    cfg: KnowledgeConfig | None = getattr(request.app.state, "knowledge_config", None)
    if cfg is None:
        cfg = KnowledgeConfig.from_settings(settings)
        request.app.state.knowledge_config = cfg
    return cfg


ConfigDep = Annotated[KnowledgeConfig, Depends(get_knowledge_config)]


@router.post("/documents", response_model=UploadAccepted, status_code=status.HTTP_202_ACCEPTED,
             summary="Upload a document; it is parsed, chunked and embedded in the background",
             dependencies=[Depends(sent_once("file", "collection", "tags", "group_id",
                                             "is_private", "persona_id", "project_id",
                                             "description"))])
async def upload_document(
    session: DbSession,
    principal: CurrentPrincipal,
    cfg: ConfigDep,
    file: Annotated[UploadFile, File(description="Text, Markdown, HTML or PDF")],
    collection: Annotated[str | None, Form(max_length=SENT_COLLECTION_CHARS)] = None,
    tags: Annotated[str | None, Form(max_length=8192,
                                     description="JSON array or comma-separated")] = None,
    group_id: Annotated[uuid.UUID | None, Form()] = None,
    is_private: Annotated[bool, Form()] = False,
    persona_id: Annotated[uuid.UUID | None, Form()] = None,
    project_id: Annotated[uuid.UUID | None, Form()] = None,
    description: Annotated[str | None, Form(max_length=10_000)] = None,
) -> UploadAccepted:
    data = await read_capped(file, cfg.max_upload_bytes)
    doc, run = await service.create_upload(
        session, principal, cfg, filename=file.filename, content_type=file.content_type,
        data=data, collection=collection, tags=parse_tags_field(tags), group_id=group_id,
        is_private=is_private, persona_id=persona_id, project_id=project_id,
        description=description,
    )
    return UploadAccepted(document=DocumentOut.model_validate(doc),
                          ingestion_run=IngestionRunOut.model_validate(run))


@router.get("/documents", response_model=Page[DocumentOut],
            summary="Documents you own or that are shared with your groups, newest first")
@replica_fallback
async def list_documents(
    session: ReadSession,
    principal: CurrentPrincipal,
    collection: Annotated[str | None, Query(max_length=SENT_COLLECTION_CHARS)] = None,
    status_: Annotated[Literal["pending", "processing", "ready", "error"] | None,
                       Query(alias="status")] = None,
    persona_id: uuid.UUID | None = None,
    tag: Annotated[str | None, Query(max_length=SENT_TAG_CHARS)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    project_id: uuid.UUID | None = None,
) -> Page[DocumentOut]:
    rows, next_cursor = await service.list_documents(
        session, principal, collection=collection, status=status_, persona_id=persona_id,
        tag=tag, limit=limit, cursor=cursor, project_id=project_id,
    )
    return Page[DocumentOut](items=[DocumentOut.model_validate(r) for r in rows],
                             next_cursor=next_cursor)


@router.get("/documents/{document_id}", response_model=DocumentOut)
async def get_document(
    document_id: uuid.UUID, session: DbSession, principal: CurrentPrincipal
) -> DocumentOut:
    return DocumentOut.model_validate(await service.get_document(session, principal, document_id))


@router.patch("/documents/{document_id}", response_model=DocumentOut,
              summary="Rename, re-tag, move to a collection or change sharing")
async def update_document(
    document_id: uuid.UUID, body: DocumentUpdate, session: DbSession, principal: CurrentPrincipal
) -> DocumentOut:
    doc = await service.update_document(session, principal, document_id, body)
    return DocumentOut.model_validate(doc)


@router.delete("/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a document and all its chunks")
async def delete_document(
    document_id: uuid.UUID, session: DbSession, principal: CurrentPrincipal
) -> Response:
    await service.delete_document(session, principal, document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/documents/{document_id}/chunks", response_model=list[ChunkOut],
            summary="A document's chunks in order (curated summaries last)")
async def list_chunks(
    document_id: uuid.UUID, session: DbSession, principal: CurrentPrincipal
) -> list[ChunkOut]:
    return [ChunkOut.model_validate(c)
            for c in await service.list_chunks(session, principal, document_id)]


@router.post("/ingestion-runs", response_model=IngestionRunOut,
             status_code=status.HTTP_202_ACCEPTED,
             summary="Ingest a server file or directory (under an allowed root) or a web URL")
async def start_run(
    body: IngestionRunCreate, session: DbSession, principal: CurrentPrincipal, cfg: ConfigDep,
) -> IngestionRunOut:
    run = await service.start_run(session, principal, cfg, body)
    return IngestionRunOut.model_validate(run)


@router.get("/ingestion-runs", response_model=Page[IngestionRunOut])
async def list_runs(
    session: DbSession,
    principal: CurrentPrincipal,
    status_: Annotated[Literal["pending", "running", "success", "partial", "failed"] | None,
                       Query(alias="status")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[IngestionRunOut]:
    rows, next_cursor = await service.list_runs(session, principal, status=status_, limit=limit,
                                                cursor=cursor)
    return Page[IngestionRunOut](items=[IngestionRunOut.model_validate(r) for r in rows],
                                 next_cursor=next_cursor)


@router.get("/ingestion-runs/{run_id}", response_model=IngestionRunOut)
async def get_run(run_id: uuid.UUID, session: DbSession, principal: CurrentPrincipal) -> IngestionRunOut:
    return IngestionRunOut.model_validate(await service.get_run(session, principal, run_id))


@router.post("/search", response_model=SearchResponse,
             summary="Vector, full-text or hybrid search over the documents you can see")
async def search(body: SearchRequest, request: Request, cfg: ConfigDep) -> SearchResponse:
    """A search by a caller this process knows, without read replicas, is one statement
    with no transaction around it (``search_mod.search_confirming``: the database
    confirms the caller in it), the query embedded before it; otherwise the request's
    transaction, or a replica's."""
    database = get_database(request)
    vector: list[float] | None = None  # embedded once
    if database.replicas is None and (caller := await known_caller(request)) is not None:
        if body.mode != "text":
            vector = await search_mod.query_vector(cfg, body)
        query = vector
        found = await caller.run(lambda confirmation, scope: search_mod.search_confirming(
            database, caller.principal, cfg, body, query, confirmation=confirmation,
            scope=scope))
        if found is not None:
            return found
    async with scoped_request_transaction(request) as (primary, principal):
        db = await read_session(request, principal, primary)
        return await _search(body=body, principal=principal, db=db, cfg=cfg, vector=vector)


@replica_fallback
async def _search(
    *, body: SearchRequest, principal: Principal, db: AsyncSession, cfg: KnowledgeConfig,
    vector: list[float] | None,
) -> SearchResponse:
    return await search_mod.search(db, principal, cfg, body, vector=vector)
