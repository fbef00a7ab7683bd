"""HTTP routes of the code versions API: ``/api/v1/code-versions``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request, status

from roost.codeversions import service
from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.schemas import CodeVersionCreate, CodeVersionDetail, CodeVersionOut
from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit, SettingsDep
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, Page

router = RoostRouter(prefix="/api/v1/code-versions", tags=["code versions"])


async def code_versions_config(request: Request, settings: SettingsDep) -> CodeVersionsConfig:
    """Built once from the app's settings and kept on the app."""
    config: CodeVersionsConfig | None = getattr(request.app.state, "code_versions_config", None)
    if config is None:
        config = request.app.state.code_versions_config = CodeVersionsConfig.from_settings(settings)
    return config


ConfigDep = Annotated[CodeVersionsConfig, Depends(code_versions_config)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CodeVersionOut,
             summary="Commit files to the git repository of your chat session or run")
async def create_code_version(body: CodeVersionCreate, principal: CurrentPrincipal,
                              db: DbSession, config: ConfigDep) -> CodeVersionOut:
    if body.run_checks:  # refused before the commit: git keeps what a rollback cannot undo
        service.require_checks(config)
    version = await service.commit(
        db, principal, config, files=body.files, message=body.message, branch=body.branch,
        chat_session_id=body.chat_session_id, run_id=body.run_id)
    if body.run_checks:
        version = await service.request_validation(db, principal, config, version.id)
    return CodeVersionOut.model_validate(version)


@router.get("", response_model=Page[CodeVersionOut],
            summary="Code versions you can see, newest first (by chat session, run, branch)")
async def list_code_versions(
    principal: CurrentPrincipal, db: DbSession,
    chat_session_id: uuid.UUID | None = None, run_id: uuid.UUID | None = None,
    branch: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[CodeVersionOut]:
    rows, next_cursor = await service.list_versions(
        db, principal, chat_session_id=chat_session_id, run_id=run_id, branch=branch,
        limit=limit, cursor=cursor)
    return Page[CodeVersionOut](items=[CodeVersionOut.model_validate(r) for r in rows],
                                next_cursor=next_cursor)


@router.get("/{version_id}", response_model=CodeVersionDetail,
            summary="A code version with its diff against the parent commit")
async def get_code_version(version_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
                           config: ConfigDep) -> CodeVersionDetail:
    version = await service.get_version(db, principal, version_id)
    diff, truncated = await service.version_diff(config, version)
    return CodeVersionDetail.model_validate(
        {**CodeVersionOut.model_validate(version).model_dump(), "diff": diff,
         "diff_truncated": truncated})


@router.post("/{version_id}/validate", status_code=status.HTTP_202_ACCEPTED,
             response_model=CodeVersionOut,
             summary="Queue the configured checks (ROOST_CODE_CHECKS) on the version's commit")
async def validate_code_version(version_id: uuid.UUID, principal: CurrentPrincipal,
                                db: DbSession, config: ConfigDep) -> CodeVersionOut:
    return CodeVersionOut.model_validate(
        await service.request_validation(db, principal, config, version_id))
