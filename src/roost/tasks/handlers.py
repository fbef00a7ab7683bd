"""Task types: the handler for each ``task_type`` and its defaults, registered by decorator.

Registration happens at import.  A domain keeps its handlers (and schedules) in
``roost/<domain>/jobs.py``; the app layer names those modules once (``roost.domains``
calls :func:`use_job_modules` from ``create_app``, the CLI and the tests) and
:func:`discover` imports them when a process first needs a task type it does not know
(the worker imports them at start-up).
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import BaseModel

from roost.tasks.models import DEFAULT_QUEUE, TaskPriority
from roost.tasks.payloads import is_storable_text

if TYPE_CHECKING:
    from roost.db.engine import Database

log = structlog.get_logger("roost.tasks.handlers")

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
MAX_RESULT_BYTES = 64 * 1024
MAX_RETRIES_LIMIT = 100
_TASK_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-:")


@dataclass(frozen=True)
class TaskContext:
    """What a handler knows about the job it runs.

    ``database`` lets the handler open its own transactions (``database.transaction()``);
    the job's completion is written separately, so a handler must be idempotent: a job
    whose worker dies after the handler's commit runs again (at-least-once).
    """

    task_id: uuid.UUID
    task_type: str
    queue: str
    priority: str
    attempt: int  # 1 for the first claim, counts releases and lease expiries too
    retry_count: int  # failed attempts so far
    max_retries: int
    scheduled_at: datetime
    worker_id: str
    database: Database


Handler = Callable[[TaskContext, Any], Awaitable[Any]] | Callable[[TaskContext, Any], Any]
H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class TaskType:
    name: str
    handler: Callable[..., Any]
    is_async: bool
    queue: str = DEFAULT_QUEUE
    priority: TaskPriority = TaskPriority.NORMAL
    max_retries: int = 3
    timeout_s: float | None = None
    backoff_base_s: float = 2.0
    backoff_max_s: float = 3600.0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    payload_model: type[BaseModel] | None = None


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the job goes to the dead letters
    at once, whatever retries it has left."""


_task_types: dict[str, TaskType] = {}


def validate_task_type_name(name: str) -> None:
    if not name or len(name) > 100 or not set(name) <= _TASK_TYPE_CHARS:
        raise ValueError(
            f"task type {name!r} must be 1-100 characters of a-z, 0-9, '.', '_', '-', ':'"
        )


def valid_queue_name(queue: str) -> bool:
    """What ``background_tasks.queue`` (varchar(64)) can hold, without surrounding spaces."""
    return 0 < len(queue) <= 64 and queue == queue.strip() and is_storable_text(queue)


def task(
    name: str,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: TaskPriority | str = TaskPriority.NORMAL,
    max_retries: int = 3,
    timeout_s: float | None = None,
    backoff_base_s: float = 2.0,
    backoff_max_s: float = 3600.0,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    payload_model: type[BaseModel] | None = None,
) -> Callable[[H], H]:
    """Register the decorated function as the handler of ``name``.

    The handler is ``async def handler(ctx: TaskContext, payload) -> dict | None``
    (plain ``def`` runs in a thread).  ``payload`` is the JSON object given at enqueue,
    or an instance of ``payload_model`` when one is given (validated at enqueue too).
    """
    validate_task_type_name(name)
    if not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        raise ValueError(f"max_retries must be within 0..{MAX_RETRIES_LIMIT}")
    if not valid_queue_name(queue):
        raise ValueError("queue must be 1-64 characters without surrounding spaces or NUL "
                         "characters")
    # A retry's delay is stored as an interval: NaN, infinity or a negative one could not be.
    if not all(math.isfinite(s) and s >= 0 for s in (backoff_base_s, backoff_max_s)):
        raise ValueError("backoff_base_s and backoff_max_s must be finite numbers >= 0")

    def register(fn: H) -> H:
        existing = _task_types.get(name)
        if existing is not None and _qualname(existing.handler) != _qualname(fn):
            raise ValueError(
                f"task type {name!r} is already handled by {_qualname(existing.handler)}"
            )
        _task_types[name] = TaskType(
            name=name, handler=fn, is_async=inspect.iscoroutinefunction(fn), queue=queue,
            priority=TaskPriority(priority), max_retries=max_retries, timeout_s=timeout_s,
            backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
            max_payload_bytes=max_payload_bytes, payload_model=payload_model,
        )
        return fn

    return register


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


ShutdownHook = Callable[[], Awaitable[None]]
_shutdown_hooks: dict[str, ShutdownHook] = {}


def on_worker_shutdown(fn: ShutdownHook) -> ShutdownHook:
    """Register ``async def fn()`` to run when a worker stops, after its jobs ended or
    were released (a domain's job module frees what its handlers kept: child processes,
    clients).  Registered at import, like handlers; once per function."""
    _shutdown_hooks[_qualname(fn)] = fn
    return fn


def worker_shutdown_hooks() -> list[ShutdownHook]:
    return list(_shutdown_hooks.values())


def get_task_type(name: str) -> TaskType | None:
    return _task_types.get(name)


def task_types() -> dict[str, TaskType]:
    return dict(_task_types)


def unregister(name: str) -> None:
    """For tests: forget a task type."""
    _task_types.pop(name, None)


_job_modules: tuple[str, ...] = ()
_discovered = False


def use_job_modules(names: Iterable[str]) -> None:
    """Name the modules that hold the domains' task handlers (``roost.domains`` lists
    them); :func:`discover` imports them."""
    global _job_modules, _discovered
    added = tuple(n for n in names if n not in _job_modules)
    if added:
        _job_modules = (*_job_modules, *added)
        _discovered = False


_worker_services: tuple[str, ...] = ()


def use_worker_services(names: Iterable[str]) -> None:
    """Name the ``module:attribute`` factories a standalone ``roost worker`` enters around
    its run (``roost.domains`` lists them: e.g. the LISTEN connection that keeps the
    process's caches current)."""
    global _worker_services
    _worker_services = (*_worker_services, *(n for n in names if n not in _worker_services))


def worker_services() -> list[Callable[[Any, Any], AbstractAsyncContextManager[Any]]]:
    """The factories of :func:`use_worker_services`, imported; each is called with the
    worker's database and settings."""
    found = []
    for name in _worker_services:
        module, _, attribute = name.partition(":")
        found.append(getattr(importlib.import_module(module), attribute))
    return found


def discover() -> None:
    """Import the job modules named by :func:`use_job_modules` (once per process)."""
    global _discovered
    if _discovered:
        return
    for name in _job_modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # one broken domain must not stop every other's jobs
            log.error("task_module_import_failed", module=name,
                      error=f"{type(exc).__name__}: {exc}")
    _discovered = True


def import_modules(names: list[str]) -> None:
    """Import the modules named by ``roost worker --import`` (from the current directory
    too, as uvicorn does for its app)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in names:
        importlib.import_module(name)
