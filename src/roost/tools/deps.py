"""FastAPI dependencies of the tools routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from roost.db.engine import Database
from roost.http.deps import get_database, get_keys, get_settings_dep
from roost.knowledge.config import KnowledgeConfig
from roost.security.crypto import SecretBox
from roost.tools.config import ToolsConfig


@dataclass(frozen=True)
class ToolsEnv:
    database: Database
    cfg: ToolsConfig
    box: SecretBox
    knowledge: KnowledgeConfig | None


async def get_tools_env(request: Request) -> ToolsEnv:
    env: ToolsEnv | None = getattr(request.app.state, "tools_env", None)
    if env is None:
        settings = get_settings_dep(request)
        try:
            knowledge: KnowledgeConfig | None = KnowledgeConfig.from_settings(settings)
        except Exception:  # a misconfigured embedder only disables the search tool
            knowledge = None
        env = ToolsEnv(
            database=get_database(request), cfg=ToolsConfig.from_settings(settings),
            box=SecretBox.from_keys(get_keys(request).secrets_key), knowledge=knowledge,
        )
        request.app.state.tools_env = env
    return env


ToolsEnvDep = Annotated[ToolsEnv, Depends(get_tools_env)]
