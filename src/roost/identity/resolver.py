"""Bearer credentials -> Principal: users' JWT access tokens and API keys.

``create_app`` installs :func:`resolve_bearer` (``roost.domains`` lists it as identity's
resolver); this module registers nothing when imported.

Every request checks the session row (or key row) and the account in the database, so
logout, revocation, suspension and role changes take effect on the very next request, in
every process; the JWT only saves the lookup of an opaque token.  That check costs no
round trip of its own:

* the first time a process sees a credential, one statement looks it up, records its use
  when the last record is older than ``TOUCH_INTERVAL`` (a data-modifying CTE, SKIP
  LOCKED) and scopes the transaction to the principal it finds (``set_config`` of the
  row-level-security settings, the application role and the request's other transaction
  settings, such as HNSW's), after the request's ``BEGIN``;
* after that, the process remembers what the credential resolved to, and the request's
  ``BEGIN``, a call of ``roost_confirm_principal`` (migration 1000) and the scope go as
  one simple query: the database confirms that the credential is still live and still
  resolves to exactly that principal (user, admin flag, groups, rate-limit overrides),
  touches it when stale, and raises when anything differs, in which case the transaction
  is rolled back and the credential looked up afresh (a revoked one: 401).

So what a process remembers is only the answer it expects; the database decides every
request, in the round trip the request's ``BEGIN`` needed anyway.  The same lookup reads
the user's and the key's rate-limit overrides; only when a limit applies does the request
pay a round trip more (roost.identity.ratelimits).
"""

from __future__ import annotations

import functools
import hmac
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from asyncpg.exceptions import InvalidAuthorizationSpecificationError
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.transaction import (
    begin_with_settings,
    driver_connection,
    execute_before_begin,
    is_literal,
    note_settings,
)
from roost.errors import TooManyRequests, Unauthorized
from roost.http.auth import request_credential, scope_wanted
from roost.http.deps import get_keys, get_settings_dep
from roost.identity.ratelimits import Limiter, RequestLimits
from roost.identity.tenancy import checked_role, scope_settings
from roost.principal import Principal, PrincipalKind
from roost.security.tokens import decode_access_token, hash_api_key, looks_like_api_key

T = TypeVar("T")

# last_used_at is written at most this often per key or session.
TOUCH_INTERVAL_S = 60

# The credential's table, its conditions beyond "not revoked", and how many parameters
# those take (the settings' names and values follow them).  roost_confirm_principal
# (migration 1000) checks the same conditions for a credential resolved before: change
# them only together with a migration that replaces that function
# (tests/identity/test_confirmed_principal.py ends credentials in each way both see).
_CREDENTIALS: dict[str, tuple[str, str, int]] = {
    "api_key": ("api_keys", "c.key_hash = $1 AND (c.expires_at IS NULL OR c.expires_at > now())", 1),
    "session": ("sessions", "c.id = $1 AND c.user_id = $2 AND c.expires_at > now()", 2),
}


@functools.lru_cache(maxsize=64)
def _principal_sql(kind: str, setting_names: tuple[str, ...]) -> str:
    """Look up a live credential of an active user, touch it when stale, and set each of
    ``setting_names`` (transaction-local) from the parameters after the credential's.

    The scope's own values depend on the row, so they are computed here; the touch CTE is
    read before the settings, so it runs (as the connecting role) before the role switch."""
    table, where, taken = _CREDENTIALS[kind]
    # The rate-limit overrides ride along (roost.identity.ratelimits): free when unused.
    key_limits = ("c.rate_limit_rpm AS key_rpm, c.rate_limit_streams AS key_streams, "
                  "coalesce(c.root_key_id, c.id) AS key_family" if table == "api_keys"
                  else "NULL::int AS key_rpm, NULL::int AS key_streams, NULL::uuid AS key_family")
    sets = ", ".join(
        f"set_config(${taken + 2 * i + 1}, ${taken + 2 * i + 2}, true)"
        for i in range(len(setting_names))
    )
    scope = (
        "set_config('roost.user_id', hit.user_id::text, true), "
        "set_config('roost.is_admin', hit.is_admin::text, true), "
        "set_config('roost.group_ids', hit.group_text, true)"
    )
    return f"""
WITH hit AS (
  SELECT u.id AS user_id, (u.role = 'admin' OR u.is_superuser OR u.is_root) AS is_admin,
         c.id AS credential_id,
         u.rate_limit_rpm AS user_rpm, u.rate_limit_streams AS user_streams, {key_limits},
         (c.last_used_at IS NULL
          OR c.last_used_at < now() - interval '{TOUCH_INTERVAL_S} seconds') AS stale,
         coalesce((SELECT array_agg(m.group_id ORDER BY m.group_id::text)
                   FROM user_group_memberships m WHERE m.user_id = u.id), '{{}}'::uuid[]) AS groups
  FROM {table} c JOIN users u ON u.id = c.user_id
  WHERE {where} AND c.revoked_at IS NULL AND u.status = 'active' AND u.is_active
), touched AS (
  UPDATE {table} SET last_used_at = now()
  WHERE id = (SELECT t.id FROM {table} t JOIN hit ON t.id = hit.credential_id
              WHERE hit.stale FOR UPDATE OF t SKIP LOCKED)
  RETURNING 1
), scoped AS (
  SELECT hit.*, array_to_string(hit.groups, ',') AS group_text FROM hit
)
SELECT hit.user_id, hit.is_admin, hit.credential_id, hit.groups,
       hit.user_rpm, hit.user_streams, hit.key_rpm, hit.key_streams, hit.key_family,
       (SELECT count(*) FROM touched) AS touched, {scope}{", " + sets if sets else ""}
FROM scoped hit"""  # noqa: S608 (table and conditions are constants; values are parameters)


@dataclass(frozen=True, slots=True)
class _Resolved:
    """What a credential resolved to: its principal and the rate-limit overrides."""

    principal: Principal
    user_rpm: int | None
    user_streams: int | None
    key_rpm: int | None
    key_streams: int | None
    # The key whose counters the key's limits count against (its family's first key; a
    # key's root never changes, so the confirmation need not check it).
    key_family: uuid.UUID | None = None


# Credentials this process has resolved, by (kind, credential...): what the database is
# asked to confirm next time (least recently used dropped beyond the bound).  Never
# trusted alone: every request's BEGIN carries the confirmation (_confirm).
_RESOLVED: OrderedDict[tuple[str, ...], _Resolved] = OrderedDict()
RESOLVED_MAX = 4096


async def _authenticate(
    request: Request, session: AsyncSession, kind: PrincipalKind, *credential: Any
) -> Principal | None:
    """The principal behind a credential, with the request's transaction scoped to it."""
    extra: dict[str, str] = {}
    app_role = get_settings_dep(request).db_app_role
    if app_role:
        extra["role"] = checked_role(app_role)
    key = (kind, *(str(part) for part in credential))
    resolved = _RESOLVED.get(key)
    if resolved is not None:
        _RESOLVED.move_to_end(key)
    if resolved is None or not await _confirm(session, key, resolved, app_role, extra):
        resolved = await _look_up(session, kind, credential, app_role, extra)
        if resolved is None:
            _RESOLVED.pop(key, None)
            return None
        _RESOLVED[key] = resolved
        if len(_RESOLVED) > RESOLVED_MAX:
            _RESOLVED.popitem(last=False)
    await _take_request_limits(request, resolved)
    return resolved.principal


# Requests that take a credential away, and the list that shows which one, are never
# refused for the rate: a leaked key spending its user's whole minute must not keep the
# user from finding and revoking it (each is one indexed statement, no more than the
# unlimited 401s any guessed credential gets).
_REVOCATIONS: Final = frozenset({
    ("GET", "/api/v1/api-keys"), ("DELETE", "/api/v1/api-keys/{key_id}"),
    ("GET", "/api/v1/auth/sessions"), ("DELETE", "/api/v1/auth/sessions/{session_id}"),
    ("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/auth/logout-all"),
    ("GET", "/api/v1/users/{user}/sessions"), ("POST", "/api/v1/users/{user}/sessions/revoke"),
    ("GET", "/api/v1/users/{user}/devices"), ("DELETE", "/api/v1/users/{user}/devices/{device_id}"),
    ("POST", "/console/logout"),  # the console's Sign out, as the API's logout
})


def _revokes_a_credential(request: Request) -> bool:
    route = request.scope.get("route")
    return (request.method, getattr(route, "path", None)) in _REVOCATIONS


async def _take_request_limits(request: Request, resolved: _Resolved) -> None:
    """When a limit applies, one round trip on the limiter's own pool (once per request,
    even if something resolves the caller again); 429 when over."""
    if _revokes_a_credential(request):
        return
    limits = RequestLimits.build(
        resolved.principal, get_settings_dep(request), user_rpm=resolved.user_rpm,
        user_streams=resolved.user_streams, key_rpm=resolved.key_rpm,
        key_streams=resolved.key_streams, key_family=resolved.key_family)
    if limits is not None and getattr(request.state, "rate_limits", None) is None:
        await app_limiter(request.app).take_request(limits)
        request.state.rate_limits = limits


async def _look_up(
    session: AsyncSession, kind: PrincipalKind, credential: tuple[Any, ...],
    app_role: str | None, extra: dict[str, str],
) -> _Resolved | None:
    """The credential's principal by the lookup statement (which also touches it when
    stale and scopes the transaction), or None."""
    names = tuple(extra)
    args: list[Any] = list(credential)
    for name in names:
        args.extend((name, extra[name]))
    driver = await driver_connection(session)
    row = await driver.fetchrow(_principal_sql(kind, names), *args)
    if row is None:
        return None
    principal = Principal(
        user_id=row["user_id"], is_admin=bool(row["is_admin"]), kind=kind,
        api_key_id=row["credential_id"] if kind == "api_key" else None,
        session_id=row["credential_id"] if kind == "session" else None,
        group_ids=frozenset(row["groups"] or ()),
    )
    note_settings(session, {**scope_settings(principal, app_role=app_role), **extra})
    return _Resolved(principal, row["user_rpm"], row["user_streams"], row["key_rpm"],
                     row["key_streams"], row["key_family"])


async def _confirm(
    session: AsyncSession, key: tuple[str, ...], resolved: _Resolved, app_role: str | None,
    extra: dict[str, str],
) -> bool:
    """Begin the transaction with ``roost_confirm_principal`` (migration 1000) and the
    scope of the principal this credential resolved to before, in one simple query: the
    database checks that the credential is still live and resolves to exactly that
    principal (user, admin flag, groups, rate-limit overrides) and touches it when stale,
    before the scope's role switch.  When no scope is wanted (``scope_wanted``), the
    confirmation alone, outside the transaction.  True when confirmed; False, with
    nothing left begun, when anything changed or the transaction cannot begin this way
    (the caller looks the credential up then)."""
    confirm = _confirm_sql(key, resolved)
    if confirm is None:
        return False
    try:
        if not scope_wanted():  # the transaction ends at once: the statement alone
            return await execute_before_begin(session, confirm)
        return await begin_with_settings(
            session, {**scope_settings(resolved.principal, app_role=app_role), **extra},
            first=confirm)
    except InvalidAuthorizationSpecificationError:
        _RESOLVED.pop(key, None)  # revoked, expired or changed: looked up afresh
        return False


@functools.lru_cache(maxsize=RESOLVED_MAX)
def _confirm_sql(key: tuple[str, ...], resolved: _Resolved) -> str | None:
    """``SELECT roost_confirm_principal(...)`` for this credential and what it resolved
    to, every value a checked literal (None if one is not: looked up instead).  Built
    once per credential and principal (the same text every request of a caller sends)."""
    principal = resolved.principal
    kind, *credential = key
    arguments = [f"'{kind}'", *(f"'{part}'" for part in credential[:1]),
                 f"'{principal.user_id}'", "true" if principal.is_admin else "false",
                 "'" + ",".join(str(g) for g in principal.group_ids) + "'",
                 *(_int_literal(v) for v in (resolved.user_rpm, resolved.user_streams,
                                             resolved.key_rpm, resolved.key_streams))]
    if not all(is_literal(argument.strip("'")) for argument in arguments):
        return None
    return f"SELECT roost_confirm_principal({', '.join(arguments)})"


@dataclass(frozen=True, slots=True)
class KnownCaller:
    """A caller this process has resolved before, for a request that is one statement
    sent alone: its SQL function begins with ``roost_confirm_and_scope(confirmation,
    scope)`` (migration 1040), which has the database check the credential (as the
    request's ``BEGIN`` would) and scopes the statement's own implicit transaction, all
    in its one round trip.  When the database refuses the confirmation (SQLSTATE 28000:
    revoked, expired or changed) the statement did nothing: :meth:`run` forgets the
    caller and answers None, and the route serves the request the usual way, which looks
    the credential up afresh (401 when it is gone)."""

    principal: Principal
    confirmation: str
    """JSON: ``roost_confirm_principal``'s arguments, remembered for the credential."""
    scope: str
    """JSON: the ``set_config`` values of the principal's scope, the role included."""
    key: tuple[str, ...]
    request: Request

    async def run(self, statement: Callable[[str, str], Awaitable[T]]) -> T | None:
        """``statement(confirmation, scope)``, or None when the database refused it.  A
        refused request gives back what :func:`known_caller` charged to the limits it
        remembered: the usual path then charges the limits in force, or answers 401 for
        a revoked credential without charging its owner."""
        try:
            return await statement(self.confirmation, self.scope)
        except InvalidAuthorizationSpecificationError:
            _RESOLVED.pop(self.key, None)
            limits: RequestLimits | None = getattr(self.request.state, "rate_limits", None)
            if limits is not None:
                self.request.state.rate_limits = None
                await app_limiter(self.request.app).give_back(limits)
            return None


async def known_caller(request: Request) -> KnownCaller | None:
    """The request's caller if this process has resolved its credential before, without
    a statement (only the rate limiter's round trip, when a limit applies: 429 when
    over); None otherwise (no credential, the operator token, a credential not seen yet).
    A cookie-borne credential is CSRF-checked as :func:`request_credential` checks it."""
    token = request_credential(request)
    if token is None or hmac.compare_digest(token.encode(), get_keys(request).admin_token.encode()):
        return None
    key: tuple[str, ...]
    if looks_like_api_key(token):
        key = ("api_key", hash_api_key(token))
    elif token.count(".") == 2:
        user_id, session_id = _session_claims(request, token)
        key = ("session", str(session_id), str(user_id))
    else:
        return None
    resolved = _RESOLVED.get(key)
    if resolved is None:
        return None
    _RESOLVED.move_to_end(key)
    try:
        await _take_request_limits(request, resolved)
    except TooManyRequests:
        # Charged against the limits remembered with the caller, before the database has
        # confirmed them: an administrator may have lifted or raised them since.  The
        # usual path looks the caller up afresh and charges the limits in force (a
        # refused request was not charged), so a change applies on the next request.
        _RESOLVED.pop(key, None)
        return None
    app_role = get_settings_dep(request).db_app_role
    return KnownCaller(resolved.principal, _confirmation_json(key, resolved),
                       _scope_json(resolved.principal, app_role), key, request)


@functools.lru_cache(maxsize=RESOLVED_MAX)
def _confirmation_json(key: tuple[str, ...], resolved: _Resolved) -> str:
    """What ``roost_confirm_and_scope`` passes to ``roost_confirm_principal``: the same
    values :func:`_confirm_sql` writes as literals."""
    principal = resolved.principal
    kind, *credential = key
    return json.dumps({
        "kind": kind, "credential": credential[0], "user_id": str(principal.user_id),
        "is_admin": principal.is_admin,
        "group_ids": ",".join(str(g) for g in principal.group_ids),
        "user_rpm": resolved.user_rpm, "user_streams": resolved.user_streams,
        "key_rpm": resolved.key_rpm, "key_streams": resolved.key_streams})


@functools.lru_cache(maxsize=RESOLVED_MAX)
def _scope_json(principal: Principal, app_role: str | None) -> str:
    return json.dumps(scope_settings(principal, app_role=app_role))


def _int_literal(value: int | None) -> str:
    return "NULL" if value is None else str(int(value))


def app_limiter(app: Any) -> Limiter:
    """The application's rate limiter (its pool opens on first use; identity's start-up
    closes it at shutdown)."""
    limiter: Limiter | None = getattr(app.state, "rate_limiter", None)
    if limiter is None:
        limiter = Limiter(app.state.db.url, app.state.settings)
        app.state.rate_limiter = limiter
    return limiter


async def resolve_api_key(session: AsyncSession, token: str, request: Request) -> Principal | None:
    return await _authenticate(request, session, "api_key", hash_api_key(token))


def _session_claims(request: Request, token: str) -> tuple[uuid.UUID, uuid.UUID]:
    """An access token's user and session (401 if it is bad or expired)."""
    claims = decode_access_token(get_keys(request).secret_key, token)
    try:
        return uuid.UUID(str(claims["sub"])), uuid.UUID(str(claims["sid"]))
    except ValueError:
        raise Unauthorized("invalid token") from None


async def resolve_access_token(session: AsyncSession, token: str, request: Request) -> Principal | None:
    user_id, session_id = _session_claims(request, token)
    principal = await _authenticate(request, session, "session", session_id, user_id)
    if principal is None:
        raise Unauthorized("session has ended: sign in again")
    return principal


async def resolve_bearer(session: AsyncSession, token: str, request: Request) -> Principal | None:
    if looks_like_api_key(token):
        return await resolve_api_key(session, token, request)
    if token.count(".") == 2:  # a JWS compact serialisation
        return await resolve_access_token(session, token, request)
    return None


_STILL_LIVE: dict[str, str] = {
    table: f"""
SELECT coalesce((
  SELECT array_agg(m.group_id ORDER BY m.group_id::text)
  FROM user_group_memberships m WHERE m.user_id = u.id), '{{}}'::uuid[]) AS groups,
  (u.role = 'admin' OR u.is_superuser OR u.is_root) AS is_admin
FROM {table} c JOIN users u ON u.id = c.user_id
WHERE c.id = $1 AND c.user_id = $2 AND c.revoked_at IS NULL
  AND (c.expires_at IS NULL OR c.expires_at > now()) AND u.status = 'active' AND u.is_active
"""  # noqa: S608 (the table is a constant)
    for table in ("api_keys", "sessions")
}


async def still_signed_in(session: AsyncSession, principal: Principal) -> bool:
    """Whether the credential a long-lived response was opened with still stands for the
    same principal (not revoked, expired, suspended, re-roled or moved between groups):
    a stream that never ends by itself (a run's events) asks this whenever it wakes, as
    every new request's resolution would.  Run in a transaction scoped to ``principal``
    (RLS lets a user read their own credentials and memberships); the operator and the
    system have no credential row."""
    if principal.kind == "api_key":
        table, credential = "api_keys", principal.api_key_id
    elif principal.kind == "session":
        table, credential = "sessions", principal.session_id
    else:
        return True
    driver = await driver_connection(session)
    row = await driver.fetchrow(_STILL_LIVE[table], credential, principal.user_id)
    return (row is not None and bool(row["is_admin"]) == principal.is_admin
            and frozenset(row["groups"] or ()) == principal.group_ids)
