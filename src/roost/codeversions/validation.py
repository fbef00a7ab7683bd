"""Validating a code version: check out its commit into a scratch directory and run the
configured checks there (:mod:`roost.codeversions.checks`), one after the other; store
``validation_status`` and ``test_results``.  Run by the ``codeversions.validate`` job as
the system (the version's owner is in its row); idempotent: a repeated job runs the checks
again and overwrites the result."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import update

from roost.audit.service import record
from roost.codeversions import checks, repos
from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.models import CodeVersion
from roost.codeversions.service import RESOURCE, repository_path
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.errors import RoostError


async def run_checks(config: CodeVersionsConfig, repository: Path,
                     commit_id: str) -> tuple[str, dict[str, Any]]:
    """``(validation_status, test_results)`` of the commit's checks."""
    with tempfile.TemporaryDirectory(prefix="roost-validate-") as tmp:
        scratch = Path(tmp)
        work = scratch / "work"
        work.mkdir()
        try:
            await asyncio.to_thread(repos.checkout, repository, commit_id, work,
                                    max_bytes=config.max_checkout_bytes)
        except (RoostError, OSError) as exc:
            detail = exc.detail if isinstance(exc, RoostError) else f"checkout failed: {exc.strerror}"
            failed = checks.CheckResult((), "error", None, 0, detail, False)
            return "error", {"checkout": failed.as_json()}
        env = checks.environment(scratch)
        results: dict[str, Any] = {}
        outcomes = []
        for argv in config.checks:
            result = await checks.run_check(argv, work, env, config.limits)
            name = base = checks.check_name(argv)
            n = 1
            while name in results:  # the same check configured twice
                n += 1
                name = f"{base} #{n}"
            results[name] = result.as_json()
            outcomes.append(result)
    return checks.overall(outcomes), results


async def validate(database: Database, config: CodeVersionsConfig,
                   version_id: uuid.UUID) -> dict[str, Any]:
    async with database.transaction() as session:
        version = await session.get(CodeVersion, version_id, with_for_update=True)
        if version is None:
            return {"version_id": str(version_id), "skipped": "the code version is gone"}
        version.validation_status = "running"
        repository, commit_id = repository_path(config, version), version.version_hash
        owner, run_id = version.user_id, version.run_id
    status, results = await run_checks(config, repository, commit_id)
    async with database.transaction() as session:
        changed = (await session.execute(
            update(CodeVersion).where(CodeVersion.id == version_id)
            .values(validation_status=status, test_results=results, validated_at=utcnow())
            .returning(CodeVersion.id))).first()
        if changed is None:
            return {"version_id": str(version_id), "skipped": "the code version is gone"}
        await record(session, "codeversion.validated", user_id=owner, run_id=run_id,
                     resource_type=RESOURCE, resource_id=version_id, success=status == "passed",
                     metadata={"status": status,
                               "outcomes": {k: v["outcome"] for k, v in results.items()}})
    return {"version_id": str(version_id), "status": status}
