"""Documents made by a directory ingestion whose file names are hostile."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import ingest, principal
from tests.support.identity import make_user
from tests.support.sql import fetch


@pytest.mark.parametrize("raw", [
    "invoice\u202egpj.md",      # RTL override: shows as "invoicedm.jpg"
    "line\nbreak.md",           # a newline
    "\x1b[31mred.md",           # an ANSI escape
    "zero\u200bwidth.md",       # zero-width space
])
async def test_a_file_names_invisible_and_control_characters_are_not_kept_in_the_document_name(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path, raw: str,
) -> None:
    """A document ingested from a directory is named as an uploaded one is (characters
    that do not print dropped): an RTL override no longer spoofs "invoicedm.jpg", an ANSI
    escape no longer reaches terminals (the file's name was stored as it was)."""
    user, _ = await make_user(database)
    (ingest_root / "d").mkdir()
    (ingest_root / "d" / raw).write_text("herons wade in the water at dawn")
    run = await ingest(database, principal(user), kcfg, "d")
    assert run["status"] == "success", run["errors"]
    names = [r.name for r in await fetch(database, "SELECT name FROM documents WHERE user_id = :u", u=user)]
    assert len(names) == 1
    assert all(ch.isprintable() for ch in names[0]), names


async def test_a_decomposed_file_name_is_stored_composed(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A Mac-made "café.md" (decomposed) ingested from a directory is named "café.md"
    composed, as an upload is (it was stored decomposed)."""
    user, _ = await make_user(database)
    (ingest_root / "d").mkdir()
    nfd = unicodedata.normalize("NFD", "café.md")
    (ingest_root / "d" / nfd).write_text("herons wade in the water at dawn")
    run = await ingest(database, principal(user), kcfg, "d")
    assert run["status"] == "success", run["errors"]
    names = [r.name for r in await fetch(database, "SELECT name FROM documents WHERE user_id = :u", u=user)]
    assert names == [unicodedata.normalize("NFC", "café.md")]
