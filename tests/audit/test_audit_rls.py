"""The audit log under row-level security, as the application role."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from roost.audit import service
from roost.audit.models import AuditLog
from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.principal import Principal


def _as(user_id: uuid.UUID | None, *, admin: bool = False) -> Principal:
    return Principal(user_id=user_id, is_admin=admin, kind="session")


async def test_users_read_their_own_records_and_admins_all(database: Database) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for who in (alice, bob, alice):
        async with database.transaction() as s:
            # written as the app role, like a request: the chain still links across tenants
            await apply_principal(s, _as(who))
            await service.record(s, "thing.touch", user_id=who)

    async with database.transaction() as s:
        await apply_principal(s, _as(bob))
        mine = (await s.scalars(select(AuditLog.user_id))).all()
        theirs = (await s.execute(text("SELECT * FROM audit_logs WHERE user_id = :a"),
                                  {"a": alice})).all()
    assert mine == [bob] and theirs == []

    async with database.transaction() as s:
        await apply_principal(s, _as(None, admin=True))
        assert len((await s.scalars(select(AuditLog.id))).all()) == 3
        report = await service.verify_chain(s)
    assert report.ok and report.rows_checked == 3


@pytest.mark.parametrize("statement", [
    "UPDATE audit_logs SET action = 'forged'",
    "DELETE FROM audit_logs",
    "TRUNCATE audit_logs",
])
async def test_app_role_cannot_rewrite_history(database: Database, statement: str) -> None:
    async with database.transaction() as s:
        await service.record(s, "thing.create")
    with pytest.raises(DBAPIError, match="permission denied"):
        async with database.transaction() as s:
            await apply_principal(s, _as(None, admin=True))
            await s.execute(text(statement))


async def test_user_token_cannot_use_the_admin_audit_api(
    client: httpx.AsyncClient, database: Database
) -> None:
    from tests.support.identity import make_user

    _, headers = await make_user(database)
    assert (await client.get("/api/v1/audit/logs", headers=headers)).status_code == 403
    assert (await client.get("/api/v1/audit/verify", headers=headers)).status_code == 403


async def test_a_system_event_inside_a_users_transaction_is_recorded(database: Database) -> None:
    """The row is not visible to the acting user, yet the insert must succeed."""
    bob = uuid.uuid4()
    async with database.transaction() as s:
        await apply_principal(s, _as(bob))
        entry = await service.record(s, "system.notice", category="system", user_id=None)
        other = await service.record(s, "thing.touch", user_id=uuid.uuid4())
    assert entry["action"] == "system.notice" and other["action"] == "thing.touch"
    async with database.transaction() as s:
        rows = (await s.scalars(select(AuditLog.action).order_by(AuditLog.seq))).all()
        report = await service.verify_chain(s)
    assert rows == ["system.notice", "thing.touch"] and report.ok
