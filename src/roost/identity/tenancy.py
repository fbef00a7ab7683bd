"""Row-level security: who the current transaction acts for.

Services check the principal first; PostgreSQL row-level security is the second wall,
for the query that forgot its ``WHERE user_id = ...``.  The pattern (see
docs/architecture.md, "Tenancy and row-level security"):

* ``apply_principal(session, principal)`` runs once per transaction, before the first
  tenant query.  It sets ``roost.user_id``, ``roost.is_admin`` and ``roost.group_ids``
  with ``set_config(..., true)`` (= ``SET LOCAL``: gone at commit/rollback, so safe
  under PgBouncer transaction pooling) and switches the transaction to the
  ``roost_app`` role, which has no BYPASSRLS and owns nothing, so policies apply.
* SQL functions from migration 0200 read those settings inside policies:
  ``roost_current_user_id()``, ``roost_is_admin()``, ``roost_user_group_ids()``, and
  ``roost_row_visible(owner_id, group_id)`` combining them.
* Transactions without a principal (login, token checks, workers, CLI) stay on the
  connecting role, the schema owner, which RLS does not restrict.

``roost.http.auth.current_principal`` calls :func:`apply_principal` (which ``create_app``
installs as the authentication's scope) on the request's session, so every route that
depends on ``CurrentPrincipal`` is scoped automatically.  Background jobs acting for a
user call it themselves.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from roost.db.transaction import (
    begin_with_settings,
    beginning_with_settings,
    local_settings,
    note_settings,
    settings_on_begin,
)

DEFAULT_APP_ROLE = "roost_app"
_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# One round trip.  set_config('role', ...) is SET LOCAL ROLE with a bind parameter.
_APPLY = text(
    "SELECT set_config('roost.user_id', :user_id, true), "
    "set_config('roost.is_admin', :is_admin, true), "
    "set_config('roost.group_ids', :group_ids, true)"
)
_APPLY_WITH_ROLE = text(
    "SELECT set_config('roost.user_id', :user_id, true), "
    "set_config('roost.is_admin', :is_admin, true), "
    "set_config('roost.group_ids', :group_ids, true), "
    "set_config('role', :role, true)"
)
_RESET = text(
    "SELECT set_config('roost.user_id', '', true), set_config('roost.is_admin', '', true), "
    "set_config('roost.group_ids', '', true), set_config('role', 'none', true)"
)


class PrincipalLike(Protocol):
    """What RLS needs of a principal (``roost.principal.Principal`` satisfies it)."""

    @property
    def user_id(self) -> uuid.UUID | None: ...
    @property
    def is_admin(self) -> bool: ...
    @property
    def group_ids(self) -> frozenset[uuid.UUID]: ...


def _group_text(group_ids: Iterable[uuid.UUID]) -> str:
    return ",".join(sorted(str(g) for g in group_ids))


async def apply_principal(
    session: AsyncSession,
    principal: PrincipalLike,
    *,
    app_role: str | None = DEFAULT_APP_ROLE,
    group_ids: Iterable[uuid.UUID] | None = None,
) -> None:
    """Scope the session's current transaction to ``principal`` (``SET LOCAL``).

    ``app_role`` is the role to switch to (``Settings.db_app_role``); ``None`` or ``""``
    keeps the connecting role, for deployments that connect as the application role
    directly.  ``group_ids`` overrides the principal's groups (after a membership
    change within the same transaction).
    """
    params = scope_settings(principal, app_role=app_role, group_ids=group_ids)
    already = local_settings(session)
    if all(already.get(name) == value for name, value in params.items()):
        return  # scoped in this transaction's authentication round trip
    if await begin_with_settings(session, params):
        return  # sent with the transaction's BEGIN
    if app_role:
        await session.execute(_APPLY_WITH_ROLE, {
            "user_id": params["roost.user_id"], "is_admin": params["roost.is_admin"],
            "group_ids": params["roost.group_ids"], "role": params["role"]})
    else:
        await session.execute(_APPLY, {
            "user_id": params["roost.user_id"], "is_admin": params["roost.is_admin"],
            "group_ids": params["roost.group_ids"]})
    note_settings(session, params)


def scope_lazily(
    session: AsyncSession,
    principal: PrincipalLike,
    *,
    app_role: str | None = DEFAULT_APP_ROLE,
) -> None:
    """:func:`apply_principal`, sent when the session's transaction begins on a
    connection, before its first statement (each transaction of the session, if it has
    several): a transaction that finds everything in the process's caches sends nothing
    at all, and no statement can run unscoped."""
    params = scope_settings(principal, app_role=app_role)
    statement = _APPLY_WITH_ROLE if app_role else _APPLY
    values = {"user_id": params["roost.user_id"], "is_admin": params["roost.is_admin"],
              "group_ids": params["roost.group_ids"]}
    if app_role:
        values["role"] = params["role"]

    def began(_session: Session, _transaction: Any, connection: Connection) -> None:
        if beginning_with_settings(session):
            return  # a driver-level statement comes first: the scope goes with its BEGIN
        connection.execute(statement, values)
        note_settings(session, params)

    settings_on_begin(session, params)
    event.listen(session.sync_session, "after_begin", began)


def scope_settings(
    principal: PrincipalLike,
    *,
    app_role: str | None = DEFAULT_APP_ROLE,
    group_ids: Iterable[uuid.UUID] | None = None,
) -> dict[str, str]:
    """The ``SET LOCAL`` values that scope a transaction to ``principal`` (``role`` only
    when ``app_role`` is set): what :func:`apply_principal` sends, for callers that send
    them within another statement (authentication) and record them with
    ``roost.db.transaction.note_settings``."""
    values = {
        "roost.user_id": str(principal.user_id) if principal.user_id is not None else "",
        "roost.is_admin": "true" if principal.is_admin else "false",
        "roost.group_ids": _group_text(principal.group_ids if group_ids is None else group_ids),
    }
    if app_role:
        values["role"] = checked_role(app_role)
    return values


def checked_role(app_role: str) -> str:
    """``app_role`` when it is a plain role name (it is sent as a setting's value)."""
    if not _ROLE_RE.fullmatch(app_role):
        raise ValueError(f"database application role name {app_role!r} is not valid")
    return app_role


async def clear_principal(session: AsyncSession) -> None:
    """Leave the principal's scope within the transaction (back to the owner role).

    For the few system steps inside a user's transaction that must see across tenants
    (never to read data on a user's behalf).  Requires the connecting role to be the
    owner; with a separate application login role it has no effect on visibility.
    """
    await session.execute(_RESET)
    note_settings(session, {"roost.user_id": "", "roost.is_admin": "", "roost.group_ids": "",
                            "role": "none"})


async def current_scope(session: AsyncSession) -> tuple[str, uuid.UUID | None, bool]:
    """(current role, user id, is_admin) as PostgreSQL sees them (tests, diagnostics)."""
    row = (
        await session.execute(
            text("SELECT current_user, roost_current_user_id(), roost_is_admin()")
        )
    ).one()
    return str(row[0]), row[1], bool(row[2])
