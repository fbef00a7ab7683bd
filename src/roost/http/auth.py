"""Who is calling: the principal behind the ``Authorization: Bearer`` header.

The foundation knows one credential, the bootstrap operator token (``admin_token`` in
the key files).  The identity domain adds users' JWTs and API keys by registering a
resolver with ``register_resolver``.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import Forbidden, Unauthorized
from roost.http.deps import DbSession, get_keys, get_settings_dep
from roost.identity.tenancy import apply_principal


@dataclass(frozen=True)
class Principal:
    """The acting identity that services check on every read and write."""

    user_id: uuid.UUID | None
    is_admin: bool
    kind: str  # "operator" | "session" | "api_key" | "job" (a background job acting for a user)
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    group_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)


OPERATOR = Principal(user_id=None, is_admin=True, kind="operator")

Resolver = Callable[[AsyncSession, str, Request], Awaitable[Principal | None]]
_resolvers: list[Resolver] = []


def register_resolver(resolver: Resolver) -> None:
    """Add a bearer-token resolver (identity registers JWT and API-key resolvers)."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


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
    admin_token = get_keys(request).admin_token
    principal: Principal | None = None
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        principal = OPERATOR
    for resolve in _resolvers:
        if principal is not None:
            break
        principal = await resolve(session, token, request)
    if principal is None:
        raise Unauthorized("invalid or expired credentials")
    # Row-level security: the rest of this request's transaction acts for the principal
    # (SET LOCAL role and settings; see roost.identity.tenancy).
    await apply_principal(session, principal, app_role=get_settings_dep(request).db_app_role)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this action needs an administrator")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
