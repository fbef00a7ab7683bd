"""The bulk chunk writer: both COPY paths write the same rows, row-level security's insert
check holds on both, and the user's role is back in place afterwards."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import uuid7
from roost.db.engine import Database
from roost.errors import Forbidden
from roost.identity.tenancy import apply_principal
from roost.knowledge.bulk import encode_rows, insert_chunks
from tests.knowledge.support import principal
from tests.support.identity import make_user
from tests.support.sql import fetch


async def _document(database: Database, user_id: uuid.UUID) -> uuid.UUID:
    doc_id = uuid7()
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO documents (id, user_id, name, source, path_hash, status) "
            "VALUES (:id, :u, 'doc', 'file', :h, 'ready')"), {"id": doc_id, "u": user_id, "h": str(doc_id)})
    return doc_id


def _rows(doc_id: uuid.UUID, user_id: uuid.UUID, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{
        "id": uuid7(), "document_id": doc_id, "user_id": user_id, "collection": "notes",
        "tags": ["a", {"k": 1}], "chunk_index": start + i,
        "content": f"the heron waits in the reeds\x00 number {start + i}", "token_count": 7,
        "embedding": [float(i), 1.0, -0.5], "embedding_model": "bulk-test", "embedding_dim": 3,
        "chunk_metadata": {"page": i + 1, "section": "Intro"},
    } for i in range(n)]


async def _role(s: AsyncSession) -> str:
    return str((await s.execute(text("SELECT current_user"))).scalar_one())


@pytest.mark.parametrize("direct", [True, False])
async def test_both_paths_write_the_same_rows_and_keep_the_users_role(
    database: Database, direct: bool,
) -> None:
    user_id, _ = await make_user(database)
    doc_id = await _document(database, user_id)
    batch = _rows(doc_id, user_id, 2500)  # more than one streamed slice
    async with database.transaction() as s:
        await apply_principal(s, principal(user_id))
        assert await insert_chunks(s, batch, direct=direct) == 2500
        temp = (await s.execute(text("SELECT to_regclass('pg_temp.roost_chunk_load')"))).scalar()
        assert (temp is None) is direct
        assert await _role(s) == "roost_app"  # still scoped to the user after the COPY
        # ... and still under row-level security for what follows in the transaction.
        assert (await s.execute(text("SELECT row_security_active('document_chunks')"))).scalar()
    found = await fetch(
        database, "SELECT chunk_index, content, tags, metadata, embedding::text, "
        "content_tsv @@ to_tsquery('english', 'heron') FROM document_chunks "
        "WHERE document_id = :d ORDER BY chunk_index", d=doc_id)
    assert len(found) == 2500
    assert found[3] == (3, "the heron waits in the reeds number 3", ["a", {"k": 1}],
                        {"page": 4, "section": "Intro"}, "[3,1,-0.5]", True)


async def test_rows_for_another_user_are_refused_before_anything_is_written(
    database: Database,
) -> None:
    user_id, _ = await make_user(database)
    other_id, _ = await make_user(database)
    doc_id = await _document(database, other_id)
    for direct in (True, False):
        async with database.transaction() as s:
            await apply_principal(s, principal(user_id))
            with pytest.raises(Forbidden):
                await insert_chunks(s, _rows(doc_id, other_id, 3), direct=direct)
            assert await _role(s) == "roost_app"
    assert await fetch(database, "SELECT count(*) FROM document_chunks") == [(0,)]
    # An administrator may write for anyone (as the policy allows).
    async with database.transaction() as s:
        await apply_principal(s, principal(user_id, admin=True))
        await insert_chunks(s, _rows(doc_id, other_id, 3))
    assert await fetch(database, "SELECT count(*) FROM document_chunks") == [(3,)]


async def test_a_login_role_under_row_level_security_goes_through_the_temporary_table(
    database: Database,
) -> None:
    """A deployment that logs in as the application role cannot leave the policies: the
    writer falls back to INSERT ... SELECT, where PostgreSQL checks every row itself."""
    user_id, _ = await make_user(database)
    doc_id = await _document(database, user_id)
    async with database.transaction() as s:
        await s.execute(text("SET LOCAL SESSION AUTHORIZATION roost_app"))
        await apply_principal(s, principal(user_id), app_role=None)
        await insert_chunks(s, _rows(doc_id, user_id, 5))
        assert await _role(s) == "roost_app"
        loaded_via = (await s.execute(text("SELECT to_regclass('pg_temp.roost_chunk_load')"))).scalar()
        assert loaded_via is not None
        await s.execute(text("RESET SESSION AUTHORIZATION"))
    assert await fetch(database, "SELECT count(*) FROM document_chunks") == [(5,)]


async def test_a_failed_copy_raises_its_own_error_and_leaves_nothing(database: Database) -> None:
    user_id, _ = await make_user(database)
    doc_id = await _document(database, user_id)
    batch = _rows(doc_id, user_id, 1500)
    batch[1200]["embedding"] = [float("inf"), 0.0, 0.0]  # in the second streamed slice
    with pytest.raises(ValueError, match="finite"):
        async with database.transaction() as s:
            await apply_principal(s, principal(user_id))
            await insert_chunks(s, batch)
    duplicate = _rows(doc_id, user_id, 2)
    duplicate[1]["chunk_index"] = 0  # (document, chunk_index) is unique
    with pytest.raises(Exception, match="uq_document_chunks_document_index"):
        async with database.transaction() as s:
            await apply_principal(s, principal(user_id))
            await insert_chunks(s, duplicate)
    assert await fetch(database, "SELECT count(*) FROM document_chunks") == [(0,)]


def test_encoding_rejects_vectors_that_postgres_would_store_wrongly() -> None:
    doc, user = uuid7(), uuid7()
    bad = _rows(doc, user, 2)
    bad[1]["embedding"] = [1.0, float("nan"), 0.0]
    with pytest.raises(ValueError, match="finite"):
        encode_rows(bad)
    ragged = _rows(doc, user, 2)
    ragged[0]["embedding"] = [1.0, 2.0]
    with pytest.raises(ValueError):
        encode_rows(ragged)
