"""The audit chain off the request path: inserts take no lock, the chainer links rows
after commit (migration 0930, roost.audit.chainer)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from roost.audit import service
from roost.audit.models import AuditLog
from roost.db.engine import Database


async def _chain(database: Database) -> list[tuple[int, int | None, str]]:
    async with database.transaction() as s:
        rows = (await s.execute(select(AuditLog.seq, AuditLog.chain_seq, AuditLog.action)
                                .order_by(AuditLog.seq))).all()
    return [(r.seq, r.chain_seq, r.action) for r in rows]


async def test_an_open_audited_transaction_does_not_block_another(database: Database) -> None:
    """Before 0930 the second writer waited for the first to commit (chain lock)."""
    async with database.transaction() as first:
        await service.record(first, "slow.writer")
        async with database.transaction() as second:
            await asyncio.wait_for(service.record(second, "fast.writer"), timeout=10)
        # The fast writer committed while the slow one is still open.
    chain = await _chain(database)
    assert [action for _, _, action in chain] == ["slow.writer", "fast.writer"]
    assert all(chain_seq is None for _, chain_seq, _ in chain), "inserted unlinked"


async def test_rows_committed_out_of_order_are_linked_in_commit_order(database: Database) -> None:
    async with database.transaction() as slow:
        await service.record(slow, "first.inserted")  # lower seq, commits last
        async with database.transaction() as fast:
            await service.record(fast, "second.inserted")
        async with database.transaction() as s:
            # The chainer sees only what is committed: the open transaction's row waits.
            assert await service.link_pending(s) == 1
    async with database.transaction() as s:
        assert await service.link_pending(s) == 1
    by_chain = sorted((c, a) for _, c, a in await _chain(database) if c is not None)
    assert [a for _, a in by_chain] == ["second.inserted", "first.inserted"]
    async with database.transaction() as s:
        report = await service.verify_chain(s)
    assert report.ok and report.rows_checked == 2 and report.linked_now == 0


async def test_the_chain_columns_are_the_databases_not_the_clients(database: Database) -> None:
    async with database.transaction() as s:
        s.add(AuditLog(action="forged.links", chain_seq=1, prev_hash=b"x" * 32, row_hash=b"y" * 32))
    async with database.transaction() as s:
        row = (await s.scalars(select(AuditLog))).one()
        assert (row.chain_seq, row.prev_hash, row.row_hash) == (None, None, None)
        report = await service.verify_chain(s)
    assert report.ok and report.linked_now == 1


async def test_only_the_chainer_may_fill_the_links(database: Database) -> None:
    async with database.transaction() as s:
        await service.record(s, "thing.create")
    # Pretending to be the chainer does not allow changing what the hash covers.
    with pytest.raises(DBAPIError, match="append-only"):
        async with database.transaction() as s:
            await s.execute(text("SELECT set_config('roost.audit_chaining', 'on', true)"))
            await s.execute(text("UPDATE audit_logs SET action = 'forged', chain_seq = 1, "
                                 "prev_hash = '\\x00', row_hash = '\\x00'"))
    # Nor re-linking a linked row.
    async with database.transaction() as s:
        await service.link_pending(s)
    with pytest.raises(DBAPIError, match="append-only"):
        async with database.transaction() as s:
            await s.execute(text("SELECT set_config('roost.audit_chaining', 'on', true)"))
            await s.execute(text("UPDATE audit_logs SET chain_seq = 7"))


async def test_a_second_chainer_returns_at_once_while_one_links(database: Database) -> None:
    async with database.transaction() as s:
        await service.record(s, "thing.create")
    async with database.transaction() as holder:
        assert await service.link_pending(holder) == 1
        async with database.transaction() as other:
            assert await service.link_pending(other, wait=False) == -1


async def test_the_running_app_links_new_rows(app: FastAPI, database: Database) -> None:
    """The audit domain's start-up runs a chainer: rows get linked without anyone asking."""
    async with app.router.lifespan_context(app):
        async with database.transaction() as s:
            for i in range(3):
                await service.record(s, "thing.step", metadata={"i": i})
        for _ in range(200):
            if all(c is not None for _, c, _ in await _chain(database)):
                break
            await asyncio.sleep(0.05)
    chain = await _chain(database)
    # Start-up audits too (the local model's provider): every row linked, in seq order.
    assert [c for _, c, _ in chain] == list(range(1, len(chain) + 1))
    assert [a for _, _, a in chain].count("thing.step") == 3
    async with database.transaction() as s:
        report = await service.verify_chain(s)
    assert report.ok and report.linked_now == 0


async def test_a_worker_links_rows_too(database: Database) -> None:
    from roost.tasks.worker import Worker, WorkerConfig

    worker = Worker(database, WorkerConfig(concurrency=1, schedules=False,
                                           audit_chain_interval_s=0.05))
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.started.wait(), timeout=30)
        async with database.transaction() as s:
            await service.record(s, "job.thing")
        for _ in range(200):
            if all(c is not None for _, c, _ in await _chain(database)):
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await running
    assert [c for _, c, _ in await _chain(database)] == [1]
