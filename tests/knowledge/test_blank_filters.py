"""Collection and tag filters given blank (an empty form field)."""

from __future__ import annotations

import hashlib
import uuid

import httpx

from roost.db.engine import Database
from roost.knowledge.models import Document, DocumentChunk
from tests.support.identity import make_user

API = "/api/v1/knowledge"


async def _doc(database: Database, owner: uuid.UUID, collection: str | None) -> uuid.UUID:
    """A ready document of ``owner`` in ``collection`` with one chunk about a lynx."""
    async with database.transaction() as s:
        doc = Document(user_id=owner, name=f"d-{uuid.uuid4().hex[:6]}.md", source="file",
                       collection=collection,
                       path_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), status="ready")
        s.add(doc)
        await s.flush()
        s.add(DocumentChunk(document_id=doc.id, user_id=owner, collection=collection,
                            chunk_index=0, content="lynx sighting in the valley",
                            embedding=[1.0] + [0.0] * 383,
                            embedding_model="all-MiniLM-L6-v2", embedding_dim=384))
        return doc.id


async def test_a_blank_collection_filter_is_spelled_as_stored_not_matched_literally(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """A blank `?collection=` / `?tag=` / search `collection` is no filter, as a blank
    stored collection is none: it was compared literally (`collection = ''`), a value no
    document holds, so the list and the search always came back empty."""
    uid, h = await make_user(database)
    unfiled = await _doc(database, uid, None)
    filed = await _doc(database, uid, "Field")
    lst = await kclient.get(f"{API}/documents", headers=h, params={"collection": " "})
    assert lst.status_code == 200, lst.text
    listed = {d["id"] for d in lst.json()["items"]}
    assert listed == {str(unfiled), str(filed)}, lst.text
    tagged = await kclient.get(f"{API}/documents", headers=h, params={"tag": ""})
    assert {d["id"] for d in tagged.json()["items"]} == {str(unfiled), str(filed)}, tagged.text
    found = await kclient.post(f"{API}/search", headers=h,
                               json={"query": "lynx", "mode": "text", "collection": ""})
    assert found.status_code == 200, found.text
    hits = {r["document_id"] for r in found.json()["results"]}
    assert hits == {str(unfiled), str(filed)}, found.text
