"""Tags, collections, names and filters that show nothing, or that end in what shows
nothing (a zero-width space, Hangul fillers): a trailing zero-width space is no part of
a tag, a collection of fillers is none, a name of fillers is a 422, and a filter of
invisible characters is no filter."""

from __future__ import annotations

import hashlib
import uuid

import httpx

from roost.db.engine import Database
from roost.knowledge.models import Document, DocumentChunk
from tests.support.identity import make_user

API = "/api/v1/knowledge"


async def _doc(database: Database, owner: uuid.UUID, *, collection: str | None = None,
               tags: list[str] | None = None, chunks: int = 1) -> uuid.UUID:
    """A ready document of ``owner`` with ``chunks`` chunks about a lynx."""
    async with database.transaction() as s:
        doc = Document(user_id=owner, name=f"d-{uuid.uuid4().hex[:6]}.md", source="file",
                       collection=collection, tags=tags or [],
                       path_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), status="ready")
        s.add(doc)
        await s.flush()
        for i in range(chunks):
            s.add(DocumentChunk(document_id=doc.id, user_id=owner, collection=collection,
                                tags=tags or [], chunk_index=i,
                                content=f"lynx sighting {i} in the valley",
                                embedding=[1.0] + [0.0] * 383,
                                embedding_model="all-MiniLM-L6-v2", embedding_dim=384))
        return doc.id


async def _upload(client: httpx.AsyncClient, h: dict[str, str], name: str,
                  **form: str) -> httpx.Response:
    return await client.post(f"{API}/documents", headers=h, data=form,
                             files={"file": (name, b"Lynx notes in the valley.", "text/plain")})


async def test_upload_tag_with_trailing_zero_width_space_is_the_same_tag(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """A user pasting the tag "news" with a trailing zero-width space expects the tag
    "news" (tags are documented as trimmed; a tag of only a zero-width space is blank)."""
    _, h = await make_user(database)
    r = await _upload(kclient, h, "a.txt", tags='["news\u200b", "\u200b"]')
    assert r.status_code in (202, 422), r.text
    if r.status_code == 202:
        assert r.json()["document"]["tags"] == ["news"], r.text


async def test_collection_of_hangul_fillers_only_is_blank(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """A collection that shows nothing (Hangul fillers, default-ignorable) is blank like
    one of spaces: none, or a 422 like a zero-width one; never an invisible collection."""
    _, h = await make_user(database)
    r = await _upload(kclient, h, "b.txt", collection="\u3164\u3164")
    assert r.status_code in (202, 422), r.text
    if r.status_code == 202:
        assert r.json()["document"]["collection"] is None, r.text


async def test_rename_to_hangul_fillers_only_is_refused(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """Renaming a document to a name that shows nothing is a 422 ("when nothing is
    left"), as a name of zero-width spaces is."""
    uid, h = await make_user(database)
    doc = await _doc(database, uid)
    zw = await kclient.patch(f"{API}/documents/{doc}", headers=h, json={"name": "\u200b\u200b"})
    assert zw.status_code == 422, zw.text
    r = await kclient.patch(f"{API}/documents/{doc}", headers=h, json={"name": "\u3164\u3164"})
    assert r.status_code == 422, r.text


async def test_search_collection_filter_of_invisible_characters_is_no_filter(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """A search `collection` that shows nothing (a zero-width space) is blank: no filter,
    as `" "` is (or a 422), never a silent empty answer."""
    uid, h = await make_user(database)
    await _doc(database, uid, collection="Field")
    r = await kclient.post(f"{API}/search", headers=h,
                           json={"query": "lynx", "mode": "text", "collection": "\u200b"})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:
        assert len(r.json()["results"]) == 1, r.text
