"""Audit records written by other hands than roost.audit.service: a role that inserts audit
rows directly (the application role) or rows stored before migration 1280 checked them.
None of them may break the admin listing, stop retention or fake a retention anchor."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from roost.audit import service
from roost.audit.models import AuditLog
from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.principal import Principal


def _user() -> Principal:
    return Principal(user_id=uuid.uuid4(), is_admin=False, kind="session")


async def _record_steps(database: Database, n: int) -> None:
    async with database.transaction() as s:
        for i in range(n):
            await service.record(s, "thing.step", metadata={"i": i})
    async with database.transaction() as s:
        await service.link_pending(s)


async def _chain(database: Database) -> list[AuditLog]:
    async with database.transaction() as s:
        return list((await s.scalars(select(AuditLog).order_by(AuditLog.chain_seq))).all())


async def _verify(database: Database) -> service.ChainReport:
    async with database.transaction() as s:
        return await service.verify_chain(s)


async def _insert_as_app(database: Database, sql: str, params: dict[str, str]) -> None:
    """A plain INSERT as the application role (row-level security, no trigger bypassed)."""
    async with database.transaction() as s:
        await apply_principal(s, _user())
        await s.execute(text(sql), params)


async def _store_unchecked(database: Database, action: str, created: str) -> None:
    """A record as one stored before migration 1280's insert check (the owner, triggers
    bypassed: the row gets its ``seq`` here), then linked as the chainer links it."""
    async with database.transaction() as s:
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(text(
            "INSERT INTO audit_logs (id, seq, created_at, action, event_category, success) "
            "VALUES (gen_random_uuid(), nextval('audit_logs_seq_seq'), "
            "CAST(CAST(:c AS text) AS timestamptz), :a, 'action', true)"),
            {"c": created, "a": action})
    async with database.transaction() as s:
        await service.link_pending(s)


async def test_a_forged_retention_record_is_refused_and_cannot_hide_deleted_oldest_records(
    database: Database,
) -> None:
    """Only a role that may delete audit records (retention's) may record audit.retention,
    whose anchor verify accepts as the chain's start: deleting the oldest records is
    reported."""
    await _record_steps(database, 5)
    rows = await _chain(database)
    async with database.transaction() as s:  # the database owner, guard bypassed
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(text("DELETE FROM audit_logs WHERE chain_seq <= :n"),
                        {"n": rows[1].chain_seq})
    with pytest.raises(DBAPIError, match="only audit retention may record"):
        await _insert_as_app(
            database,
            "INSERT INTO audit_logs (id, created_at, action, event_category, success, changes) "
            "VALUES (gen_random_uuid(), now(), 'audit.retention', 'system', true, "
            "jsonb_build_object('anchor_hash', CAST(:a AS text)))",
            {"a": bytes(rows[1].row_hash or b"").hex()})
    report = await _verify(database)
    assert not report.ok and report.broken_id == rows[2].id, report


async def _listed_beside_poison(database: Database, client: httpx.AsyncClient,
                                admin_headers: dict[str, str], column: str,
                                value: str) -> httpx.Response:
    """The audit listing after a record of Roost's and one inserted by other hands whose
    ``column`` holds the JSON text ``value``."""
    async with database.transaction() as s:
        await service.record(s, "before.poison")
    await _insert_as_app(
        database,
        f"INSERT INTO audit_logs (id, created_at, action, event_category, success, {column}) "
        "VALUES (gen_random_uuid(), now(), 'poison', 'action', true, CAST(:v AS jsonb))",
        {"v": value})
    return await client.get("/api/v1/audit/logs", headers=admin_headers)


@pytest.mark.parametrize("column,value", [("metadata", '"just a string"'), ("metadata", "[1, 2]"),
                                          ("changes", "42")])
async def test_a_record_with_non_object_json_lists(
    database: Database, client: httpx.AsyncClient, admin_headers: dict[str, str],
    column: str, value: str,
) -> None:
    """A record whose changes/metadata is JSON but not an object lists with that value."""
    answer = await _listed_beside_poison(database, client, admin_headers, column, value)
    assert answer.status_code == 200, answer.text
    items = {i["action"]: i for i in answer.json()["items"]}
    assert set(items) == {"before.poison", "poison"}
    assert items["poison"][column] == json.loads(value)


@pytest.mark.parametrize("value", [
    '{"x": ' + "9" * 5000 + "}",  # an integer of 5,000 digits: valid JSON, valid jsonb
    "[" * 3000 + "]" * 3000,  # arrays nested 3,000 deep: valid JSON, valid jsonb
], ids=["long-integer", "deep-nesting"])
@pytest.mark.parametrize("column", ["changes", "metadata"])
async def test_a_record_with_json_python_cannot_decode_lists_as_its_text(
    database: Database, client: httpx.AsyncClient, admin_headers: dict[str, str],
    column: str, value: str,
) -> None:
    """jsonb Python's json refuses (too long an integer, too deep a nesting) lists as the
    stored text, a string: the listing answered 500 on every page holding the record."""
    answer = await _listed_beside_poison(database, client, admin_headers, column, value)
    assert answer.status_code == 200, answer.text[:300]
    items = {i["action"]: i for i in answer.json()["items"]}
    assert set(items) == {"before.poison", "poison"}
    shown = items["poison"][column]
    assert isinstance(shown, str) and shown.replace(" ", "") == value.replace(" ", "")


@pytest.mark.parametrize("created", ["0001-01-01 00:00:00 BC", "10000-01-01 00:00:00+00",
                                     "infinity", "-infinity"])
async def test_a_record_dated_outside_year_1_to_now_is_refused(
    database: Database, created: str,
) -> None:
    """The insert check refuses a date before year 1 or beyond an hour from now."""
    with pytest.raises(DBAPIError, match="out of range"):
        await _insert_as_app(
            database,
            "INSERT INTO audit_logs (id, created_at, action, event_category, success) "
            "VALUES (gen_random_uuid(), CAST(CAST(:c AS text) AS timestamptz), 'odd.time', "
            "'action', true)", {"c": created})


async def test_a_backdated_or_slightly_future_record_is_accepted(database: Database) -> None:
    """Backdating (tests, seeding) and a little clock skew stay possible."""
    async with database.transaction() as s:
        s.add(AuditLog(action="old", created_at=datetime(1970, 1, 1, tzinfo=UTC)))
        s.add(AuditLog(action="skewed", created_at=datetime.now(UTC) + timedelta(minutes=5)))
    assert {r.action for r in await _chain(database)} == {"old", "skewed"}


@pytest.mark.parametrize("created", ["0001-01-01 00:00:00 BC", "10000-01-01 00:00:00+00"])
async def test_a_stored_record_dated_outside_pythons_range_lists(
    database: Database, client: httpx.AsyncClient, admin_headers: dict[str, str], created: str,
) -> None:
    """A record stored before the check, with a date no Python datetime holds, lists
    (its date clamped to year 1 or 9999) and the chain still verifies."""
    async with database.transaction() as s:
        await service.record(s, "before.odd")
    await _store_unchecked(database, "odd.time", created)
    answer = await client.get("/api/v1/audit/logs", headers=admin_headers)
    assert answer.status_code == 200, answer.text
    odd = next(i for i in answer.json()["items"] if i["action"] == "odd.time")
    assert odd["created_at"].startswith("0001-01-01" if "BC" in created else "9999-12-31")
    assert (await _verify(database)).ok


async def test_a_stored_future_dated_record_does_not_stop_retention(database: Database) -> None:
    """A record dated 'infinity' (stored before the check) counts as old for retention, so
    it and the old records after it are pruned; the rest still verifies."""
    old = datetime.now(UTC) - timedelta(days=40)
    async with database.transaction() as s:
        s.add(AuditLog(action="old.before", created_at=old))
    await _store_unchecked(database, "future.row", "infinity")
    async with database.transaction() as s:
        for i in range(3):
            s.add(AuditLog(action="old.after", created_at=old + timedelta(minutes=i + 1)))
            await s.flush()
    async with database.transaction() as s:
        await service.record(s, "recent.event")
    async with database.transaction() as s:
        deleted = await service.apply_retention(s, timedelta(days=30))
    async with database.transaction() as s:
        left = (await s.scalars(select(AuditLog.action).order_by(AuditLog.chain_seq))).all()
    assert (deleted, left) == (5, ["recent.event", service.RETENTION_ACTION])
    assert (await _verify(database)).ok
