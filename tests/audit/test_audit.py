"""The audit log: joins the caller's transaction, append-only, chained, queryable."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

from roost.audit import service
from roost.audit.models import AuditLog
from roost.config import Settings
from roost.context import RequestContext, reset_context, set_context
from roost.db.engine import Database


async def _count(db: Database) -> int:
    async with db.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(AuditLog))).scalar_one())


async def test_record_commits_and_rolls_back_with_the_caller(database: Database) -> None:
    async with database.transaction() as s:
        await service.record(s, "thing.create", resource_type="thing", resource_id="1")
    with pytest.raises(RuntimeError):
        async with database.transaction() as s:
            await service.record(s, "thing.update", resource_type="thing", resource_id="1")
            raise RuntimeError("the change failed")
    async with database.transaction() as s:
        actions = (await s.scalars(select(AuditLog.action))).all()
    assert actions == ["thing.create"]


async def test_request_context_and_redaction(database: Database) -> None:
    token = set_context(RequestContext(request_id="req-1", ip_address="10.0.0.7", user_agent="ua/1"))
    try:
        async with database.transaction() as s:
            written = await service.record(
                s, "user.update", user_id=uuid.uuid4(),
                changes={"email": {"old": "a@x", "new": "b@x"}, "password": "hunter2hunter2",
                         "nested": {"refreshToken": "rt", "api_key": "k", "tokens_in": 12}},
                metadata={"X-Api-Key": "secret"},
            )
    finally:
        reset_context(token)
    async with database.transaction() as s:  # as stored, not only as returned
        stored = await s.get(AuditLog, written["id"])
    assert stored is not None
    assert {k: getattr(stored, k) for k in written} == written
    row = stored
    assert row.correlation_id == "req-1" and row.ip_address == "10.0.0.7"
    assert row.changes == {
        "email": {"old": "a@x", "new": "b@x"}, "password": "[redacted]",
        "nested": {"refreshToken": "[redacted]", "api_key": "[redacted]", "tokens_in": 12},
    }
    assert row.event_metadata == {"X-Api-Key": "[redacted]"}


async def test_update_delete_and_truncate_are_rejected(database: Database) -> None:
    async with database.transaction() as s:
        await service.record(s, "thing.create")
    for statement in (
        "UPDATE audit_logs SET action = 'forged'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with database.transaction() as s:
                await s.execute(text(statement))
    async with database.transaction() as s:
        assert (await s.scalars(select(AuditLog.action))).all() == ["thing.create"]


async def test_chain_verifies_under_concurrent_writers(database: Database) -> None:
    async def writer(n: int) -> None:
        for i in range(10):
            async with database.transaction() as s:
                await service.record(s, "concurrent.write", metadata={"writer": n, "i": i})

    await asyncio.gather(*(writer(n) for n in range(5)))
    async with database.transaction() as s:
        report = await service.verify_chain(s)
    assert report.ok and report.rows_checked == 50


async def _record_steps(database: Database, n: int) -> None:
    """Record n rows and link them, as the chainer of a running Roost does within its
    interval: tampering after that is what verify must detect."""
    async with database.transaction() as s:
        for i in range(n):
            await service.record(s, "thing.step", metadata={"i": i})
    async with database.transaction() as s:
        assert await service.link_pending(s) == n


async def _tamper(database: Database, sql: str) -> None:
    # What an attacker with superuser access would do: bypass the triggers.
    async with database.transaction() as s:
        await s.execute(text("SET LOCAL session_replication_role = replica"))
        await s.execute(text(sql))


async def test_hand_edited_row_is_detected(database: Database) -> None:
    await _record_steps(database, 5)
    async with database.transaction() as s:
        target = (await s.scalars(select(AuditLog).order_by(AuditLog.seq).offset(2))).first()
    assert target is not None
    await _tamper(database, f"UPDATE audit_logs SET metadata = '{{\"i\": 99}}' WHERE id = '{target.id}'")
    async with database.transaction() as s:
        report = await service.verify_chain(s)
    assert not report.ok
    assert report.broken_seq == target.seq and report.broken_id == target.id
    assert "content" in (report.reason or "")


async def test_deleted_row_is_detected(database: Database) -> None:
    await _record_steps(database, 4)
    async with database.transaction() as s:
        seqs = (await s.scalars(select(AuditLog.seq).order_by(AuditLog.seq))).all()
    await _tamper(database, f"DELETE FROM audit_logs WHERE seq = {seqs[1]}")
    async with database.transaction() as s:
        report = await service.verify_chain(s)
    assert not report.ok and report.broken_seq == seqs[2]
    assert "link" in (report.reason or "")


@pytest.mark.parametrize("position", [0, 1, -1])
@pytest.mark.parametrize("nulled", ["row_hash = NULL", "prev_hash = NULL",
                                    "row_hash = NULL, prev_hash = NULL"])
async def test_a_row_whose_hashes_were_nulled_is_named(database: Database, position: int,
                                                       nulled: str) -> None:
    """An edited row whose hash (or link) was set to NULL is reported, at that row: NULL
    compares as unknown in SQL, so the last row passed as intact and a middle one blamed
    the row after it."""
    await _record_steps(database, 3)
    async with database.transaction() as s:
        rows = (await s.scalars(select(AuditLog).order_by(AuditLog.chain_seq))).all()
    target = rows[position]
    await _tamper(database, f"UPDATE audit_logs SET action = 'forged', {nulled} "
                            f"WHERE id = '{target.id}'")
    async with database.transaction() as s:
        report = await service.verify_chain(s)
    assert not report.ok, report
    assert (report.broken_seq, report.broken_id) == (target.seq, target.id), report
    assert "removed" in (report.reason or "")


async def test_verify_reports_the_head_which_alone_shows_a_cut_off_end(
    database: Database, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """The newest linked record's chain_seq and row_hash (the head), in the service's
    report and the API's: it moves with every record added.  Deleting the newest records
    leaves a chain that verifies; only a head kept elsewhere shows they are gone."""
    async with database.transaction() as s:
        empty = await service.verify_chain(s)
    assert empty.ok and (empty.head_chain_seq, empty.head_hash) == (None, None)

    async def head() -> tuple[int, str]:
        async with database.transaction() as s:
            newest = (await s.scalars(select(AuditLog).where(AuditLog.chain_seq.is_not(None))
                                      .order_by(AuditLog.chain_seq.desc()).limit(1))).one()
        assert newest.chain_seq is not None and newest.row_hash is not None
        return newest.chain_seq, bytes(newest.row_hash).hex()

    await _record_steps(database, 2)
    first = (await client.get("/api/v1/audit/verify", headers=admin_headers)).json()
    assert first["ok"] and (first["head_chain_seq"], first["head_hash"]) == await head()
    await _record_steps(database, 1)
    second = (await client.get("/api/v1/audit/verify", headers=admin_headers)).json()
    assert second["ok"] and (second["head_chain_seq"], second["head_hash"]) == await head()
    assert second["head_chain_seq"] > first["head_chain_seq"]
    assert second["head_hash"] != first["head_hash"]

    await _tamper(database, f"DELETE FROM audit_logs WHERE chain_seq > {first['head_chain_seq']}")
    async with database.transaction() as s:
        cut = await service.verify_chain(s)
    assert cut.ok, "the chain alone cannot show its end was cut off"
    assert (cut.head_chain_seq, cut.head_hash) != (second["head_chain_seq"], second["head_hash"])


async def test_retention_beyond_the_calendar_is_refused_or_prunes_nothing(
    database: Database,
) -> None:
    """ROOST_AUDIT_RETENTION_DAYS past a hundred years is a configuration error, and a
    retention older than the calendar prunes nothing (it failed every hourly run with
    OverflowError)."""
    with pytest.raises(ValidationError, match="audit_retention_days"):
        Settings(audit_retention_days=1_000_000)
    assert Settings(audit_retention_days=36_500).audit_retention_days == 36_500
    await _record_steps(database, 1)
    async with database.transaction() as s:
        assert await service.apply_retention(s, timedelta(days=1_000_000)) == 0
    assert await _count(database) == 1


async def test_retention_prunes_the_oldest_prefix_and_stays_verifiable(database: Database) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    async with database.transaction() as s:
        for i in range(3):
            s.add(AuditLog(action="old.event", created_at=old + timedelta(minutes=i)))
            await s.flush()
    async with database.transaction() as s:
        await service.record(s, "recent.event")
    async with database.transaction() as s:
        deleted = await service.apply_retention(s, timedelta(days=30))
    assert deleted == 3
    async with database.transaction() as s:
        actions = (await s.scalars(select(AuditLog.action).order_by(AuditLog.seq))).all()
        report = await service.verify_chain(s)
    assert actions == ["recent.event", service.RETENTION_ACTION]
    assert report.ok, report
    with pytest.raises(Exception, match="at least one day"):
        async with database.transaction() as s:
            await service.apply_retention(s, timedelta(hours=1))


async def test_retention_of_every_record_keeps_the_newest_so_the_head_never_goes_back(
    database: Database,
) -> None:
    """docs/operations.md: retention deletes only the oldest records and never moves the
    head back: with every record older than the cutoff it keeps the newest and links its
    own record after it (it deleted them all, and its record restarted the chain at 1)."""
    old = datetime.now(UTC) - timedelta(days=40)
    async with database.transaction() as s:
        for i in range(3):
            s.add(AuditLog(action="old.event", created_at=old + timedelta(minutes=i)))
            await s.flush()
    async with database.transaction() as s:
        before = await service.verify_chain(s)
    assert before.ok and before.head_chain_seq == 3
    async with database.transaction() as s:
        assert await service.apply_retention(s, timedelta(days=30)) == 2
    async with database.transaction() as s:
        after = await service.verify_chain(s)
        kept = (await s.execute(select(AuditLog.action, AuditLog.chain_seq)
                                .order_by(AuditLog.seq))).all()
    assert after.ok, after
    assert [tuple(row) for row in kept] == [("old.event", 3), (service.RETENTION_ACTION, 4)]
    assert after.head_chain_seq == 4
    async with database.transaction() as s:  # the next run prunes it: a younger one follows
        assert await service.apply_retention(s, timedelta(days=30)) == 1
    async with database.transaction() as s:
        again = await service.verify_chain(s)
    assert again.ok and again.head_chain_seq == 5, again


async def test_admin_query_filters_and_paginates(
    database: Database, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with database.transaction() as s:
        for i in range(7):
            await service.record(s, "doc.read", user_id=alice, resource_type="document",
                                 resource_id=str(i), trace_id="run-1")
        await service.record(s, "doc.delete", user_id=bob, resource_type="document",
                             resource_id="9", success=False, error_message="denied")

    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"user_id": str(alice), "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/audit/logs", params=params, headers=admin_headers)).json()
        seen += [item["resource_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in reversed(range(7))], "newest first, every row once"

    failed = await client.get("/api/v1/audit/logs", params={"success": "false"}, headers=admin_headers)
    assert [i["action"] for i in failed.json()["items"]] == ["doc.delete"]
    by_trace = await client.get("/api/v1/audit/logs", params={"trace_id": "run-1", "limit": 100},
                                headers=admin_headers)
    assert len(by_trace.json()["items"]) == 7
    window = await client.get(
        "/api/v1/audit/logs",
        params={"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
        headers=admin_headers,
    )
    assert window.json()["items"] == []


async def test_audit_api_refuses_anonymous_and_bad_input(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    assert (await client.get("/api/v1/audit/logs")).status_code == 401
    wrong = await client.get("/api/v1/audit/logs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/api/v1/audit/logs", params={"limit": "abc"},
                             headers=admin_headers)).status_code == 422
    assert (await client.get("/api/v1/audit/logs", params={"user_id": "not-a-uuid"},
                             headers=admin_headers)).status_code == 422
    bad_cursor = await client.get("/api/v1/audit/logs", params={"cursor": "%%%"},
                                  headers=admin_headers)
    assert bad_cursor.status_code == 400 and "cursor" in bad_cursor.json()["detail"]
    verify = await client.get("/api/v1/audit/verify", headers=admin_headers)
    assert verify.status_code == 200 and verify.json()["ok"] is True


async def test_cli_verify_reports_the_first_broken_link(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: object
) -> None:
    await _record_steps(database, 3)
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path)}
    intact = await asyncio.to_thread(run_roost, "audit", "verify", env=env)
    assert intact.returncode == 0 and "intact" in intact.stdout and "3 records" in intact.stdout
    async with database.transaction() as s:
        head = (await s.scalars(select(AuditLog).order_by(AuditLog.chain_seq.desc()))).first()
    assert head is not None and head.row_hash is not None
    assert f"head: chain_seq {head.chain_seq}, row_hash {bytes(head.row_hash).hex()}" \
        in intact.stdout, intact.stdout

    async with database.transaction() as s:
        second = (await s.scalars(select(AuditLog).order_by(AuditLog.seq).offset(1))).first()
    assert second is not None
    await _tamper(database, f"UPDATE audit_logs SET action = 'forged' WHERE id = '{second.id}'")
    broken = await asyncio.to_thread(run_roost, "audit", "verify", env=env)
    assert broken.returncode == 1
    assert f"seq {second.seq}" in broken.stderr


# --- a retention record whose anchor is not one ---------------------------------------


async def _record_steps(database: Database, n: int) -> None:
    """n records, linked as a running Roost's chainer links them."""
    async with database.transaction() as s:
        for i in range(n):
            await service.record(s, "thing.step", metadata={"i": i})
    async with database.transaction() as s:
        await service.link_pending(s)


async def _bogus_retention_record(database: Database, anchor_json: str) -> None:
    """A plain INSERT (no trigger bypassed): allowed to every role that inserts audit rows."""
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO audit_logs (id, created_at, action, event_category, success, changes) "
            "VALUES (gen_random_uuid(), now(), 'audit.retention', 'system', true, "
            "jsonb_build_object('anchor_hash', CAST(:anchor AS jsonb)))"),
            {"anchor": anchor_json})


@pytest.mark.parametrize("anchor", ['"zz"', '"abc"', "123", '{"x": 1}'])
async def test_verify_with_a_malformed_retention_anchor_reports_not_raises(
    database: Database, anchor: str,
) -> None:
    """verify_chain answers a report (a malformed anchor is no anchor), it does not raise."""
    await _record_steps(database, 2)
    await _bogus_retention_record(database, anchor)
    async with database.transaction() as s:
        report = await service.verify_chain(s)  # ValueError from bytes.fromhex today
    assert report.ok, report  # every row links: the bogus record is itself chained properly


async def test_cli_verify_with_a_malformed_anchor_prints_no_traceback(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """`roost audit verify` gives a clear report, not a Python traceback."""
    await _record_steps(database, 2)
    await _bogus_retention_record(database, '"not hex"')
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path)}
    answer = await asyncio.to_thread(run_roost, "audit", "verify", env=env)
    assert "Traceback" not in answer.stderr + answer.stdout, answer.stderr[-2000:]
    assert answer.returncode == 0 and "intact" in answer.stdout, answer.stdout


async def test_api_verify_with_a_malformed_anchor_is_not_500(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """GET /api/v1/audit/verify answers its report, not a 500."""
    await _record_steps(database, 2)
    await _bogus_retention_record(database, '"zz"')
    answer = await client.get("/api/v1/audit/verify", headers=admin_headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True


# --- the request id as the records' correlation id ------------------------------------


async def test_a_request_id_too_long_for_the_audit_log_is_replaced_not_a_failed_write(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An X-Request-ID becomes each audit record's correlation_id (64 characters): the
    middleware accepted up to 128, and a longer one failed every audited write with a 400.
    Now a longer one is replaced by a generated id, as a malformed one is."""
    _, headers = await make_user(database)
    longest = "r" * 64
    kept = await client.post("/api/v1/api-keys", json={"name": "kept-id"},
                             headers={**headers, "X-Request-ID": longest})
    assert kept.status_code == 201, kept.text
    assert kept.headers["x-request-id"] == longest
    too_long = "r" * 100
    replaced = await client.post("/api/v1/api-keys", json={"name": "replaced-id"},
                                 headers={**headers, "X-Request-ID": too_long})
    assert replaced.status_code == 201, replaced.text
    assert replaced.headers["x-request-id"] != too_long
    async with database.transaction() as s:
        ids = set((await s.scalars(select(AuditLog.correlation_id))).all())
    assert {longest, replaced.headers["x-request-id"]} <= ids


async def test_failed_logins_with_a_long_request_id_still_count(client: httpx.AsyncClient) -> None:
    """Wrong passwords sent with a long X-Request-ID still count toward the lockout: the
    throttle counters commit with the auth.login_failed record, and a failed audit insert
    rolled both back (no lockout, nothing audited)."""
    long_id = {"X-Request-ID": "q" * 100}
    for _ in range(6):
        await client.post("/api/v1/auth/login",
                          json={"login": "ghost-probe", "password": "nope-nope-1"},
                          headers=long_id)
    final = await client.post("/api/v1/auth/login",
                              json={"login": "ghost-probe", "password": "nope-nope-1"})
    assert final.status_code == 429, final.text


async def test_resource_id_filter_finds_a_record_by_its_uuid_in_upper_case(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    """An administrator filtering the log by a resource's id finds its records whatever
    the case of the UUID pasted, as the ``user_id``/``persona_id``/``run_id`` filters do
    (an upper-case id listed nothing, silently)."""
    _, alice = await make_user(database)
    made = await client.post("/api/v1/api-keys", headers=alice, json={"name": "k"})
    assert made.status_code == 201, made.text
    key_id = made.json()["id"]
    for spelling in (key_id, key_id.upper(), key_id.replace("-", "")):
        listed = await client.get("/api/v1/audit/logs", headers=admin_headers,
                                  params={"resource_id": spelling})
        assert listed.status_code == 200, listed.text
        assert [i["action"] for i in listed.json()["items"]] == ["api_key.created"], spelling
