"""Bearer credentials -> Principal: users' JWT access tokens and API keys.

``create_app`` installs :func:`resolve_bearer` (``roost.domains`` lists it as identity's
resolver); this module registers nothing when imported.

Every request re-reads the session row (or key row) and the account, so logout,
revocation, suspension and role changes take effect on the very next request, in every
process; the JWT only saves the lookup of an opaque token.  That re-read costs no round
trip of its own: one statement looks the credential up, records its use when the last
record is older than ``TOUCH_INTERVAL`` (a data-modifying CTE, SKIP LOCKED) and scopes
the transaction to the principal it finds (``set_config`` of the row-level-security
settings, the application role and the request's other transaction settings, such as
HNSW's).  So no principal is cached in the process: the database answers for it in the
round trip the request needed anyway.  The same statement reads the user's and the key's
rate-limit overrides; only when a limit applies does the request pay a round trip more
(roost.identity.ratelimits).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.transaction import driver_connection, note_settings
from roost.errors import Unauthorized
from roost.http.deps import get_keys, get_settings_dep, transaction_settings
from roost.identity.ratelimits import Limiter, RequestLimits
from roost.identity.tenancy import checked_role, scope_settings
from roost.principal import Principal, PrincipalKind
from roost.security.tokens import decode_access_token, hash_api_key, looks_like_api_key

# last_used_at is written at most this often per key or session.
TOUCH_INTERVAL_S = 60

# The credential's table, its conditions beyond "not revoked", and how many parameters
# those take (the settings' names and values follow them).
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
    key_limits = ("c.rate_limit_rpm AS key_rpm, c.rate_limit_streams AS key_streams"
                  if table == "api_keys" else "NULL::int AS key_rpm, NULL::int AS key_streams")
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
       hit.user_rpm, hit.user_streams, hit.key_rpm, hit.key_streams,
       (SELECT count(*) FROM touched) AS touched, {scope}{", " + sets if sets else ""}
FROM scoped hit"""  # noqa: S608 (table and conditions are constants; values are parameters)


async def _authenticate(
    request: Request, session: AsyncSession, kind: PrincipalKind, *credential: Any
) -> Principal | None:
    """The principal behind a credential, with the request's transaction scoped to it."""
    extra: dict[str, str] = dict(transaction_settings(request))
    app_role = get_settings_dep(request).db_app_role
    if app_role:
        extra["role"] = checked_role(app_role)
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
    limits = RequestLimits.build(
        principal, get_settings_dep(request), user_rpm=row["user_rpm"],
        user_streams=row["user_streams"], key_rpm=row["key_rpm"], key_streams=row["key_streams"])
    # A limit applies: one round trip on the limiter's own pool (once per request, even
    # if something resolves the caller again).
    if limits is not None and getattr(request.state, "rate_limits", None) is None:
        await app_limiter(request.app).take_request(limits)  # 429 when over
        request.state.rate_limits = limits
    return principal


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


async def resolve_access_token(session: AsyncSession, token: str, request: Request) -> Principal | None:
    claims = decode_access_token(get_keys(request).secret_key, token)  # 401 if bad/expired
    try:
        user_id = uuid.UUID(str(claims["sub"]))
        session_id = uuid.UUID(str(claims["sid"]))
    except ValueError:
        raise Unauthorized("invalid token") from None
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
