"""FastAPI dependencies of the chat and gateway routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from roost.http.auth import Principal, current_principal
from roost.http.deps import get_database, get_keys, get_settings_dep
from roost.llm.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The application's chat/LLM runtime, built on first use."""
    runtime: Runtime | None = getattr(request.app.state, "llm_runtime", None)
    if runtime is None:
        runtime = Runtime.build(
            get_database(request), get_settings_dep(request), get_keys(request)
        )
        request.app.state.llm_runtime = runtime
    return runtime


async def principal_outside_transaction(request: Request) -> Principal:
    """The caller, resolved in a transaction of its own that is over when this returns.

    Routes that wait for a model use this instead of ``CurrentPrincipal`` so no
    database connection sits idle in a transaction while the provider works.
    """
    async with get_database(request).transaction() as session:
        return await current_principal(request, session)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerPrincipal = Annotated[Principal, Depends(principal_outside_transaction)]
