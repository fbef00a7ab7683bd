"""Worker settings: ``ROOST_WORKER_*`` environment variables; ``roost worker`` options win."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ROOST_WORKER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    concurrency: int = Field(default=8, ge=1, le=1000, description="Jobs run at once")
    queues: str | None = Field(
        default=None, description="Comma-separated queue names; unset: every queue"
    )
    lease_s: float = Field(
        default=30.0, ge=0.5, le=86_400, description="A job is presumed lost this long after its worker's "
        "last heartbeat; heartbeats come every third of it"
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="Fallback when no NOTIFY arrives (and for jobs "
        "scheduled in the future)"
    )
    shutdown_timeout_s: float = Field(
        default=30.0, ge=0, le=86_400, description="On SIGTERM, how long in-flight jobs may finish "
        "before they are released back to the queue"
    )
    schedules: bool = Field(default=True, description="Fire periodic jobs from this worker")

    @field_validator("queues")
    @classmethod
    def _names_a_queue(cls, value: str | None) -> str | None:
        """Set to names that name none (","), it must not mean every queue (what unset
        means) for ``roost worker`` nor for the worker in ``roost serve``; "" is unset."""
        from roost.tasks.handlers import valid_queue_name
        from roost.tasks.worker import parse_queues

        if not value:
            return None
        names = parse_queues(value)
        if names is None:
            raise ValueError("no queue names given; leave it unset to take jobs from every queue")
        bad = [name for name in names if not valid_queue_name(name)]
        if bad:
            raise ValueError(f"invalid queue name {bad[0][:80]!r}: a queue name is 1-64 "
                             "characters without NUL characters")
        return value
    completed_retention_days: int | None = Field(
        default=14, ge=1, le=36_500, description="Completed and cancelled jobs older than this are "
        "deleted by the tasks.prune schedule; unset keeps them"
    )
