"""What the tools services need from settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roost.config import Settings


@dataclass(frozen=True)
class ToolsConfig:
    allowed_hosts: frozenset[str] = frozenset()
    call_timeout_s: float = 60.0
    max_output_bytes: int = 256 * 1024
    app_role: str = "roost_app"
    stdio_idle_s: float = 300.0
    stdio_max_processes: int = 32
    stdio_start_timeout_s: float = 60.0
    # Where lsp_diagnostics reads files (None: no workspace, the tool refuses).
    workspace_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ToolsConfig:
        hosts = frozenset(
            h.strip().lower().strip("[]") for h in settings.tools_allowed_hosts.split(",") if h.strip()
        )
        return cls(
            allowed_hosts=hosts,
            call_timeout_s=settings.tools_call_timeout_s,
            max_output_bytes=settings.tools_max_output_bytes,
            app_role=settings.db_app_role,
            stdio_idle_s=settings.tools_stdio_idle_s,
            stdio_max_processes=settings.tools_stdio_max_processes,
            stdio_start_timeout_s=settings.tools_stdio_start_timeout_s,
            workspace_dir=(settings.tools_workspace_dir or settings.data_dir / "workspace")
            .expanduser(),
        )

    def host_allowed(self, host: str | None) -> bool:
        """Whether an administrator let ``host`` be on loopback or a private network."""
        return bool(host) and (host or "").lower().strip("[]") in self.allowed_hosts
