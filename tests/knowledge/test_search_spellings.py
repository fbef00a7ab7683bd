"""Text search and Unicode spellings of one word: documents are stored composed (NFC) and
queries are composed and stripped of invisible ends, so "résumé" typed or saved either way
is found, and a pasted trailing zero-width space does not hide the last word (each found
nothing before)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.conftest import ingest_root, kcfg, kclient, ksettings  # noqa: F401
from tests.knowledge.support import drain_jobs, upload
from tests.support.identity import make_user

API = "/api/v1/knowledge"


async def _text_hits(client: httpx.AsyncClient, database: Database, cfg: KnowledgeConfig,
                     content: str, query: str) -> list[dict[str, Any]]:
    """Upload ``content`` as a new user's only document, then search it in text mode."""
    _, headers = await make_user(database)
    answer = await upload(client, headers, "notes.txt", content.encode())
    assert answer.status_code in (201, 202), answer.text
    await drain_jobs(database, cfg)
    found = await client.post(f"{API}/search", headers=headers,
                              json={"query": query, "mode": "text"})
    assert found.status_code == 200, found.text
    hits: list[dict[str, Any]] = found.json()["results"]
    return hits


@pytest.mark.parametrize(("content", "query"), [
    ("Le r\u00e9sum\u00e9 du projet.", "re\u0301sume\u0301"),
    ("Le re\u0301sume\u0301 du projet.", "r\u00e9sum\u00e9"),
], ids=["decomposed-query", "decomposed-document"])
async def test_a_word_is_found_whichever_way_its_accents_are_spelt(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,  # noqa: F811
    content: str, query: str,
) -> None:
    """A query typed decomposed (e + U+0301, as macOS input may send it) finds the document
    saying "résumé" composed, and a document written decomposed (a file saved on macOS) is
    found by the word typed composed: both are composed before the full-text index
    compares them."""
    hits = await _text_hits(kclient, database, kcfg, content, query)
    assert len(hits) == 1, hits


async def test_a_query_with_a_trailing_zero_width_space_still_finds_the_word(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,  # noqa: F811
) -> None:
    """A query pasted with a zero-width space after it ("zebra" + U+200B) searches for
    "zebra", as an agent's retrieval does."""
    hits = await _text_hits(kclient, database, kcfg, "Zebra apple.", "zebra\u200b")
    assert len(hits) == 1, hits
