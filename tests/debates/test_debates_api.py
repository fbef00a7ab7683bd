"""Debates through the API and a real worker, the stub provider scripted: each voting
method, a Condorcet cycle, junk ballots, bad input, another tenant, cancel, resuming."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.debates import jobs as debate_jobs
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent
from tests.chat.conftest import add_provider
from tests.debates.conftest import Headers, start, wait_for_debate
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Fail, Reply
from tests.support.sql import scalar

POSITIONS = ["fish", "dogs", "cats"]
# alice (1): fish > dogs > cats; bob (1): dogs > fish > cats; carol (2.5): cats > fish > dogs
BALLOTS = {"alice": ["fish", "dogs", "cats"], "bob": ["dogs", "fish", "cats"],
           "carol": ["cats", "fish", "dogs"]}
WEIGHTS = {"alice": 1, "bob": 1, "carol": 2.5}


def participants(**extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": pid, "model": "stub-model", "weight": WEIGHTS[pid], **extra.get(pid, {})}
            for pid in BALLOTS]


def turns(n: int) -> list[Reply]:
    return [Reply(f"argument {i} for my side.\nConfidence: 0.{i}") for i in range(1, n + 1)]


def ballots(rankings: dict[str, list[str]]) -> list[Reply]:
    return [Reply(json={"ranking": r, "confidence": 0.75}) for r in rankings.values()]


@pytest.mark.parametrize(("method", "winner", "tied", "scores"), [
    # first preferences 1/1/1: a three-way tie, the first listed wins
    ("majority", "fish", ["fish", "dogs", "cats"], {"fish": 1, "dogs": 1, "cats": 1}),
    ("weighted", "cats", [], {"fish": 1, "dogs": 1, "cats": 2.5}),
    # fish 2+1+2.5*1, dogs 1+2+0, cats 0+0+2.5*2
    ("borda", "fish", [], {"fish": 5.5, "dogs": 3, "cats": 5}),
    # cats beats fish 2.5:2 and dogs 2.5:2
    ("condorcet", "cats", [], {"fish": 1, "dogs": 0, "cats": 2}),
])
async def test_a_debate_with_each_voting_method(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, method: str, winner: str,
    tied: list[str], scores: dict[str, float],
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(*turns(6), *ballots(BALLOTS))
    created = await start(client, headers, topic="Best pet?", positions=POSITIONS,
                          participants=participants(), total_rounds=2, voting_method=method)
    assert created["status"] == "pending" and created["task_id"]
    # Round-robin positions in the order given.
    assert [p["position"] for p in created["participants"]] == POSITIONS
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "completed", done
    assert done["final_winner"] == winner and done["result"]["winner"] == winner
    assert done["result"]["method"] == method and done["result"]["tied"] == tied
    assert done["result"]["scores"] == scores
    assert done["current_round"] == 2 and done["completed_at"]
    assert [(t["round_number"], t["turn_number"], t["participant_id"], t["position"])
            for t in done["turns"]] == [
        (1, 1, "alice", "fish"), (1, 2, "bob", "dogs"), (1, 3, "carol", "cats"),
        (2, 4, "alice", "fish"), (2, 5, "bob", "dogs"), (2, 6, "carol", "cats")]
    assert float(done["turns"][2]["confidence"]) == 0.3
    assert all(t["tokens_used"] > 0 and t["llm_request_id"] for t in done["turns"])
    assert {b["participant_id"]: b["ranking"] for b in done["ballots"]} == BALLOTS
    assert {b["participant_id"]: float(b["weight"]) for b in done["ballots"]} == WEIGHTS
    # Each turn saw the earlier ones; the ballots were asked for JSON.
    seen = stub.requests(path="/v1/chat/completions")
    assert len(seen) == 9
    fourth = seen[3].body["messages"][-1]["content"]
    assert "argument 1" in fourth and "argument 3" in fourth and "round 2 of 2" in fourth
    assert "You argue for: fish" in fourth
    assert seen[6].body["response_format"] == {"type": "json_object"}
    async with database.transaction() as session:
        actions = (await session.scalars(text(
            "SELECT action FROM audit_logs WHERE resource_id = :d ORDER BY seq"),
            {"d": created["id"]})).all()
        usage = await session.scalar(text(
            "SELECT count(*) FROM llm_requests WHERE user_id = :u AND status = 'completed'"),
            {"u": user_id})
    assert actions[0] == "debate.create" and actions[-1] == "debate.complete"
    assert actions.count("debate.turn") == 6 and actions.count("debate.ballot") == 3
    assert usage == 9


async def test_a_condorcet_cycle_is_reported_and_schulze_decides(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    cycle = {"alice": ["fish", "dogs", "cats"], "bob": ["dogs", "cats", "fish"],
             "carol": ["cats", "fish", "dogs"]}
    stub.script(*turns(3), *ballots(cycle))
    body = participants()
    for p in body:
        p["weight"] = 1
    created = await start(client, headers, topic="Best pet?", positions=POSITIONS,
                          participants=body, total_rounds=1, voting_method="condorcet")
    done = await wait_for_debate(client, headers, created["id"])
    result = done["result"]
    assert done["status"] == "completed", done
    assert result["condorcet_winner"] is None and result["no_condorcet_winner"] is True
    assert "no Condorcet winner" in result["note"]
    assert sorted(result["schulze_winners"]) == sorted(POSITIONS)
    assert result["winner"] == "fish" and result["tied"] == POSITIONS
    assert result["tie_break"] and result["support"]["fish"]["dogs"] == 2


async def test_an_agent_participant_speaks_with_its_instructions(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, system_prompt="You are a grumpy cat.",
                             preferred_model="stub-model")
    stub.script(*turns(2), Reply(json={"ranking": ["cats", "dogs"], "confidence": 1}),
                Reply('```json\n{"ranking": [" Cats", "DOGS"], "confidence": 0.5}\n```'))
    created = await start(client, headers, topic="Cats or dogs?", positions=["cats", "dogs"],
                          participants=[{"id": "tom", "agent_id": str(agent.id)},
                                        {"id": "rex", "model": "stub-model",
                                         "provider": "stub", "position": "dogs"}],
                          total_rounds=1, voting_method="borda")
    assert created["participants"][0]["model"] == "stub-model"
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "completed", done
    assert done["final_winner"] == "cats"
    assert done["ballots"][1]["ranking"] == ["cats", "dogs"]  # spelled as the debate does
    seen = stub.requests(path="/v1/chat/completions")
    assert seen[0].body["messages"][0]["content"].startswith("You are a grumpy cat.")
    assert "You are rex" in seen[1].body["messages"][0]["content"]


async def test_a_ballot_s_token_cap_fits_the_ranking_it_asks_for(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """20 positions of 255 characters (the most allowed) need far more than 300 tokens to
    be ranked in JSON: the ballot's max_tokens leaves room for the answer it asks for, so a
    real model is not cut off mid-JSON after every turn was paid for."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    positions = [(f"{i:02d} " + "word " * 51)[:255] for i in range(20)]
    answer = {"ranking": positions, "confidence": 0.5}
    stub.script(*turns(2), *[Reply(json=answer)] * 2)
    created = await start(client, headers, topic="t", positions=positions, total_rounds=1,
                          participants=[{"id": "x", "model": "stub-model"},
                                        {"id": "y", "model": "stub-model"}])
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "completed", done["error_message"]
    ballot = next(s for s in stub.requests(path="/v1/chat/completions")
                  if s.body.get("response_format"))
    # about 4 characters a token in English: the answer fits with room to spare
    assert ballot.body["max_tokens"] * 4 >= 2 * len(json.dumps(answer)), ballot.body["max_tokens"]


async def test_a_junk_ballot_fails_the_debate_with_the_reason(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(*turns(3), Reply(json={"ranking": ["fish", "dogs", "cats"]}),
                Reply(json={"ranking": ["fish", "unicorns", "cats"], "confidence": 0.5}))
    created = await start(client, headers, topic="Best pet?", positions=POSITIONS,
                          participants=participants(), total_rounds=1, voting_method="borda")
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "failed" and done["final_winner"] is None
    assert "ballot of participant 'bob' is not valid" in done["error_message"]
    assert "unknown position" in done["error_message"]
    assert [b["participant_id"] for b in done["ballots"]] == ["alice"]  # kept


async def test_a_deeply_nested_ballot_fails_the_debate_without_retrying(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A ballot of thousands of nested brackets is an invalid ballot (the debate fails with
    the reason after one ballot call), not a RecursionError crashing the job six times."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    deep = '{"ranking": ' + "[" * 5000 + "]" * 5000 + ', "confidence": 0.5}'
    stub.script(*turns(2), *[Reply(deep)] * 6)
    created = await start(client, headers, topic="Best pet?", positions=["fish", "dogs"],
                          participants=[{"id": "alice", "model": "stub-model"},
                                        {"id": "bob", "model": "stub-model"}],
                          total_rounds=1)
    done = await wait_for_debate(client, headers, created["id"], within=40)
    assert done["status"] == "failed", done
    assert "ballot of participant 'alice' is not valid" in done["error_message"]
    assert "nested too deeply" in done["error_message"]
    asked = [r for r in stub.requests(path="/v1/chat/completions")
             if "Rank every position" in r.body["messages"][-1]["content"]]
    assert len(asked) == 1, len(asked)


async def test_nul_characters_in_model_answers_are_dropped_not_retried(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """Turns and ballots holding U+0000 (which PostgreSQL cannot store) are saved without
    it: the debate completes with one model call each, not six retries per turn."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("for\x00 fish\nConfidence: 0.5"), Reply("for dogs\x00\nConfidence: 0.5"),
                Reply('{"ranking": ["fish", "dogs"], "confidence": 0.5}\x00'),
                Reply('{"ranking": ["fish", "dogs"],\x00 "confidence": 0.5}'))
    created = await start(client, headers, topic="Best pet?", positions=["fish", "dogs"],
                          participants=[{"id": "x", "model": "stub-model"},
                                        {"id": "y", "model": "stub-model"}], total_rounds=1)
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "completed" and done["final_winner"] == "fish", done
    assert done["turns"][0]["content"] == "for fish\nConfidence: 0.5"
    assert len(stub.requests(path="/v1/chat/completions")) == 4


async def test_an_unknown_model_fails_the_debate_at_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    created = await start(client, headers, topic="t", positions=["a", "b"], participants=[
        {"id": "x", "model": "stub-model"}, {"id": "y", "model": "no-such-model"}])
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "failed" and "participant 'y'" in done["error_message"]
    assert len(done["turns"]) == 1


async def test_a_provider_failure_is_retried_and_resumes_without_redoing_turns(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(*turns(2), Fail(500), *turns(3)[2:], *ballots(BALLOTS))
    created = await start(client, headers, topic="Best pet?", positions=POSITIONS,
                          participants=participants(), total_rounds=1, voting_method="weighted")
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "completed", done
    assert [t["turn_number"] for t in done["turns"]] == [1, 2, 3]
    asked = [s.body["messages"][-1]["content"] for s in stub.requests(path="/v1/chat/completions")]
    turn_prompts = [a for a in asked if "You argue for" in a]
    # Turns 1 and 2 were asked once; turn 3 twice (the failure, then the retried job).
    assert [("You argue for: cats" in a) for a in turn_prompts] == [False, False, True, True]
    async with database.transaction() as session:
        attempts = await session.scalar(text(
            "SELECT retry_count FROM background_tasks WHERE id = :t"), {"t": done["task_id"]})
    assert attempts == 1


async def test_bad_input_is_422(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    _, headers = user
    other_id, _ = other_user
    theirs = await make_agent(database, other_id)
    good = {"topic": "t", "positions": ["a", "b"],
            "participants": [{"id": "x", "model": "m"}, {"id": "y", "model": "m"}]}
    cases: list[dict[str, Any]] = [
        {**good, "participants": [{"id": "x", "model": "m"}]},  # one participant
        {**good, "positions": []},  # no positions
        {**good, "positions": ["a"]},
        {**good, "positions": ["a", "A "]},  # not distinct
        {**good, "participants": [{"id": "x", "model": "m"}, {"id": "x", "model": "m"}]},
        {**good, "participants": [{"id": "x", "model": "m", "agent_id": str(uuid.uuid4())},
                                  {"id": "y", "model": "m"}]},
        {**good, "participants": [{"id": "x"}, {"id": "y", "model": "m"}]},
        {**good, "participants": [{"id": "x", "model": "m", "position": "c"},
                                  {"id": "y", "model": "m"}]},
        {**good, "participants": [{"id": "x", "model": "m", "weight": 0},
                                  {"id": "y", "model": "m"}]},
        {**good, "voting_method": "approval"},
        {**good, "total_rounds": 0},
        {**good, "total_rounds": "2"},
        {**good, "extra": 1},
        {**good, "topic": "t\x00"},  # a NUL: named, not the database's anonymous 400
        {**good, "topic": "   "},  # blank, as blank positions are
        {**good, "topic": "\t\n"},
        {**good, "topic": "\u200b \u2060"},  # zero-width characters show nothing either
        {**good, "positions": ["a\x00", "b"]},
        {**good, "participants": [{"id": "x", "model": "m\x00"}, {"id": "y", "model": "m"}]},
    ]
    for body in cases:
        resp = await client.post("/api/v1/debates", json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
    # Another user's agent is not one of yours.
    resp = await client.post("/api/v1/debates", headers=headers, json={
        **good, "participants": [{"id": "x", "agent_id": str(theirs.id)},
                                 {"id": "y", "model": "m"}]})
    assert resp.status_code == 404, resp.text
    async with database.transaction() as session:
        assert await session.scalar(text("SELECT count(*) FROM debate_sessions")) == 0


@pytest.mark.parametrize("weight", [1e-7, 2.5e-7, 1.0000004, 0.30000000000000004])
async def test_a_weight_the_database_would_round_is_422(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], weight: float,
) -> None:
    """Weights are stored with 6 decimal places: 1e-7 would become 0 (the debate failing
    after every model call) and 1.0000004 would tie with 1, though the arithmetic is
    exact.  Such a weight is refused at once, naming the field."""
    _, headers = user
    resp = await client.post("/api/v1/debates", headers=headers, json={
        "topic": "t", "positions": ["a", "b"],
        "participants": [{"id": "x", "model": "m", "weight": weight},
                         {"id": "y", "model": "m", "weight": 0.000001}]})
    assert resp.status_code == 422, resp.text
    assert "weight" in resp.text, resp.text


async def test_another_tenant_sees_nothing_and_cancel(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers], admin_headers: Headers, database: Database,
) -> None:
    user_id, headers = user
    _, their_headers = other_user
    created = await start(client, headers, topic="t", positions=["a", "b"], participants=[
        {"id": "x", "model": "m"}, {"id": "y", "model": "m"}])
    path = f"/api/v1/debates/{created['id']}"
    assert (await client.get(path, headers=their_headers)).status_code == 404
    assert (await client.post(f"{path}/cancel", headers=their_headers)).status_code == 404
    assert (await client.get("/api/v1/debates", headers=their_headers)).json()["items"] == []
    mine = (await client.get("/api/v1/debates?status=pending", headers=headers)).json()
    assert [d["id"] for d in mine["items"]] == [created["id"]]
    assert (await client.get(path, headers=admin_headers)).status_code == 200
    cancelled = await client.post(f"{path}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await client.post(f"{path}/cancel", headers=headers)
    assert again.status_code == 409
    # Row-level security: as roost_app in the other user's scope, no rows at all.
    async with database.transaction() as session:
        await session.execute(text("SELECT set_config('roost.user_id', :u, true), "
                                   "set_config('roost.is_admin', 'false', true), "
                                   "set_config('role', 'roost_app', true)"),
                              {"u": str(uuid.uuid4())})
        assert await session.scalar(text("SELECT count(*) FROM debate_sessions")) == 0
        await session.execute(text("SELECT set_config('roost.user_id', :u, true)"),
                              {"u": str(user_id)})
        assert await session.scalar(text("SELECT count(*) FROM debate_sessions")) == 1


async def test_a_debate_whose_job_died_for_good_is_failed_by_the_sweep(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    _, headers = user
    created = await start(client, headers, topic="Best pet?", positions=POSITIONS,
                          participants=participants(), total_rounds=1, voting_method="borda")
    assert await debate_jobs.sweep(database) == []  # its job is pending: alive
    async with database.transaction() as session:  # its last worker died: dead-lettered
        await session.execute(text("UPDATE background_tasks SET status = 'dead_letter' "
                                   "WHERE id = :t"), {"t": created["task_id"]})
        await session.execute(text("UPDATE debate_sessions SET created_at = now() - "
                                   "interval '1 minute' WHERE id = :d"), {"d": created["id"]})
    assert [str(d) for d in await debate_jobs.sweep(database)] == [created["id"]]
    failed = (await client.get(f"/api/v1/debates/{created['id']}", headers=headers)).json()
    assert failed["status"] == "failed" and "no retries left" in failed["error_message"]


async def _until_updates_wait(database: Database, waiting: int,
                              *tasks: asyncio.Task[httpx.Response]) -> None:
    """Until ``waiting`` UPDATEs of debate_sessions wait on a row lock (or a task ended)."""
    for _ in range(200):
        count = await scalar(database, "SELECT count(*) FROM pg_stat_activity WHERE "
                             "wait_event_type = 'Lock' AND query ILIKE 'UPDATE debate_sessions%'")
        if count >= waiting or any(t.done() for t in tasks):
            return
        await asyncio.sleep(0.05)


async def test_a_cancel_racing_the_runner_s_last_write_is_409_and_the_debate_stays_completed(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """A cancel that read the debate open, then waited on the row the runner was completing:
    409, the debate stays completed with its winner, no `debate.cancel` audited."""
    _, headers = user
    created = await start(client, headers, topic="t", positions=["a", "b"], participants=[
        {"id": "x", "model": "m"}, {"id": "y", "model": "m"}])
    debate_id = created["id"]
    async with database.transaction() as session:
        # The runner's last write (_decide): completed, the row locked until commit.
        await session.execute(text(
            "UPDATE debate_sessions SET status = 'completed', final_winner = 'a', "
            "completed_at = now() WHERE id = :d"), {"d": debate_id})
        cancel = asyncio.create_task(client.post(f"/api/v1/debates/{debate_id}/cancel",
                                                 headers=headers))
        await _until_updates_wait(database, 1, cancel)
    resp = await cancel
    assert resp.status_code == 409, resp.text
    after = (await client.get(f"/api/v1/debates/{debate_id}", headers=headers)).json()
    assert (after["status"], after["final_winner"]) == ("completed", "a")
    assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE "
                        "action = 'debate.cancel' AND resource_id = :d", d=debate_id) == 0


async def test_of_two_concurrent_cancels_one_is_200_and_audited_the_other_409(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    _, headers = user
    created = await start(client, headers, topic="t", positions=["a", "b"], participants=[
        {"id": "x", "model": "m"}, {"id": "y", "model": "m"}])
    debate_id = created["id"]
    async with database.transaction() as session:
        # Hold the row so both cancels read it open and then queue on it.
        await session.execute(text("SELECT 1 FROM debate_sessions WHERE id = :d FOR UPDATE"),
                              {"d": debate_id})
        cancels = [asyncio.create_task(client.post(f"/api/v1/debates/{debate_id}/cancel",
                                                   headers=headers)) for _ in range(2)]
        await _until_updates_wait(database, 2, *cancels)
    codes = sorted(r.status_code for r in await asyncio.gather(*cancels))
    assert codes == [200, 409], codes
    assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE "
                        "action = 'debate.cancel' AND resource_id = :d", d=debate_id) == 1


async def test_a_turn_longer_than_100_000_characters_is_stored_cut(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A provider ignoring the 800-token cap: the turn keeps its first 100,000 characters
    (its confidence read from the whole answer), the answer's length in raw_response."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("x" * 150_000 + "\nConfidence: 0.4"), Reply("short.\nConfidence: 0.6"),
                *ballots({"alice": ["fish", "dogs"], "bob": ["fish", "dogs"]}))
    created = await start(client, headers, topic="t", positions=["fish", "dogs"],
                          participants=[{"id": "alice", "model": "stub-model"},
                                        {"id": "bob", "model": "stub-model"}], total_rounds=1)
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "completed", done["error_message"]
    first, second = done["turns"]
    assert first["content"] == "x" * 100_000 and float(first["confidence"]) == 0.4
    assert second["content"] == "short.\nConfidence: 0.6"
    raw = await scalar(database, "SELECT raw_response FROM debate_turns WHERE id = :t",
                       t=first["id"])
    assert raw["truncated_from"] == 150_016, raw
    assert "truncated_from" not in await scalar(
        database, "SELECT raw_response FROM debate_turns WHERE id = :t", t=second["id"])
