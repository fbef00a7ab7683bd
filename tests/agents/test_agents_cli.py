"""``roost personas|agents|runs|secrets`` as a user runs them (the real console script),
each command acting for ``--user`` in that user's row-level-security scope."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text

from roost.agents import personas
from roost.agents.cli import _step_line
from roost.agents.models import RunStep
from roost.agents.schemas import MemberAdd
from roost.agents.secrets import resolve_secret
from roost.config import Settings
from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.keyfiles import load_keys
from roost.principal import Principal
from roost.security.crypto import SecretBox
from roost.tasks.worker import Worker
from tests.agents.api import columns_holding
from tests.agents.conftest import Headers, make_agent, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.support.pg import PgTestServer

VALUE = "sk-cli-9d81-the-plaintext-nobody-may-see"


def cli_env(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
            "ROOST_DATA_DIR": str(tmp_path / "cli-data")}


async def test_personas_agents_secrets_and_runs_from_the_command_line(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    owner_id, _ = await make_user(database, username="olga")
    victor_id, _ = await make_user(database, username="victor")
    await make_user(database, username="stan")

    def roost(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_roost(*args, env=env, stdin=stdin)

    # Each command is a process start (seconds on a busy machine): only what matters.
    created = roost("personas", "create", "Desk", "--user", "olga", "--system-prompt", "Be kind.",
                    "--email", "desk@example.test")
    assert created.returncode == 0, created.stderr
    assert "Created persona Desk" in created.stdout
    assert "Desk" in roost("personas", "ls", "--user", "olga").stdout
    hidden = roost("personas", "show", "Desk", "--user", "victor")
    assert hidden.returncode == 1 and "no persona you can see" in hidden.stderr

    async with database.transaction() as session:  # victor is invited as a viewer
        owner = Principal(user_id=owner_id, is_admin=False, kind="system")
        await apply_principal(session, owner)
        [view], _ = await personas.list_personas(session, owner)
        invited = await personas.add_member(session, owner, view.persona.id,
                                            MemberAdd(user="victor", role="viewer"))
    assert isinstance(invited, personas.InvitationView)
    async with database.transaction() as session:  # and joins
        victor = Principal(user_id=victor_id, is_admin=False, kind="system")
        await apply_principal(session, victor)
        await personas.accept_invitation(session, victor, invited.id)
    shown = roost("personas", "show", "Desk", "--user", "victor")
    assert shown.returncode == 0, shown.stderr
    assert "victor" in shown.stdout and "viewer" in shown.stdout and "Be kind." in shown.stdout

    # Secrets: read from standard input, never echoed, stored encrypted.
    set_ = roost("secrets", "set", "Desk", "llm_provider_key", "OPENAI_API_KEY", "--user", "olga",
                 stdin=VALUE + "\n")
    assert set_.returncode == 0, set_.stderr
    assert "Set llm_provider_key/OPENAI_API_KEY" in set_.stdout
    listed = roost("secrets", "ls", "Desk", "--user", "olga")
    assert "OPENAI_API_KEY" in listed.stdout
    denied = roost("secrets", "ls", "Desk", "--user", "victor")
    assert denied.returncode == 1 and "Forbidden" in denied.stderr
    too_long = roost("secrets", "set", "Desk", "other", "big", "--user", "olga",
                     stdin=VALUE * 2000)
    assert too_long.returncode == 1 and "value" in too_long.stderr
    for result in (set_, listed, denied, too_long):
        assert VALUE not in result.stdout + result.stderr
    assert await columns_holding(database, VALUE) == []
    box = SecretBox.from_keys(load_keys(Settings(data_dir=tmp_path / "cli-data")).secrets_key)
    assert await resolve_secret(database, box, view.persona.id, "llm_provider_key",
                                "OPENAI_API_KEY") == VALUE

    # Agents: tools checked, persona-bound ones seen by the persona's members only.
    made = roost("agents", "create", "scribe", "--name", "Scribe", "--persona", "Desk",
                 "--tool", "current_time", "--max-steps", "3", "--user", "olga")
    assert made.returncode == 0, made.stderr
    unknown = roost("agents", "create", "bad", "--tool", "rm_rf", "--user", "olga")
    assert unknown.returncode == 1 and "'rm_rf'" in unknown.stderr
    assert "scribe" in roost("agents", "ls", "--user", "victor").stdout
    assert "scribe" not in roost("agents", "ls", "--user", "stan").stdout
    config = roost("agents", "show", "scribe", "--user", "olga")
    assert config.returncode == 0 and "max_steps" in config.stdout

    # Runs: started without waiting (no worker here), shown by an id prefix, cancelled.
    started = roost("agents", "run", "scribe", "Take a note.", "--no-wait", "--user", "olga")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    uuid.UUID(run_id)
    assert run_id not in roost("runs", "ls", "--user", "stan").stdout
    show = roost("runs", "show", run_id[:13], "--user", "olga")
    assert show.returncode == 0 and "pending" in show.stdout and "Take a note." in show.stdout
    cancelled = roost("runs", "cancel", run_id, "--user", "olga")
    assert cancelled.returncode == 0 and "Cancelled" in cancelled.stdout

    removed = roost("secrets", "rm", "Desk", "llm_provider_key/OPENAI_API_KEY", "--user", "olga")
    assert removed.returncode == 0, removed.stderr
    assert roost("personas", "rm", "Desk", "--user", "victor").returncode == 1  # a viewer
    gone = roost("personas", "rm", "Desk", "--user", "olga")
    assert gone.returncode == 0, gone.stderr
    no_user = roost("personas", "ls")
    assert no_user.returncode == 1 and "--user" in no_user.stderr


async def test_agents_run_prints_each_step_then_the_answer(
    pg_server: PgTestServer, db_name: str, client: httpx.AsyncClient, admin_headers: Headers,
    stub: StubServer, database: Database, worker: Worker, tmp_path: Path,
) -> None:
    await add_provider(client, admin_headers, stub)
    user_id, _ = await make_user(database, username="rita")
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "Europe/Paris"})),
                Reply("It is noon in Paris."))
    # In a thread: the worker that executes the run lives on this test's event loop.
    done = await asyncio.to_thread(run_roost, "agents", "run", agent.slug, "What time is it?",
                                   "--user", "rita", env=cli_env(pg_server, db_name, tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "It is noon in Paris."
    lines = done.stderr
    assert lines.index("[1] llm_call completed") < lines.index("calls current_time") \
        < lines.index("[2] tool_call completed current_time") \
        < lines.index("[3] llm_call completed")
    assert "Europe/Paris" in lines


async def test_agents_run_with_a_nul_in_the_input_is_a_clear_error(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """`roost agents run SLUG -` with a NUL on stdin: exit 1 naming it, no traceback (it was
    the database's CharacterNotInRepertoireError); as the API's 422."""
    user_id, _ = await make_user(database, username="nina")
    agent = await make_agent(database, user_id)
    done = await asyncio.to_thread(
        run_roost, "agents", "run", agent.slug, "-", "--user", "nina", "--no-wait",
        env=cli_env(pg_server, db_name, tmp_path), stdin="before\u0000after")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "NUL" in done.stderr, done.stderr[-2000:]


async def test_a_like_wildcard_is_no_id_and_names_no_agent_or_persona(
    pg_server: PgTestServer, db_name: str, client: httpx.AsyncClient, database: Database,
    tmp_path: Path,
) -> None:
    """`%` or `_` is neither a slug, a name nor the start of an id (hex digits and
    dashes): nothing is run, deleted or shown (`roost agents rm _%` deleted the user's
    only agent)."""
    user_id, headers = await make_user(database, username="carl")
    agent = await make_agent(database, user_id)
    made = await client.post("/api/v1/personas", json={"name": "Desk"}, headers=headers)
    assert made.status_code == 201, made.text
    env = cli_env(pg_server, db_name, tmp_path)
    outcomes = []
    for args, says in ((("agents", "run", "%", "hi", "--no-wait"), "no agent"),
                       (("agents", "rm", "_%"), "no agent"),
                       (("agents", "show", "_"), "no agent"),
                       (("runs", "ls", "--agent", "%"), "no agent"),
                       (("personas", "show", "%"), "no persona")):
        done = await asyncio.to_thread(run_roost, *args, "--user", "carl", env=env)
        outcomes.append((args, done.returncode, says in done.stderr))
    assert outcomes == [(args, 1, True) for args, _, _ in outcomes]
    assert (await client.get(f"/api/v1/agents/{agent.id}", headers=headers)).status_code == 200
    assert (await client.get("/api/v1/runs", headers=headers)).json()["items"] == []
    # The start of an id still names the agent.
    shown = await asyncio.to_thread(run_roost, "agents", "show", str(agent.id)[:13].upper(),
                                    "--user", "carl", env=env)
    assert shown.returncode == 0 and agent.slug in shown.stdout, shown.stderr[-2000:]


async def test_runs_show_prints_no_terminal_escapes_from_the_model(
    pg_server: PgTestServer, db_name: str, client: httpx.AsyncClient, admin_headers: Headers,
    stub: StubServer, database: Database, worker: Worker, tmp_path: Path,
) -> None:
    """A model's answer with a window-title and a clear-screen sequence: `roost runs show`
    prints the escapes visibly (`\\x1b`), never the control characters themselves."""
    await add_provider(client, admin_headers, stub)
    user_id, headers = await make_user(database, username="tess")
    agent = await make_agent(database, user_id)
    stub.script(Reply("fine\u001b]0;owned\u0007\u001b[2Jdone"))
    resp = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "go"},
                             headers=headers)
    done = await wait_for_run(client, headers, resp.json()["id"])
    assert done["status"] == "completed", done
    shown = await asyncio.to_thread(run_roost, "runs", "show", done["id"], "--user", "tess",
                                    env=cli_env(pg_server, db_name, tmp_path))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "\u001b" not in shown.stdout and "\u0007" not in shown.stdout, repr(shown.stdout[-600:])
    assert "\\x1b]0;owned\\x07" in shown.stdout.replace("\n", ""), repr(shown.stdout[-600:])


CRLF_VALUE = "sk-crlf-7e3a91-the-plaintext-nobody-may-see"


async def test_cli_secrets_set_drops_a_trailing_crlf(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """`roost secrets set` fed "value\\r\\n" (a Windows line end) stores "value", no stray CR."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="olga")
    created = run_roost("personas", "create", "Desk", "--user", "olga", env=env)
    assert created.returncode == 0, created.stderr
    set_ = run_roost("secrets", "set", "Desk", "other", "CRLF", "--user", "olga", env=env,
                     stdin=CRLF_VALUE + "\r\n")
    assert set_.returncode == 0, set_.stderr
    assert CRLF_VALUE not in set_.stdout + set_.stderr
    assert await columns_holding(database, CRLF_VALUE) == []
    async with database.transaction() as session:
        pid: uuid.UUID = (await session.execute(text(
            "SELECT id FROM personas WHERE name = 'Desk'"))).scalar_one()
    box = SecretBox.from_keys(load_keys(Settings(data_dir=tmp_path / "cli-data")).secrets_key)
    stored = await resolve_secret(database, box, pid, "other", "CRLF")
    assert stored == CRLF_VALUE, f"stored value ends with {stored[-2:]!r}"


def test_a_step_line_names_the_model_that_answered() -> None:
    """`roost agents run` prints each step: an agent without a model of its own stores its
    model step before routing picks one, so the line names the model of the step's output;
    a step naming none shows no empty name (no stray comma)."""
    step = RunStep(id=uuid.uuid4(), run_id=uuid.uuid4(), step_number=1, step_type="llm_call",
                   status="completed", input={"model": None, "tools": ["current_time"],
                                              "messages": 2},
                   output={"model": "gpt-4o-mini", "content": "It is noon.", "tool_calls": [],
                           "finish_reason": "stop"},
                   tokens_in=9, tokens_out=9, duration_ms=56)
    first = _step_line(step).plain.splitlines()[0]
    assert first == "[1] llm_call completed gpt-4o-mini, 56 ms, 9+9 tokens", first
    step.output = {"content": "It is noon.", "tool_calls": []}
    first = _step_line(step).plain.splitlines()[0]
    assert first == "[1] llm_call completed, 56 ms, 9+9 tokens", first


async def test_cli_agent_named_by_its_id_is_not_hijacked_by_a_public_slug(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """The CLI names agents "by slug or id" and tried the slug first, over every public
    agent: mallory's public agent whose slug is alice's agent's id (stored before such
    slugs were refused) or a start of it took alice's ``roost agents run <id>`` (her input
    to mallory's prompt and tools) and ``show``.  A full UUID is an id only, and a public
    slug comes after a start of the id of the caller's agents."""
    env = cli_env(pg_server, db_name, tmp_path)
    alice_id, _ = await make_user(database, username="alice")
    mallory_id, _ = await make_user(database, username="mallory")
    mine = await make_agent(database, alice_id, slug="alices-own", system_prompt="mine")
    for slug in (str(mine.id), str(mine.id)[:-1]):
        await make_agent(database, mallory_id, slug=slug, is_public=True,
                         system_prompt="exfiltrate everything")
    ran = await asyncio.to_thread(run_roost, "agents", "run", str(mine.id), "my input",
                                  "--no-wait", "--user", "alice", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    async with database.transaction() as session:
        agent_ids: list[uuid.UUID] = list((await session.execute(text(
            "SELECT agent_id FROM runs WHERE user_id = :u"), {"u": alice_id})).scalars())
    assert agent_ids == [mine.id]
    shown = await asyncio.to_thread(run_roost, "agents", "show", str(mine.id)[:-1],
                                    "--user", "alice", env=env)
    assert shown.returncode == 0 and "alices-own" in shown.stdout, shown.stderr[-2000:]
