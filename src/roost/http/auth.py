"""Who is calling: the FastAPI dependencies that build the acting ``Principal`` from the
``Authorization: Bearer`` header.

The principal itself is plain data in ``roost.principal`` (services use it without
importing the web layer).  The foundation knows one credential, the bootstrap operator
token (``admin_token`` in the key files).  Everything else is wired by ``create_app``
with :func:`install_authentication`: the resolvers that turn other credentials into a
principal (identity's JWTs and API keys) and the step that scopes the request's
transaction to it (identity's row-level security).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import Forbidden, Unauthorized
from roost.http.deps import DbSession, get_keys, get_settings_dep
from roost.principal import OPERATOR, Principal

Resolver = Callable[[AsyncSession, str, Request], Awaitable[Principal | None]]
"""A bearer token -> the principal it proves, ``None`` when it is not this resolver's kind
of credential (raise ``Unauthorized`` when it is but is invalid)."""


class ScopeTransaction(Protocol):
    """Makes the rest of the request's transaction act for the principal."""

    async def __call__(
        self, session: AsyncSession, principal: Principal, *, app_role: str | None = ...
    ) -> None: ...


@dataclass(frozen=True)
class Authentication:
    """How an app authenticates: the operator token, then each resolver in order; then
    ``scope`` applies the principal to the request's transaction."""

    resolvers: tuple[Resolver, ...]
    scope: ScopeTransaction


def install_authentication(app: FastAPI, authentication: Authentication) -> None:
    app.state.authentication = authentication


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


async def current_principal(request: Request, session: DbSession) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    authentication: Authentication | None = getattr(request.app.state, "authentication", None)
    if authentication is None:  # fail closed: never serve a principal without its scope
        raise RuntimeError("no authentication installed (create_app calls install_authentication)")
    admin_token = get_keys(request).admin_token
    principal: Principal | None = None
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        principal = OPERATOR
    for resolve in authentication.resolvers:
        if principal is not None:
            break
        principal = await resolve(session, token, request)
    if principal is None:
        raise Unauthorized("invalid or expired credentials")
    # Row-level security: the rest of this request's transaction acts for the principal
    # (SET LOCAL role and settings; see roost.identity.tenancy).
    await authentication.scope(session, principal, app_role=get_settings_dep(request).db_app_role)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this action needs an administrator")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
