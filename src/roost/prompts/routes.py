"""HTTP routes: /api/v1/prompts (versions, labels, keys, resolution and rendering).

Paths with an id take ``{prompt_id:uuid}``: ``/resolve``, ``/render``, ``/labels`` and
``/keys`` are never read as an id."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, Page
from roost.prompts import service
from roost.prompts.schemas import (
    KEY_PATTERN,
    LABEL_PATTERN,
    Category,
    KeyOut,
    LabelOut,
    LabelSet,
    PromptCreate,
    PromptOut,
    PromptUpdate,
    RenderedOut,
    RenderRequest,
    RenderVersion,
    Scope,
)

router = RoostRouter(prefix="/api/v1/prompts", tags=["prompts"])

Key = Annotated[str, Query(pattern=KEY_PATTERN, description="A prompt key, e.g. chat.system")]
Label = Annotated[str, Query(pattern=LABEL_PATTERN)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PromptOut,
             summary="Publish a new version of a prompt (and move a label to it, by default "
                     "production)")
async def publish(body: PromptCreate, principal: CurrentPrincipal, db: DbSession) -> PromptOut:
    row, labels = await service.create_version(db, principal, body)
    return service.prompt_out(row, labels)


@router.get("", response_model=Page[PromptOut],
            summary="Versions in your scopes (yours, your groups', the factory's), newest first")
async def list_versions(
    principal: CurrentPrincipal, db: DbSession,
    key: Annotated[str | None, Query(pattern=KEY_PATTERN)] = None,
    category: Annotated[Category | None, Query()] = None,
    scope: Scope | None = None, group_id: uuid.UUID | None = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[PromptOut]:
    rows, next_cursor = await service.list_versions(
        db, principal, key=key, category=category, scope=scope, group_id=group_id,
        limit=limit, cursor=cursor)
    return Page[PromptOut](items=[service.prompt_out(r, labels) for r, labels in rows],
                           next_cursor=next_cursor)


@router.get("/keys", response_model=list[KeyOut],
            summary="Each key of your scopes: versions, labels, usage and success rate")
async def list_keys(principal: CurrentPrincipal, db: DbSession,
                    category: Annotated[Category | None, Query()] = None,
                    ) -> list[KeyOut]:
    return await service.list_keys(db, principal, category=category)


@router.get("/resolve", response_model=PromptOut,
            summary="The version a key resolves to for you: your label, else your group's, "
                    "else the factory default's")
async def resolve(principal: CurrentPrincipal, db: DbSession, key: Key,
                  label: Label = service.DEFAULT_LABEL) -> PromptOut:
    row = await service.resolve_for(db, principal, key, label)
    return service.prompt_out(row, (await service.labels_of(db, [row.id]))[row.id])


@router.post("/render", response_model=RenderedOut,
             summary="Resolve a key and render it with values (422 names a missing or unknown "
                     "variable)")
async def render(body: RenderRequest, principal: CurrentPrincipal,
                 db: DbSession) -> RenderedOut:
    row = await service.resolve_for(db, principal, body.key, body.label)
    return RenderedOut(prompt_id=row.id, prompt_key=row.prompt_key, version=row.version,
                       scope=service.scope_of(row), text=service.render_row(row, body.values))


@router.get("/labels", response_model=Page[LabelOut],
            summary="Labels of your scopes and the versions they point at, by key")
async def list_labels(principal: CurrentPrincipal, db: DbSession,
                      key: Annotated[str | None, Query(pattern=KEY_PATTERN)] = None,
                      limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[LabelOut]:
    items, next_cursor = await service.list_labels(db, principal, key=key, limit=limit,
                                                   cursor=cursor)
    return Page[LabelOut](items=items, next_cursor=next_cursor)


@router.put("/labels", response_model=LabelOut,
            summary="Point a label at a version (atomic, audited): its scope and key's label "
                    "moves")
async def set_label(body: LabelSet, principal: CurrentPrincipal, db: DbSession) -> LabelOut:
    return await service.set_label(db, principal, body.prompt_id, body.label)


@router.get("/{prompt_id:uuid}", response_model=PromptOut, summary="A version")
async def get_version(prompt_id: uuid.UUID, principal: CurrentPrincipal,
                      db: DbSession) -> PromptOut:
    row = await service.get_version(db, principal, prompt_id)
    return service.prompt_out(row, (await service.labels_of(db, [row.id]))[row.id])


@router.patch("/{prompt_id:uuid}", response_model=PromptOut,
              summary="Activate or deactivate a version (its text never changes)")
async def update_version(prompt_id: uuid.UUID, body: PromptUpdate, principal: CurrentPrincipal,
                         db: DbSession) -> PromptOut:
    row = await service.set_active(db, principal, prompt_id, body.is_active)
    return service.prompt_out(row, (await service.labels_of(db, [row.id]))[row.id])


@router.post("/{prompt_id:uuid}/render", response_model=RenderedOut,
             summary="Render this version with values")
async def render_version(prompt_id: uuid.UUID, body: RenderVersion, principal: CurrentPrincipal,
                         db: DbSession) -> RenderedOut:
    row = await service.get_version(db, principal, prompt_id)
    return RenderedOut(prompt_id=row.id, prompt_key=row.prompt_key, version=row.version,
                       scope=service.scope_of(row), text=service.render_row(row, body.values))
