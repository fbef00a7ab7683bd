"""Task-queue handlers of the codeversions domain: ``codeversions.validate``, the sweep
of validations whose job died for good and the prune of repositories nothing owns any
more.  Listed in ``roost.domains``."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select, union_all, update

from roost.agents.models import Run
from roost.chat.models import ChatSession
from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.models import CodeVersion
from roost.codeversions.service import DEAD_JOB_STATUSES, VALIDATE_TASK
from roost.codeversions.validation import validate
from roost.config import get_settings
from roost.db.engine import Database
from roost.tasks.handlers import PermanentError, TaskContext, task
from roost.tasks.models import BackgroundTask
from roost.tasks.schedules import periodic

config_override: CodeVersionsConfig | None = None  # tests: the configuration to use


def job_config() -> CodeVersionsConfig:
    return config_override or CodeVersionsConfig.from_settings(get_settings())


# No job timeout: each check has its own (ROOST_CODE_CHECK_TIMEOUT_S).  A worker that dies
# mid-validation leaves the version "running"; the retry runs the checks again.
@task(VALIDATE_TASK, queue="default", max_retries=2, backoff_base_s=5.0)
async def validate_job(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the configured checks on one code version and store the results."""
    try:
        version_id = uuid.UUID(str(payload["version_id"]))
    except (KeyError, ValueError):
        raise PermanentError("the payload names no code version (version_id)") from None
    return await validate(ctx.database, job_config(), version_id)


async def sweep(database: Database) -> int:
    """Mark ``error`` every validation left pending or running whose job is finished,
    dead-lettered or gone (its last worker died with no retries left), so the version can
    be validated again (``POST .../validate`` refuses while one is in progress)."""
    async with database.transaction() as session:
        result = await session.execute(
            update(CodeVersion).where(
                CodeVersion.validation_status.in_(("pending", "running")),
                CodeVersion.validation_task_id.is_not(None),
                ~exists().where(BackgroundTask.id == CodeVersion.validation_task_id,
                                BackgroundTask.status.not_in(DEAD_JOB_STATUSES)),
            ).values(validation_status="error")
            .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


@periodic("codeversions.sweep", every=timedelta(minutes=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=300)
async def sweep_validations(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"errored": await sweep(ctx.database)}


ORPHAN_GRACE_S = 3600.0
"""How long a repository directory nothing owns is left alone (a commit may be writing a
new one for a chat session or run created a moment ago)."""


def _repositories(root: Path) -> dict[uuid.UUID, Path]:
    """``root/<owner id>/<chat session or run id>.git`` by the session's or run's id
    (anything else under ``root`` is not Roost's and is left alone)."""
    found: dict[uuid.UUID, Path] = {}
    if not root.is_dir():
        return found
    for owner in root.iterdir():
        if owner.is_symlink() or not owner.is_dir():
            continue
        for repo in owner.glob("*.git"):
            try:
                found[uuid.UUID(repo.name.removesuffix(".git"))] = repo
            except ValueError:
                continue
    return found


def _remove(paths: list[Path], grace_s: float) -> int:
    now, removed = time.time(), 0
    for repo in paths:
        try:
            if repo.is_symlink() or now - repo.stat().st_mtime < grace_s:
                continue
            shutil.rmtree(repo)
        except FileNotFoundError:
            continue
        removed += 1
        owner = repo.parent
        if not any(owner.iterdir()):  # the account's last repository: its directory too
            owner.rmdir()
    return removed


async def prune_repositories(database: Database, root: Path,
                             grace_s: float = ORPHAN_GRACE_S) -> int:
    """Delete the repositories whose chat session or run is gone (deleted with its account,
    or on its own: their code_versions rows went with it), untouched for ``grace_s``."""
    found = await asyncio.to_thread(_repositories, root)
    if not found:
        return 0
    keys = list(found)
    async with database.transaction() as session:
        alive = set((await session.scalars(union_all(
            select(ChatSession.id).where(ChatSession.id.in_(keys)),
            select(Run.id).where(Run.id.in_(keys))))).all())
    return await asyncio.to_thread(
        _remove, [path for key, path in found.items() if key not in alive], grace_s)


@periodic("codeversions.prune_repositories", every=timedelta(hours=1), queue="maintenance",
          priority="background", max_retries=0, timeout_s=1800)
async def prune_repositories_job(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"removed": await prune_repositories(ctx.database, job_config().repos_root)}
