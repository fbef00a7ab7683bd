"""FastAPI dependencies of the chat and gateway routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from roost.http.auth import caller_outside_transaction
from roost.http.deps import get_database
from roost.llm.gateway import LLMGateway
from roost.principal import Principal


def app_gateway(app: FastAPI) -> LLMGateway:
    """The application's LLM gateway, built on first use (start-up hooks, routes)."""
    gateway: LLMGateway | None = getattr(app.state, "llm_gateway", None)
    if gateway is None:
        gateway = LLMGateway.build(app.state.db, app.state.settings, app.state.keys)
        app.state.llm_gateway = gateway
    return gateway


def get_gateway(request: Request) -> LLMGateway:
    return app_gateway(request.app)


async def principal_outside_transaction(request: Request) -> Principal:
    """The caller, resolved in a transaction of its own that is over when this returns.

    Routes that wait for a model use this instead of ``CurrentPrincipal`` so no
    database connection sits idle in a transaction while the provider works.
    """
    return await caller_outside_transaction(request, get_database(request))


async def gateway_dep(request: Request) -> LLMGateway:
    return get_gateway(request)


GatewayDep = Annotated[LLMGateway, Depends(gateway_dep)]
CallerPrincipal = Annotated[Principal, Depends(principal_outside_transaction)]
