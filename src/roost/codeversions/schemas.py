"""Request bodies and answers of the code versions API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from roost.inputs import StrictInput, is_blank

ValidationStatus = Literal["pending", "running", "passed", "failed", "error", "timeout"]


class CodeVersionCreate(StrictInput):
    chat_session_id: uuid.UUID | None = Field(
        default=None, description="The chat session whose repository gets the commit")
    run_id: uuid.UUID | None = Field(
        default=None, description="The run whose repository gets the commit (give one of the two)")
    files: dict[str, str | None] = Field(
        min_length=1, description="Path (relative, '/'-separated) -> new text content; null "
        "deletes the file")
    message: str = Field(min_length=1, max_length=10_000, pattern=r"^[^\x00]*$",
                         description="The commit message (no NUL characters)")
    branch: str = Field(default="main", min_length=1, max_length=200)
    run_checks: bool = Field(default=False,
                             description="Also queue the validation (as POST .../validate)")

    @model_validator(mode="after")
    def _one_repository(self) -> Self:
        if (self.chat_session_id is None) == (self.run_id is None):
            raise ValueError("give exactly one of chat_session_id and run_id")
        if is_blank(self.message):
            raise ValueError("message must not be blank")
        return self


class FileChangeOut(BaseModel):
    path: str
    change: Literal["added", "modified", "deleted"]
    additions: int
    deletions: int


class CheckResultOut(BaseModel):
    argv: list[str]
    outcome: Literal["passed", "failed", "timeout", "flooded", "error"]
    exit_code: int | None
    duration_ms: int
    output_tail: str
    truncated: bool


class CodeVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    chat_session_id: uuid.UUID | None
    run_id: uuid.UUID | None
    author_id: uuid.UUID | None
    version_hash: str = Field(description="The commit id in the repository")
    parent_hash: str | None
    branch: str
    commit_message: str | None
    files_changed: list[FileChangeOut]
    diff_summary: str | None
    validation_status: ValidationStatus
    test_results: dict[str, CheckResultOut] = Field(
        description="Per check (its command line): outcome, exit code, duration, output tail")
    validation_task_id: uuid.UUID | None
    validated_at: datetime | None
    created_at: datetime


class CodeVersionDetail(CodeVersionOut):
    diff: str = Field(description="The commit's unified diff against its parent")
    diff_truncated: bool
