"""Who is calling: the FastAPI dependencies that build the acting ``Principal`` from the
``Authorization: Bearer`` header, or in a browser from the console's session cookie.

The cookie (``roost_session``, HttpOnly, SameSite=Strict) carries the same signed access
token a bearer client sends, so the same resolvers and the same row-level security apply.
A cookie is sent by the browser on its own, so every state-changing request that
authenticates with it must also prove it comes from Roost's own pages: the
``X-CSRF-Token`` header must equal the ``roost_csrf`` cookie (double submit; the console
puts the value in its pages, another site can neither read nor set it), else 403.

The principal itself is plain data in ``roost.principal`` (services use it without
importing the web layer).  The foundation knows one credential, the bootstrap operator
token (``admin_token`` in the key files).  Everything else is wired by ``create_app``
with :func:`install_authentication`: the resolvers that turn other credentials into a
principal (identity's JWTs and API keys) and the step that scopes the request's
transaction to it (identity's row-level security).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.engine import Database
from roost.errors import Forbidden, Unauthorized
from roost.http.deps import DbSession, get_keys, get_settings_dep, request_session
from roost.principal import OPERATOR, Principal
from roost.security.tokens import looks_like_access_token

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


SESSION_COOKIE = "roost_session"
CSRF_COOKIE = "roost_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_csrf(request: Request) -> None:
    """403 unless the request's ``X-CSRF-Token`` header matches its ``roost_csrf`` cookie."""
    expected = request.cookies.get(CSRF_COOKIE) or ""
    supplied = request.headers.get(CSRF_HEADER) or ""
    if not expected or not hmac.compare_digest(expected.encode(), supplied.encode()):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def request_credential(request: Request) -> str | None:
    """The bearer token, else the session cookie (CSRF-checked on state changes).  The
    cookie counts only when it holds what the console puts there, a session's access
    token: an API key or the operator token planted in it (by a sibling subdomain, say)
    would sign the browser into someone else's account or as the operator."""
    token = bearer_token(request)
    if token is not None:
        return token
    cookie = session_cookie(request)
    if cookie is not None and request.method not in SAFE_METHODS:
        check_csrf(request)
    return cookie


def session_cookie(request: Request) -> str | None:
    """The console's session cookie when it holds what the console puts there."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or not looks_like_access_token(cookie) or hmac.compare_digest(
            cookie.encode(), get_keys(request).admin_token.encode()):
        return None
    return cookie


def bearer_token(request: Request) -> str | None:
    """The ``Authorization: Bearer`` token.  Another scheme is not Roost's: a reverse
    proxy's Basic credentials, which a browser then sends with every request of the
    console, must not turn its cookie-authenticated calls into 401s (no cookie: the
    request is unauthenticated, a 401 all the same)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    if not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


_UNSCOPED: ContextVar[bool] = ContextVar("roost_resolve_unscoped", default=False)


def scope_wanted() -> bool:
    """Whether the resolver at work must leave the transaction scoped to the principal it
    finds.  False within :func:`caller_outside_transaction`, whose transaction ends as
    soon as the principal is known: a resolver may then confirm a credential with one
    statement outside any transaction."""
    return not _UNSCOPED.get()


async def current_principal(request: Request, session: DbSession) -> Principal:
    principal = await _resolve(request, session, request_credential(request))
    return await _scoped(request, session, principal)


async def cookie_principal(request: Request, session: AsyncSession) -> Principal | None:
    """The console's signed-in user, from the session cookie alone (a bearer token the
    request also carries does not make it someone else's page, nor keep its sign-out from
    ending the cookie's session); the transaction scoped to them.  None without a valid
    session cookie."""
    cookie = session_cookie(request)
    if cookie is None:
        return None
    try:
        principal = await _resolve(request, session, cookie)
    except Unauthorized:
        return None
    return await _scoped(request, session, principal)


async def _scoped(request: Request, session: AsyncSession, principal: Principal) -> Principal:
    # Row-level security: the rest of this request's transaction acts for the principal
    # (SET LOCAL role and settings; see roost.identity.tenancy).
    authentication: Authentication = request.app.state.authentication
    await authentication.scope(session, principal, app_role=get_settings_dep(request).db_app_role)
    request.state.principal = principal  # whose write this request is (read replicas)
    return principal


@contextlib.asynccontextmanager
async def scoped_request_transaction(
    request: Request,
) -> AsyncIterator[tuple[AsyncSession, Principal]]:
    """``DbSession`` with ``CurrentPrincipal``, for a route that decides in its body whether
    it needs them (one that first tries a write that confirms a caller its process knows
    by itself: roost.identity.resolver.KnownCaller): the request's transaction, begun by
    authenticating the caller and scoped to it, committed when the block ends without
    error."""
    async with request_session(request) as session:
        yield session, await current_principal(request, session)


async def caller_outside_transaction(request: Request, database: Database) -> Principal:
    """The caller, resolved in a transaction of its own that is over when this returns
    (routes that wait for a model hold no transaction meanwhile), and not scoped: the
    resolvers know (:func:`scope_wanted`), so a credential its process has resolved
    before costs one statement and no ``BEGIN``/``COMMIT``."""
    unscoped = _UNSCOPED.set(True)
    try:
        async with database.transaction() as session:
            principal = await _resolve(request, session, request_credential(request))
    finally:
        _UNSCOPED.reset(unscoped)
    request.state.principal = principal
    return principal


async def _resolve(request: Request, session: AsyncSession, token: str | None) -> Principal:
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
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this action needs an administrator")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
