"""Invisible characters in positions and topics, and Markdown confidence lines, through
the API and a real worker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from roost.tasks.worker import Worker
from tests.chat.conftest import add_provider
from tests.debates.conftest import Headers, start, wait_for_debate
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply


def two() -> list[dict[str, Any]]:
    return [{"id": "x", "model": "stub-model"}, {"id": "y", "model": "stub-model"}]


async def test_positions_differing_only_by_an_invisible_character_are_422(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """"tabs" and "tabs<ZERO WIDTH SPACE>" (pasted from a web page) are one position twice:
    a 422 (they were two distinct positions no model can rank apart)."""
    _, headers = user
    for positions in (["tabs", "tabs\u200b"], ["tabs", "\u2060tabs"]):
        resp = await client.post("/api/v1/debates", headers=headers, json={
            "topic": "t", "positions": positions, "participants": two()})
        assert resp.status_code == 422, (positions, resp.text)


async def test_invisible_default_ignorable_positions_and_topic_are_blank(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """Positions and topics of invisible characters only are blank (422), Hangul fillers
    (U+3164, U+115F, U+1160, U+FFA0) and the combining grapheme joiner (U+034F) included:
    default-ignorable but not format characters, they were accepted."""
    _, headers = user
    for blank in ("\u3164", "\u115f\u1160", "\u034f", "\uffa0"):
        resp = await client.post("/api/v1/debates", headers=headers, json={
            "topic": "t", "positions": [blank, "b"], "participants": two()})
        assert resp.status_code == 422, (blank, resp.text)
        resp = await client.post("/api/v1/debates", headers=headers, json={
            "topic": blank, "positions": ["a", "b"], "participants": two()})
        assert resp.status_code == 422, (blank, resp.text)


async def test_a_position_with_a_trailing_zero_width_space_matches_a_plain_ballot(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A position pasted as "tabs<ZWSP>" is stored "tabs" and a ballot naming "tabs"
    counts (the debate failed after every turn was paid for: "unknown position")."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("a.\nConfidence: 0.5"), Reply("b.\nConfidence: 0.5"),
                *[Reply(json={"ranking": ["tabs", "spaces"], "confidence": 0.5})] * 2)
    created = await start(client, headers, topic="t", positions=["tabs\u200b", "spaces"],
                          total_rounds=1, participants=two())
    done = await asyncio.wait_for(wait_for_debate(client, headers, created["id"]), 30)
    assert done["status"] == "completed", done["error_message"]


async def test_a_markdown_bold_confidence_line_is_read(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """"**Confidence:** 0.8" and "Confidence: **0.6**", as models writing Markdown end,
    are read as 0.8 and 0.6 (they were stored as 0)."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("My case.\n**Confidence:** 0.8"), Reply("Mine.\nConfidence: **0.6**"),
                *[Reply(json={"ranking": ["a", "b"], "confidence": 0.5})] * 2)
    created = await start(client, headers, topic="t", positions=["a", "b"], total_rounds=1,
                          participants=two())
    done = await asyncio.wait_for(wait_for_debate(client, headers, created["id"]), 30)
    assert done["status"] == "completed", done["error_message"]
    assert [float(t["confidence"]) for t in done["turns"]] == [0.8, 0.6]


def test_a_signed_or_run_on_confidence_is_not_read() -> None:
    """Markdown is allowed around the value, a sign or another number is not: "-0.5" is
    no confidence of 0.5, "0.8.5" none of 0.8."""
    from roost.debates.prompts import turn_confidence

    assert turn_confidence("x\n**Confidence:** 0.8") == 0.8
    assert turn_confidence("x\nConfidence: -0.5") == 0.0
    assert turn_confidence("x\nConfidence: 0.8.5") == 0.0
