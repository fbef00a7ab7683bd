"""Code versions: commit files to a chat session's or run's repository, list and read the
versions, queue their validation (run by :mod:`roost.codeversions.validation`).

The repository is the truth about code; a ``code_versions`` row records one commit.  A
commit takes a transaction-scoped advisory lock on its repository, so two commits to the
same repository (from any process) follow each other; the branch moves with a
compare-and-swap too.  If the transaction fails after the git commit, the commit stays in
the repository without a row (the next commit's parent is then that commit).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Final

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import Run
from roost.audit.service import record
from roost.chat.models import ChatSession
from roost.codeversions import repos
from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.models import CodeVersion
from roost.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.tasks.models import BackgroundTask
from roost.tasks.service import enqueue

RESOURCE: Final = "code_version"
VALIDATE_TASK: Final = "codeversions.validate"
# Jobs that can no longer validate: finished one way or another (the sweep's view too).
# Not "failed": to the queue that is an attempt that raised and waits for its retry.
DEAD_JOB_STATUSES: Final = ("completed", "cancelled", "dead_letter")


async def repository_of(session: AsyncSession, actor: Principal, *,
                        chat_session_id: uuid.UUID | None,
                        run_id: uuid.UUID | None) -> tuple[uuid.UUID, uuid.UUID]:
    """``(owner, key)`` of the repository the actor may commit to: their chat session or run
    (administrators: anyone's).  Someone else's is not found; a run the actor sees as a
    persona member but does not own is forbidden."""
    if (chat_session_id is None) == (run_id is None):
        raise Unprocessable("give exactly one of chat_session_id and run_id")
    owner: uuid.UUID | None
    if chat_session_id is not None:
        owner = await session.scalar(select(ChatSession.user_id).where(
            ChatSession.id == chat_session_id))
        if owner is None or (owner != actor.user_id and not actor.is_admin):
            raise NotFound(f"no chat session with id {chat_session_id}")
        return owner, chat_session_id
    assert run_id is not None
    owner = await session.scalar(select(Run.user_id).where(Run.id == run_id))
    if owner is None:
        raise NotFound(f"no run with id {run_id}")
    if owner != actor.user_id and not actor.is_admin:
        raise Forbidden("only the run's owner can commit code to it")
    return owner, run_id


def encode_files(config: CodeVersionsConfig, files: dict[str, str | None]) -> dict[str, bytes | None]:
    """The files as bytes, within the size and directory limits (413) and with checked
    paths (422)."""
    if len(files) > config.max_files:
        raise PayloadTooLarge(f"a commit changes at most {config.max_files} files")
    out: dict[str, bytes | None] = {}
    total = 0
    paths = [repos.check_path(path) for path in files]
    # Each directory is a tree object the commit writes (and its diff reads): refused
    # before anything is written.
    if len(repos.directories(paths)) > repos.MAX_COMMIT_DIRECTORIES:
        raise PayloadTooLarge(f"a commit touches at most {repos.MAX_COMMIT_DIRECTORIES} "
                              "directories")
    for path, content in files.items():
        if content is None:
            out[path] = None
            continue
        data = content.encode("utf-8", "surrogatepass")
        if len(data) > config.max_file_bytes:
            raise PayloadTooLarge(f"a file holds at most {config.max_file_bytes} bytes")
        total += len(data)
        out[path] = data
    if total > config.max_commit_bytes:
        raise PayloadTooLarge(f"a commit holds at most {config.max_commit_bytes} bytes of files")
    return out


def _clean(value: str) -> str:
    return "".join(c for c in value if c.isprintable() and c not in "<>").strip()


async def _author(session: AsyncSession, actor: Principal) -> bytes:
    if actor.user_id is None:
        return b"Roost operator <operator@roost.invalid>"
    row = (await session.execute(text("SELECT username, email FROM users WHERE id = :id"),
                                 {"id": actor.user_id})).first()
    name, email = (row.username, row.email) if row else (str(actor.user_id), "")
    return f"{_clean(name) or 'user'} <{_clean(email)}>".encode()


async def commit(session: AsyncSession, actor: Principal, config: CodeVersionsConfig, *,
                 files: dict[str, str | None], message: str, branch: str = repos.DEFAULT_BRANCH,
                 chat_session_id: uuid.UUID | None = None,
                 run_id: uuid.UUID | None = None) -> CodeVersion:
    """Commit ``files`` (path -> text, None deletes) to the repository of the chat session
    or run, in the caller's transaction; the row's ``version_hash`` is the commit id."""
    owner, key = await repository_of(session, actor, chat_session_id=chat_session_id,
                                     run_id=run_id)
    data = encode_files(config, files)
    repos.check_branch(branch)
    author = await _author(session, actor)
    await session.execute(select(func.pg_advisory_xact_lock(
        func.hashtextextended(f"roost.code_versions:{key}", 0))))
    outcome = await asyncio.to_thread(
        repos.commit_files, repos.repo_path(config.repos_root, owner, key), branch=branch,
        files=data, message=message, author=author, timestamp=int(time.time()))
    version = CodeVersion(
        user_id=owner, chat_session_id=chat_session_id, run_id=run_id, author_id=actor.user_id,
        version_hash=outcome.commit_id, parent_hash=outcome.parent_id, branch=branch,
        commit_message=message, files_changed=outcome.files_changed,
        diff_summary=outcome.diff_summary, validation_status="pending", test_results={})
    session.add(version)
    await session.flush()
    await session.refresh(version)
    await record(session, "codeversion.commit", user_id=actor.user_id, run_id=run_id,
                 resource_type=RESOURCE, resource_id=version.id,
                 metadata={"version_hash": outcome.commit_id, "branch": branch,
                           "chat_session_id": str(chat_session_id) if chat_session_id else None,
                           "files": len(outcome.files_changed)})
    return version


async def get_version(session: AsyncSession, actor: Principal,
                      version_id: uuid.UUID) -> CodeVersion:
    """The version if row-level security shows it to the actor (404 otherwise)."""
    version = await session.get(CodeVersion, version_id, populate_existing=True)
    if version is None:
        raise NotFound(f"no code version with id {version_id}")
    return version


async def list_versions(
    session: AsyncSession, actor: Principal, *, chat_session_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None, branch: str | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[CodeVersion], str | None]:
    """Newest first; the versions the actor may see, narrowed by repository and branch."""
    stmt = where_equal(select(CodeVersion), (CodeVersion.chat_session_id, chat_session_id),
                       (CodeVersion.run_id, run_id), (CodeVersion.branch, branch))
    return await newest_first(session, stmt, CodeVersion.created_at, CodeVersion.id,
                              limit=limit, cursor=cursor)


def repository_path(config: CodeVersionsConfig, version: CodeVersion) -> Path:
    key = version.chat_session_id or version.run_id
    assert key is not None
    return repos.repo_path(config.repos_root, version.user_id, key)


async def version_diff(config: CodeVersionsConfig, version: CodeVersion) -> tuple[str, bool]:
    """The version's unified diff against its parent (capped) and whether it was cut."""
    return await asyncio.to_thread(repos.patch_of, repository_path(config, version),
                                   version.version_hash, max_bytes=config.max_diff_bytes)


def require_checks(config: CodeVersionsConfig) -> None:
    """422 when no check is configured: nothing to validate with."""
    if not config.checks:
        raise Unprocessable("no checks are configured (ROOST_CODE_CHECKS)")


async def request_validation(session: AsyncSession, actor: Principal, config: CodeVersionsConfig,
                             version_id: uuid.UUID) -> CodeVersion:
    """Queue the configured checks on the version (status ``pending``); 409 while a
    validation of it is running, 422 when no check is configured.  A validation still
    queued (``pending`` with a job not known to have finished) is returned as it is:
    asking again queues nothing."""
    version = await get_version(session, actor, version_id)
    require_checks(config)
    locked = await session.get(CodeVersion, version_id, with_for_update=True,
                               populate_existing=True)
    assert locked is not None
    if locked.validation_status == "running":
        raise Conflict(f"code version {version_id} is being validated: wait for the result")
    if locked.validation_status == "pending" and locked.validation_task_id is not None:
        # A job this actor cannot see (queued by an administrator) or that is gone counts
        # as queued: the sweep marks a validation whose job is gone "error" within a minute.
        job_status = await session.scalar(select(BackgroundTask.status).where(
            BackgroundTask.id == locked.validation_task_id))
        if job_status is None or str(job_status.value) not in DEAD_JOB_STATUSES:
            return locked
    job = await enqueue(session, VALIDATE_TASK, {"version_id": str(version_id)})
    locked.validation_status = "pending"
    locked.validation_task_id = job.id
    await session.flush()
    await record(session, "codeversion.validate", user_id=actor.user_id, run_id=version.run_id,
                 resource_type=RESOURCE, resource_id=version_id,
                 metadata={"task_id": str(job.id), "checks": len(config.checks)})
    await session.refresh(locked)
    return locked
