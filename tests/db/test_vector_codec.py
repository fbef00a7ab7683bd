"""The binary ``vector`` codec: exact round trips, and ORM reads that do not depend on
whether a pooled connection has the codec yet."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, text

from roost.db.engine import Database
from roost.db.vector import decode_vector, encode_vector, ensure_vector_codec
from roost.identity.accounts import create_user
from roost.knowledge.models import Document, DocumentChunk
from roost.principal import SYSTEM


def test_encoding_accepts_arrays_sequences_and_text() -> None:
    values = [0.25, -1.5, 3.0e-8, 7.0]
    expected = encode_vector(np.array(values, dtype=np.float32))
    assert encode_vector(values) == expected
    assert encode_vector("[0.25, -1.5,3e-08,7]") == expected
    assert decode_vector(expected).tolist() == pytest.approx(values)
    assert expected[:4] == b"\x00\x04\x00\x00"  # four dimensions, reserved zero
    with pytest.raises(ValueError, match="one dimension"):
        encode_vector([[1.0, 2.0]])
    with pytest.raises(ValueError, match="text form"):
        encode_vector("1,2")


async def test_postgres_reads_and_writes_the_binary_form(database: Database) -> None:
    async with database.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        await ensure_vector_codec(driver)
        await ensure_vector_codec(driver)  # idempotent
        query = np.array([1.0, 2.0, 2.0], dtype=np.float32)
        assert await driver.fetchval("SELECT vector_dims($1::vector)", query) == 3
        # Same value as PostgreSQL's own text parser gives.
        assert await driver.fetchval("SELECT $1::vector = '[1,2,2]'::vector", query) is True
        back = await driver.fetchval("SELECT '[0.5,-0.25]'::vector")
        assert isinstance(back, np.ndarray) and back.tolist() == [0.5, -0.25]
        with pytest.raises(Exception, match="NaN"):
            await driver.fetchval("SELECT $1::vector", [1.0, float("nan")])


async def test_orm_reads_give_lists_with_and_without_the_codec(database: Database) -> None:
    async with database.transaction() as s:
        user = await create_user(s, SYSTEM, username="vec", email="vec@example.test",
                                 password=None, role="user", status="active",
                                 first_becomes_root=False)
        doc = Document(user_id=user.id, name="d", source="file", path_hash="h", status="ready")
        s.add(doc)
        await s.flush()
        s.add(DocumentChunk(document_id=doc.id, user_id=user.id, chunk_index=0, content="x",
                            embedding=[0.5, 0.25, -1.0], embedding_model="m", embedding_dim=3))
    for with_codec in (False, True):
        async with database.transaction() as s:
            if with_codec:
                conn = await s.connection()
                await ensure_vector_codec((await conn.get_raw_connection()).driver_connection)
            else:
                await s.execute(text("SELECT 1"))
            got = (await s.execute(select(DocumentChunk.embedding))).scalar_one()
            assert got == [0.5, 0.25, -1.0], with_codec
