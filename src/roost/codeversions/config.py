"""What the codeversions services need from ``Settings``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from roost.codeversions.checks import Limits
from roost.config import Settings

_MB = 1024 * 1024


@dataclass(frozen=True)
class CodeVersionsConfig:
    repos_root: Path
    checks: tuple[tuple[str, ...], ...] = ()
    limits: Limits = field(default_factory=Limits)
    max_files: int = 200
    max_file_bytes: int = _MB
    max_commit_bytes: int = 8 * _MB
    max_diff_bytes: int = _MB  # the diff returned with a version (GET /code-versions/{id})
    max_checkout_bytes: int = 512 * _MB  # the files a validation writes to its scratch dir

    @classmethod
    def from_settings(cls, settings: Settings) -> CodeVersionsConfig:
        return cls(
            repos_root=settings.data_dir / "repos",
            checks=tuple(tuple(argv) for argv in settings.code_checks if argv),
            limits=Limits(
                timeout_s=settings.code_check_timeout_s,
                max_output_bytes=settings.code_check_max_output_bytes,
                cpu_s=settings.code_check_cpu_s,
                memory_bytes=settings.code_check_memory_mb * _MB,
                file_bytes=settings.code_check_max_file_mb * _MB,
                processes=settings.code_check_max_processes),
            max_files=settings.code_max_files, max_file_bytes=settings.code_max_file_bytes,
            max_commit_bytes=settings.code_max_commit_bytes)
