"""Row-level security, the second wall (point 8): raw SQL as the application role."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal, clear_principal, current_scope
from roost.principal import Principal
from tests.identity.conftest import login, password_user
from tests.support.identity import join_group, make_user

OWNED = ("sessions", "api_keys", "registered_devices", "passkey_credentials",
         "user_oauth_tokens", "user_profiles", "user_two_factor_auth")


async def _seed_everything(client: httpx.AsyncClient, database: Database, name: str) -> uuid.UUID:
    """One row in every user-owned identity table for a new user."""
    user_id = await password_user(database, name)
    headers = {"Authorization": f"Bearer {(await login(client, name)).json()['access_token']}"}
    await client.post("/api/v1/api-keys", headers=headers, json={"name": "k"})
    await client.put("/api/v1/users/me/oauth/github", headers=headers,
                     json={"access_token": f"gho_{name}_token"})
    await client.patch("/api/v1/users/me/profile", headers=headers, json={"bio": name})
    await client.post("/api/v1/auth/2fa/setup", headers=headers)
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO passkey_credentials (id, user_id, credential_id, public_key) "
            "VALUES (:id, :u, :c, '\\x00')"), {"id": uuid.uuid4(), "u": user_id, "c": name})
    return user_id


def _as(user_id: uuid.UUID, *groups: uuid.UUID) -> Principal:
    return Principal(user_id=user_id, is_admin=False, kind="session", group_ids=frozenset(groups))


async def test_raw_sql_as_app_role_sees_only_own_rows(
    client: httpx.AsyncClient, database: Database
) -> None:
    alice = await _seed_everything(client, database, "alice")
    bob = await _seed_everything(client, database, "bob")
    async with database.transaction() as session:
        await apply_principal(session, _as(bob))
        assert (await current_scope(session)) == ("roost_app", bob, False)
        for table in OWNED:
            theirs = (await session.execute(
                text(f"SELECT * FROM {table} WHERE user_id = :a"), {"a": alice})).all()
            everything = (await session.execute(text(f"SELECT user_id FROM {table}"))).all()
            assert theirs == [], table
            assert {r[0] for r in everything} == {bob}, table
        assert (await session.execute(text("SELECT id FROM users"))).scalars().all() == [bob]
        # Writes to another tenant's rows touch nothing.
        for table in OWNED:
            changed = await session.execute(
                text(f"DELETE FROM {table} WHERE user_id = :a"), {"a": alice})
            assert changed.rowcount == 0, table  # type: ignore[attr-defined]
        renamed = await session.execute(text("UPDATE users SET full_name = 'x' WHERE id = :a"),
                                        {"a": alice})
        assert renamed.rowcount == 0  # type: ignore[attr-defined]
    # Inserting a row owned by someone else is refused outright.
    with pytest.raises(DBAPIError, match="row-level security"):
        async with database.transaction() as session:
            await apply_principal(session, _as(bob))
            await session.execute(text(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash) "
                "VALUES (:id, :a, 'planted', 'aaaaaaaa', :h)"),
                {"id": uuid.uuid4(), "a": alice, "h": "0" * 64})
    # Without a principal (the owner: migrations, workers) everything is visible.
    async with database.transaction() as session:
        total = (await session.execute(text("SELECT count(*) FROM api_keys"))).scalar_one()
        assert total == 2
        await apply_principal(session, _as(bob))
        await clear_principal(session)
        assert (await current_scope(session))[0] != "roost_app"


async def test_privilege_columns_are_guarded_in_the_database(database: Database) -> None:
    bob, _ = await make_user(database, username="bob")
    with pytest.raises(DBAPIError, match="only an administrator"):
        async with database.transaction() as session:
            await apply_principal(session, _as(bob))
            await session.execute(text("UPDATE users SET role = 'admin' WHERE id = :b"), {"b": bob})
    async with database.transaction() as session:  # own settings are fine
        await apply_principal(session, _as(bob))
        done = await session.execute(text("UPDATE users SET theme = 'light' WHERE id = :b"),
                                     {"b": bob})
        assert done.rowcount == 1  # type: ignore[attr-defined]


async def test_groups_share_members_not_their_private_rows(
    client: httpx.AsyncClient, database: Database
) -> None:
    alice, alice_h = await make_user(database, username="alice")
    bob, bob_h = await make_user(database, username="bob")
    carol, _ = await make_user(database, username="carol")
    gid = uuid.UUID((await client.post("/api/v1/groups", headers=alice_h,
                                       json={"name": "team"})).json()["id"])
    await join_group(client, alice_h, gid, "bob", bob_h)
    async with database.transaction() as session:
        await apply_principal(session, _as(bob, gid))
        people = set((await session.execute(text("SELECT id FROM users"))).scalars().all())
        assert people == {alice, bob}  # co-members, not carol
        assert (await session.execute(text("SELECT id FROM groups"))).scalars().all() == [gid]
        keys = (await session.execute(text("SELECT user_id FROM api_keys"))).scalars().all()
        assert keys == [bob]
        # A plain member cannot add people by writing the table directly.
        with pytest.raises(DBAPIError, match="row-level security"):
            async with session.begin_nested():
                await session.execute(text(
                    "INSERT INTO user_group_memberships (id, user_id, group_id, role) "
                    "VALUES (:i, :c, :g, 'admin')"), {"i": uuid.uuid4(), "c": carol, "g": gid})
    async with database.transaction() as session:
        await apply_principal(session, _as(carol))
        assert (await session.execute(text("SELECT id FROM groups"))).all() == []
        assert (await session.execute(
            text("SELECT * FROM user_group_memberships"))).all() == []
    async with database.transaction() as session:
        await apply_principal(session, Principal(user_id=None, is_admin=True, kind="operator"))
        assert len((await session.execute(text("SELECT id FROM users"))).all()) == 3


async def test_row_visible_helper_for_other_domains(database: Database) -> None:
    a, b, g = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with database.transaction() as session:
        await apply_principal(session, _as(a, g))
        row = (await session.execute(text(
            "SELECT roost_row_visible(:a), roost_row_visible(:b), roost_row_visible(:b, :g), "
            "roost_row_visible(NULL, NULL), roost_current_user_id(), roost_user_group_ids()"),
            {"a": a, "b": b, "g": g})).one()
    assert tuple(row) == (True, False, True, False, a, [g])
    async with database.transaction() as session:  # settings do not outlive the transaction
        row = (await session.execute(text(
            "SELECT roost_current_user_id(), roost_is_admin(), current_user <> 'roost_app'"))).one()
    assert tuple(row) == (None, False, True)


async def test_empty_app_role_keeps_the_connecting_role(database: Database) -> None:
    me = uuid.uuid4()
    async with database.transaction() as session:
        await apply_principal(session, _as(me), app_role="")
        role, user_id, _ = await current_scope(session)
    assert role != "roost_app" and user_id == me
    with pytest.raises(ValueError, match="not valid"):
        async with database.transaction() as session:
            await apply_principal(session, _as(me), app_role="x; DROP TABLE users")
