"""Commands that act as a user (``--user NAME``, default: the root account): the principal
they act as, transactions in that user's row-level-security scope, and the request context
their audit records carry.  Every domain's CLI that works on a user's rows uses this."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, TypeVar

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.clitools import fail, with_database
from roost.config import Settings, get_settings
from roost.context import RequestContext, set_context
from roost.db.engine import Database
from roost.errors import Forbidden, NotFound, RoostError
from roost.identity.accounts import find_user
from roost.identity.common import principal_for
from roost.identity.models import User, UserGroupMembership
from roost.identity.tenancy import apply_principal
from roost.principal import Principal

T = TypeVar("T")

UserOpt = Annotated[str | None, typer.Option(
    "--user", "-u", help="Act as this user (username or e-mail); default: the root user.")]


@dataclass(frozen=True)
class Env:
    database: Database
    settings: Settings
    principal: Principal

    @asynccontextmanager
    async def scoped(self) -> AsyncIterator[AsyncSession]:
        """A transaction in the user's row-level-security scope."""
        async with self.database.transaction() as session:
            await apply_principal(session, self.principal, app_role=self.settings.db_app_role)
            yield session


async def acting_principal(database: Database, login: str | None) -> Principal:
    """The active account named ``login`` (the root account when None), as a principal."""
    async with database.transaction() as session:
        user = (await find_user(session, login) if login is not None else
                await session.scalar(select(User).where(User.is_root).limit(1)))
        if user is None:
            raise NotFound(f"no user {login!r}" if login else
                           "no root user exists: pass --user NAME to act as a user")
        if user.status != "active" or not user.is_active:
            raise Forbidden(f"the account {user.username!r} is not active")
        groups = frozenset((await session.scalars(select(UserGroupMembership.group_id).where(
            UserGroupMembership.user_id == user.id))).all())
    return principal_for(user, group_ids=groups)


def run_as(user: str | None, fn: Callable[[Env], Awaitable[T]]) -> T:
    """Run ``fn`` on the database as ``user``; a domain error is the command's failure."""
    settings = get_settings()

    async def go(database: Database) -> T:
        set_context(RequestContext(request_id=f"cli-{uuid.uuid4().hex[:12]}",
                                   user_agent="roost-cli"))
        return await fn(Env(database, settings, await acting_principal(database, user)))

    try:
        return with_database(go, settings)
    except RoostError as exc:
        raise fail(exc.title, exc.detail) from exc
