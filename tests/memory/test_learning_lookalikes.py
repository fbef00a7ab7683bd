"""Learning facts that look alike: one fact spelt with composed or combining accents, or
with a zero-width character, is one fact; an update whose content shows nothing keeps
the fact's own text."""

from __future__ import annotations

import unicodedata

from roost.db.engine import Database
from roost.llm.gateway import LLMGateway
from tests.memory.test_learning import (  # noqa: F401  (fixtures)
    decided,
    extracted,
    fact,
    gateway,
    remember,
    rows,
    run_learn,
    test_settings,
)
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer


async def test_nfc_and_nfd_twins_of_one_fact_are_one_memory(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:  # noqa: F811
    """One fact stated twice, composed and with combining accents (they look the same), is
    stored once (it was stored twice)."""
    user_id, _ = await make_user(database)
    composed = "Zoë lives in Besançon"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    stub.script(extracted(fact(composed), fact(decomposed)))
    report = await run_learn(database, gateway, user_id, "Zoë lives in Besançon.")
    contents = [r[0] for r in await rows(database, "SELECT content FROM memories")]
    assert len(contents) == 1, (contents, report)


async def test_a_fact_differing_by_a_zero_width_space_is_known(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:  # noqa: F811
    """A fact already stored but for a zero-width space is unchanged at once, with no
    further call (it went to reconciliation and, on "add", became a look-alike memory)."""
    user_id, _ = await make_user(database)
    known = await remember(database, user_id, "The user's cat is called Miso")
    # Were it shown to the reconciliation, a model seeing other bytes may well say "add".
    stub.script(extracted(fact("The user's cat is called\u200b Miso")),
                decided({"fact_index": 0, "action": "add"}))
    report = await run_learn(database, gateway, user_id, "My cat is called Miso")
    assert report.unchanged == [known.id] and not report.added, report


async def test_an_update_with_an_invisible_content_keeps_the_facts_text(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:  # noqa: F811
    """An update's content of zero-width characters only is blank: the fact's own text is
    used (it replaced the memory's text: an invisible memory)."""
    user_id, _ = await make_user(database)
    old = await remember(database, user_id, "The user likes tea")
    stub.script(extracted(fact("The user likes green tea")),
                decided({"fact_index": 0, "action": "update", "target_id": str(old.id),
                         "content": "\u200b\u2060"}))
    report = await run_learn(database, gateway, user_id, "I like green tea")
    [content] = [r[0] for r in await rows(database, "SELECT content FROM memories WHERE id = :i",
                                          i=old.id)]
    assert content == "The user likes green tea", (content, report)
