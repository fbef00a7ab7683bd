"""Positions as Unicode text: invisible ones are blank, two spellings of one text are one
position, and a ballot names a position in either spelling."""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from typing import Any

import httpx

from roost.debates.prompts import parse_ballot
from roost.tasks.worker import Worker
from tests.chat.conftest import add_provider
from tests.debates.conftest import Headers, start, wait_for_debate
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply


def _models(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "model": "stub-model"} for i in ids]


async def test_an_invisible_position_is_422(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """A position of zero-width characters only shows nothing: blank, a 422 as a blank
    topic is (``p.strip()`` keeps format characters: it was accepted)."""
    _, headers = user
    for blank in ["\u200b", "\u200b\u2060", "\ufeff"]:
        resp = await client.post("/api/v1/debates", headers=headers, json={
            "topic": "t", "positions": ["a", blank], "participants": _models("x", "y")})
        assert resp.status_code == 422, (repr(blank), resp.text)


async def test_canonically_equal_positions_are_422(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """"café" composed (U+00E9) and decomposed (e + U+0301) are one text: two positions
    equal but for that are a 422, as ones equal but for case are (both were accepted:
    "café" argued against "café", no ballot could tell them apart)."""
    _, headers = user
    nfc = "caf\u00e9"
    nfd = unicodedata.normalize("NFD", nfc)
    resp = await client.post("/api/v1/debates", headers=headers, json={
        "topic": "t", "positions": [nfc, nfd], "participants": _models("x", "y")})
    assert resp.status_code == 422, resp.text


async def test_a_decomposed_position_matches_a_composed_ballot(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A position typed decomposed ("cafe" + U+0301, as macOS input often gives) matches
    ballots that name it composed ("café"): every ballot "named 1 unknown position" and
    the debate failed after all its model calls."""
    _, headers = user
    await asyncio.wait_for(add_provider(client, admin_headers, stub), 30)
    nfd = unicodedata.normalize("NFD", "caf\u00e9")
    stub.script(Reply("a.\nConfidence: 0.5"), Reply("b.\nConfidence: 0.5"),
                Reply(json={"ranking": ["caf\u00e9", "tea"], "confidence": 1}),
                Reply(json={"ranking": ["tea", "caf\u00e9"], "confidence": 1}))
    created = await asyncio.wait_for(start(
        client, headers, topic="t", positions=[nfd, "tea"], participants=_models("x", "y"),
        total_rounds=1, voting_method="borda"), 30)
    done = await asyncio.wait_for(wait_for_debate(client, headers, created["id"]), 30)
    assert done["status"] == "completed", done["error_message"]


def test_a_ballot_matches_a_position_stored_in_either_spelling() -> None:
    """Debates stored before positions were composed keep their spelling: the ballot's
    names and the positions are compared in one form."""
    nfd = unicodedata.normalize("NFD", "Caf\u00e9")
    ranking, _ = parse_ballot('{"ranking": ["tea", " caf\u00c9 "], "confidence": 0.5}',
                              [nfd, "tea"])
    assert ranking == ["tea", nfd]
