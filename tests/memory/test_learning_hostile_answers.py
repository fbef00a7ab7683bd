"""Learning from text against what a model may answer: JSON Python's reader refuses (a
5,000-digit number, nesting 100,000 deep) is unusable output like other malformed JSON (it
escaped as a raw ValueError/RecursionError, without the failure's audit record, and the
job was retried, paying the model again); a fact of control characters only is blank; a
relation spelt another way (decomposed, a no-break or zero-width space) is the stored one
when the previous version of a fact is looked for."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.llm.gateway import LLMGateway
from roost.memory.extraction import ModelOutputInvalid
from roost.tasks.worker import Worker
from tests.memory.test_learning import (  # noqa: F401  (fixtures)
    API,
    _wait,
    chat_requests,
    decided,
    extracted,
    fact,
    gateway,
    remember,
    rows,
    run_learn,
    test_settings,
    worker,
)
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer

BIG_NUMBER_ANSWER = '{"facts": [{"content": "The user likes tea", "confidence": ' + "1" * 5000 + "}]}"
DEEP_ANSWER = '{"facts": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize("answer", [BIG_NUMBER_ANSWER, DEEP_ANSWER], ids=["5000-digits", "deep"])
async def test_a_malformed_json_answer_is_unusable_model_output(
        database: Database, gateway: LLMGateway, stub: StubServer, answer: str) -> None:  # noqa: F811
    """A model answer Python's JSON reader refuses is unusable model output: nothing
    stored, a failed memory.learn audit record."""
    user_id, _ = await make_user(database)
    stub.script(Reply(answer))
    with pytest.raises(ModelOutputInvalid):
        await run_learn(database, gateway, user_id, "I like tea.")
    assert await rows(database, "SELECT id FROM memories") == []
    audited = await rows(database, "SELECT success FROM audit_logs WHERE action = 'memory.learn'")
    assert [a[0] for a in audited] == [False]


async def test_a_malformed_json_answer_fails_the_job_at_once(
        database: Database, gateway: LLMGateway, client: httpx.AsyncClient,  # noqa: F811
        stub: StubServer, worker: Worker) -> None:  # noqa: F811
    """Through the queue, such an answer dead-letters the job at its first attempt (no
    retry paying the model again for the same prompt), saying the answer is not usable."""
    _, headers = await make_user(database)
    stub.script(Reply(BIG_NUMBER_ANSWER), Reply(BIG_NUMBER_ANSWER), Reply(BIG_NUMBER_ANSWER),
                Reply(BIG_NUMBER_ANSWER))
    queued = await client.post(f"{API}/learn", headers=headers, json={"text": "I like tea."})
    assert queued.status_code == 202, queued.text
    job = await _wait(client, headers, queued.json()["task_id"])
    assert job["status"] == "dead_letter", job
    assert "the model's extraction answer" in (job["error"] or ""), job
    assert len(stub.requests("/v1/chat/completions")) == 1


async def test_a_control_character_only_fact_is_blank(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:  # noqa: F811
    """A fact of control characters only (BEL, backspace, DEL) shows nothing, and the
    content hash reads it as the empty text: refused as blank, not stored invisible."""
    user_id, _ = await make_user(database)
    stub.script(extracted(fact("\x07\x08\x7f")))
    with pytest.raises(ModelOutputInvalid):
        await run_learn(database, gateway, user_id, "ding")
    assert await rows(database, "SELECT content FROM memories") == []


@pytest.mark.parametrize("spelling", [
    pytest.param(unicodedata.normalize("NFD", "épouse_de"), id="nfd"),
    pytest.param("épouse\u00a0de", id="nbsp"),
    pytest.param("épouse\u200b_de", id="zero-width"),
])
async def test_the_previous_version_with_a_differently_spelt_relation_comes_first(
        database: Database, gateway: LLMGateway, stub: StubServer, spelling: str) -> None:  # noqa: F811
    """The memory stating the subject's same relation (stored as the graph cleans it) is
    the first candidate for a new fact stating it with combining accents, a no-break or a
    zero-width space (it ranked below newer memories merely naming the subject, and with
    enough of those was not shown to the model at all)."""
    user_id, _ = await make_user(database)
    stored = "épouse de" if spelling == "épouse\u00a0de" else "épouse_de"
    old = await remember(database, user_id, "qwerty uiop", relationships=[
        {"source": "Ada", "relation": stored, "target": "Charles"}])
    for i in range(3):
        await remember(database, user_id, f"asdfg hjkl {i}", entities=[{"name": "Ada"}])
    stub.script(extracted(fact("zxcvb nmlkj", relationships=[
        {"source": "Ada", "relation": spelling, "target": "William"}])),
        decided({"fact_index": 0, "action": "add"}))
    report = await run_learn(database, gateway, user_id, "text")
    assert len(report.request_ids) == 2
    shown: dict[str, Any] = json.loads(chat_requests(stub)[1]["messages"][-1]["content"])
    candidates = shown["new_facts"][0]["candidate_ids"]
    assert candidates and candidates[0] == str(old.id), candidates
