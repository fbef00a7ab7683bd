"""Validation: the configured checks run on a checkout of the version's commit, in a
subprocess with a timeout, resource limits and an output cap; through the queue job and
the API, and the check runner alone for the hostile cases (hang, flood, limits)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.codeversions import checks, jobs, repos
from roost.codeversions.checks import Limits, run_check
from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.validation import run_checks, validate
from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.codeversions.conftest import APP_SAYS_OK, Headers, chat_session, commit, wait_validated

PY = sys.executable
APP_SAYS_OK_T = tuple(APP_SAYS_OK)


async def test_validation_passes_then_fails_on_the_committed_code(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], worker: Worker,
    database: Database,
) -> None:
    _, headers = user
    session_id = await chat_session(client, headers)
    good = await commit(client, headers, chat_session_id=session_id,
                        files={"app.py": "status = 'ok'\n"})
    resp = await client.post(f"/api/v1/code-versions/{good['id']}/validate", headers=headers)
    assert resp.status_code == 202, resp.text
    assert resp.json()["validation_status"] == "pending"
    assert resp.json()["validation_task_id"] is not None
    done = await wait_validated(client, headers, good["id"])
    assert done["validation_status"] == "passed"
    assert done["validated_at"] is not None
    (name, result), = done["test_results"].items()
    assert name == checks.check_name(APP_SAYS_OK)
    assert result["outcome"] == "passed" and result["exit_code"] == 0
    assert "app.py: status = 'ok'" in result["output_tail"]
    assert result["truncated"] is False and result["duration_ms"] >= 0
    # The next commit breaks it; run_checks queues the validation with the commit.
    bad = await commit(client, headers, chat_session_id=session_id, run_checks=True,
                       files={"app.py": "status = 'bad'\n"})
    assert bad["validation_status"] == "pending" and bad["validation_task_id"]
    done = await wait_validated(client, headers, bad["id"])
    assert done["validation_status"] == "failed"
    (result,) = done["test_results"].values()
    assert result["outcome"] == "failed" and result["exit_code"] == 1
    assert "status = 'bad'" in result["output_tail"]
    # The first version is still the passing one (its own commit was checked out).
    again = (await client.get(f"/api/v1/code-versions/{good['id']}", headers=headers)).json()
    assert again["validation_status"] == "passed"
    async with database.transaction() as s:
        statuses = (await s.scalars(text(
            "SELECT metadata->>'status' FROM audit_logs WHERE action = 'codeversion.validated' "
            "ORDER BY seq"))).all()
    assert statuses == ["passed", "failed"]


async def test_a_running_validation_is_not_queued_twice(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    _, headers = user
    session_id = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=session_id, files={"app.py": "ok"})
    async with database.transaction() as s:
        await s.execute(text("UPDATE code_versions SET validation_status = 'running' "
                             "WHERE id = :id"), {"id": version["id"]})
    resp = await client.post(f"/api/v1/code-versions/{version['id']}/validate", headers=headers)
    assert resp.status_code == 409


async def test_asking_again_while_queued_returns_the_queued_validation(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """While a validation is queued (pending, its job not finished), asking again answers
    it as it is (202, the same job) and queues nothing (five asks queued five jobs, each
    running every check); once its job is finished for good, a new one is queued."""
    _, headers = user
    session_id = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=session_id, files={"app.py": "ok"})
    url = f"/api/v1/code-versions/{version['id']}/validate"
    answers = [await client.post(url, headers=headers) for _ in range(5)]
    assert [a.status_code for a in answers] == [202] * 5
    assert len({a.json()["validation_task_id"] for a in answers}) == 1
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM background_tasks "
                                   "WHERE task_type = 'codeversions.validate'")) == 1
        await s.execute(text("UPDATE background_tasks SET status = 'cancelled' WHERE id = :t"),
                        {"t": answers[0].json()["validation_task_id"]})
    again = await client.post(url, headers=headers)
    assert again.status_code == 202
    assert again.json()["validation_task_id"] != answers[0].json()["validation_task_id"]


def _limits(**kw: float) -> Limits:
    values = {"timeout_s": 30.0, "max_output_bytes": 64 * 1024, "cpu_s": 30,
              "memory_bytes": 1024 * 1024 * 1024, "file_bytes": 1024 * 1024, "processes": 0}
    values.update(kw)
    return Limits(**values)  # type: ignore[arg-type]


@pytest.fixture
def workdir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work"
    work.mkdir()
    return work, checks.environment(tmp_path / "scratch")


async def test_a_hanging_check_times_out_and_is_killed(
    workdir: tuple[Path, dict[str, str]], tmp_path: Path,
) -> None:
    work, env = workdir
    marker = tmp_path / "survived"
    (work / "child.py").write_text(
        f"import pathlib, time\ntime.sleep(3)\npathlib.Path({str(marker)!r}).write_text('x')\n")
    # The check starts a grandchild in its process group; both must die.
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, 'child.py']); "
            "print('waiting', flush=True); time.sleep(600)")
    result = await run_check((PY, "-c", code), work, env, _limits(timeout_s=1))
    assert result.outcome == "timeout" and result.exit_code is None, result
    assert "waiting" in result.output_tail and "killed after 1 s" in result.output_tail
    assert checks.overall([result]) == "timeout"
    # The grandchild was killed with it: run a check that outlives its sleep, then look.
    await run_check((PY, "-c", "import time; time.sleep(4)"), work, env, _limits())
    assert not marker.exists()


async def test_a_flooding_check_is_truncated_and_killed(
    workdir: tuple[Path, dict[str, str]],
) -> None:
    work, env = workdir
    result = await run_check((PY, "-c", "while True: print('x' * 1000)"), work, env,
                             _limits(max_output_bytes=16 * 1024))
    assert result.outcome == "flooded" and result.truncated is True
    assert result.exit_code is None
    assert "killed after 16384 bytes of output" in result.output_tail
    assert len(result.output_tail) <= checks.TAIL_CHARS + 100
    assert checks.overall([result]) == "failed"


async def test_limits_apply_and_nothing_leaks_into_the_check(
    workdir: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    work, env = workdir
    monkeypatch.setenv("ROOST_SECRET_KEY", "do-not-leak")
    env_check = ("import os, sys; leaked = [k for k in os.environ if k.startswith('ROOST')]; "
                 "print(leaked); sys.exit(1 if leaked else 0)")
    result = await run_check((PY, "-c", env_check), work, env, _limits())
    assert result.outcome == "passed", result.output_tail
    # RLIMIT_FSIZE: a file bigger than the limit cannot be written.
    big = "open('big', 'wb').write(b'x' * (4 * 1024 * 1024))"
    result = await run_check((PY, "-c", big), work, env, _limits(file_bytes=1024 * 1024))
    assert result.outcome == "failed" and result.exit_code != 0
    assert not (work / "big").exists() or (work / "big").stat().st_size <= 1024 * 1024
    # RLIMIT_AS: a large allocation fails.
    result = await run_check((PY, "-c", "b = bytearray(800 * 1024 * 1024)"), work, env,
                             _limits(memory_bytes=256 * 1024 * 1024))
    assert result.outcome == "failed" and "MemoryError" in result.output_tail
    # RLIMIT_CPU: a busy loop is stopped by the kernel (SIGXCPU), before the wall clock.
    result = await run_check((PY, "-c", "while True: pass"), work, env,
                             _limits(cpu_s=1, timeout_s=120))
    assert result.outcome == "failed" and result.exit_code is not None and result.exit_code < 0
    # No shell: metacharacters are plain arguments.
    result = await run_check((PY, "-c", "import sys; print(sys.argv[1:])", "$(id); ls *"), work,
                             env, _limits())
    assert result.outcome == "passed" and "['$(id); ls *']" in result.output_tail


async def test_a_missing_command_is_an_error(workdir: tuple[Path, dict[str, str]]) -> None:
    work, env = workdir
    result = await run_check(("no-such-command-roost",), work, env, _limits())
    assert result.outcome == "error" and "command not found" in result.output_tail
    assert checks.overall([result]) == "error"


async def test_hanging_and_flooding_checks_are_stored_as_such(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
    config: CodeVersionsConfig,
) -> None:
    _, headers = user
    session_id = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=session_id, files={"app.py": "ok"})
    hang = (PY, "-c", "import time; time.sleep(600)")
    flood = (PY, "-c", "while True: print('y' * 1000)")
    cfg = dataclasses.replace(config, checks=(APP_SAYS_OK_T, flood, hang),
                              limits=_limits(timeout_s=1, max_output_bytes=8192))
    outcome = await validate(database, cfg, uuid.UUID(version["id"]))
    assert outcome["status"] == "timeout"
    stored = (await client.get(f"/api/v1/code-versions/{version['id']}", headers=headers)).json()
    assert stored["validation_status"] == "timeout"
    results = stored["test_results"]
    assert results[checks.check_name(APP_SAYS_OK_T)]["outcome"] == "passed"
    assert results[checks.check_name(flood)]["outcome"] == "flooded"
    assert results[checks.check_name(flood)]["truncated"] is True
    assert results[checks.check_name(hang)]["outcome"] == "timeout"
    assert results[checks.check_name(hang)]["exit_code"] is None


async def test_a_validation_whose_job_died_for_good_is_swept_and_can_run_again(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    _, headers = user
    session_id = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=session_id,
                           files={"app.py": "status = 'ok'\n"})
    queued = await client.post(f"/api/v1/code-versions/{version['id']}/validate", headers=headers)
    assert queued.status_code == 202
    assert await jobs.sweep(database) == 0  # its job is alive: nothing to sweep
    async with database.transaction() as session:  # its last worker died: dead-lettered
        await session.execute(text("UPDATE background_tasks SET status = 'dead_letter' "
                                   "WHERE id = :t"), {"t": queued.json()["validation_task_id"]})
    assert await jobs.sweep(database) == 1
    swept = (await client.get(f"/api/v1/code-versions/{version['id']}", headers=headers)).json()
    assert swept["validation_status"] == "error"
    again = await client.post(f"/api/v1/code-versions/{version['id']}/validate", headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["validation_status"] == "pending"
    assert again.json()["validation_task_id"] != queued.json()["validation_task_id"]


async def test_run_checks_refused_without_checks_commits_nothing(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], app: FastAPI,
    test_settings: Settings,
) -> None:
    """A commit refused with 422 (``run_checks`` with no check configured) leaves nothing
    in the repository: the same commit without ``run_checks`` is then made (it was
    "nothing to commit", a git commit no version row would ever name)."""
    app.state.code_versions_config = CodeVersionsConfig.from_settings(
        test_settings.model_copy(update={"code_checks": []}))
    _, headers = user
    session_id = await chat_session(client, headers)
    body = {"chat_session_id": session_id, "files": {"a.py": "x"}, "message": "m"}
    refused = await client.post("/api/v1/code-versions", json={**body, "run_checks": True},
                                headers=headers)
    assert refused.status_code == 422 and "no checks" in refused.text, refused.text
    made = await client.post("/api/v1/code-versions", json=body, headers=headers)
    assert made.status_code == 201, made.text


async def _awaiting_retry(client: httpx.AsyncClient, headers: Headers,
                          database: Database) -> dict[str, Any]:
    """A version whose validation job's attempt raised and waits for its retry: the job
    row as the worker's retry leaves it (status 'failed', scheduled later)."""
    sid = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=sid, files={"app.py": "ok\n"})
    queued = await client.post(f"/api/v1/code-versions/{version['id']}/validate",
                               headers=headers)
    assert queued.status_code == 202, queued.text
    async with database.transaction() as s:
        await s.execute(text(
            "UPDATE background_tasks SET status = 'failed', retry_count = 1, attempts = 1, "
            "error_message = 'boom', scheduled_at = now() + interval '5 seconds' "
            "WHERE id = :id"), {"id": queued.json()["validation_task_id"]})
    answer: dict[str, Any] = queued.json()
    return answer


async def test_asking_again_while_the_job_waits_for_its_retry_queues_nothing(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """A job in 'failed' will be retried (docs/tasks.md): asking again returns it, queues
    nothing (a second job was queued beside it)."""
    _, headers = user
    queued = await _awaiting_retry(client, headers, database)
    again = await client.post(f"/api/v1/code-versions/{queued['id']}/validate",
                              headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["validation_task_id"] == queued["validation_task_id"]
    async with database.transaction() as s:
        count = await s.scalar(text(
            "SELECT count(*) FROM background_tasks WHERE task_type = 'codeversions.validate' "
            "AND payload->>'version_id' = :v"), {"v": queued["id"]})
    assert count == 1


async def test_the_sweep_leaves_a_validation_whose_job_will_be_retried(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """The sweep marks 'error' only validations whose job is gone for good, not one whose
    job awaits its retry (which would then overwrite the 'error')."""
    _, headers = user
    queued = await _awaiting_retry(client, headers, database)
    assert await jobs.sweep(database) == 0
    now = (await client.get(f"/api/v1/code-versions/{queued['id']}", headers=headers)).json()
    assert now["validation_status"] == "pending"


async def test_a_check_that_exits_leaves_no_process_behind(tmp_path: Path) -> None:
    """What a check started in the background does not outlive the check, which has no
    wall-clock limit left to kill it."""
    work = tmp_path / "work"
    work.mkdir()
    env = checks.environment(tmp_path / "scratch")
    marker = tmp_path / "survived"
    (work / "child.py").write_text(
        f"import pathlib, time\ntime.sleep(3)\npathlib.Path({str(marker)!r}).write_text('x')\n")
    code = ("import subprocess, sys; subprocess.Popen([sys.executable, 'child.py'], "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print('done')")
    result = await run_check((PY, "-c", code), work, env,
                             Limits(timeout_s=30, cpu_s=30, processes=0))
    assert result.outcome == "passed", result
    await asyncio.sleep(4.5)  # past the child's 3 s: it wrote the marker if still alive
    assert not marker.exists(), "the check's child kept running after the check ended"


async def test_a_tree_too_big_to_check_out_is_an_error_not_a_full_disk(tmp_path: Path) -> None:
    """The checkout stops past max_checkout_bytes: the validation is an error saying so."""
    repository = tmp_path / "r.git"
    done = repos.commit_files(repository, branch="main", message="big", author=b"a <a@b>",
                              timestamp=0, files={f"f{i}.txt": b"x" * 600_000 for i in range(4)})
    config = CodeVersionsConfig(repos_root=tmp_path, checks=(APP_SAYS_OK_T,),
                                max_checkout_bytes=2 * 1024 * 1024)
    status, results = await run_checks(config, repository, done.commit_id)
    assert status == "error"
    assert "more than 2 MiB" in results["checkout"]["output_tail"]
    roomy = dataclasses.replace(config, max_checkout_bytes=3 * 1024 * 1024)
    status, results = await run_checks(roomy, repository, done.commit_id)
    assert "checkout" not in results  # written: the check ran (and failed: no app.py)
