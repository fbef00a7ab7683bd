"""``roost personas`` and what names a persona: its full id always names it, and names
are printed with their bidirectional controls as escapes (docs/agents.md, CLI)."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

from sqlalchemy import text

from roost.agents.models import Persona, PersonaMember
from roost.db.engine import Database
from tests.agents.conftest import make_agent
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def test_a_persona_full_id_names_that_persona_even_if_another_is_named_so(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """A persona's full id names that persona even when another persona is named with
    that id's text (the full id was refused as naming "several personas")."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="olga")

    def roost(*args: str) -> subprocess.CompletedProcess[str]:
        return run_roost(*args, env=env)

    first = roost("personas", "create", "Desk", "--user", "olga")
    assert first.returncode == 0, first.stderr
    match = UUID_RE.search(first.stdout)
    assert match is not None, first.stdout
    desk_id = match.group()
    twin = roost("personas", "create", desk_id, "--user", "olga")
    assert twin.returncode == 0, twin.stderr

    shown = roost("personas", "show", desk_id, "--user", "olga")
    assert shown.returncode == 0, shown.stderr
    assert "Desk" in shown.stdout


async def test_personas_create_prints_a_bidi_control_in_the_name_as_an_escape(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """`roost personas create` echoes the new name with a U+202E as its escape (printed
    raw, it reordered the rest of the line, the id the user copies)."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="olga")
    created = run_roost("personas", "create", "Desk\u202eevil", "--user", "olga", env=env)
    assert created.returncode == 0, created.stderr
    assert "\u202e" not in created.stdout
    assert "\\u202e" in created.stdout


async def test_roost_memory_names_personas_and_agents_as_roost_personas_and_agents_do(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """``roost memory --agent/--persona`` read the words ``roost agents`` and ``roost
    personas`` read: the user's own agent ``helper`` before a stranger's public one of that
    slug, a persona's exact name before a start of another's id (both were "names several";
    use the full id")."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="alice")
    await make_user(database, username="bob")

    def roost(*args: str) -> subprocess.CompletedProcess[str]:
        return run_roost(*args, env=env)

    own = roost("agents", "create", "helper", "--user", "alice")
    assert own.returncode == 0, own.stderr
    public = roost("agents", "create", "helper", "--user", "bob", "--public")
    assert public.returncode == 0, public.stderr
    first = roost("personas", "create", "Zed", "--user", "alice")
    assert first.returncode == 0, first.stderr
    zed = UUID_RE.search(first.stdout)
    assert zed is not None, first.stdout
    named = roost("personas", "create", zed.group()[:4], "--user", "alice")
    assert named.returncode == 0, named.stderr
    named_id = UUID_RE.search(named.stdout)
    own_id = UUID_RE.search(own.stdout)
    assert named_id is not None and own_id is not None, (named.stdout, own.stdout)

    added = roost("memory", "add", "likes tea", "--user", "alice", "--agent", "helper")
    assert added.returncode == 0, added.stderr
    added = roost("memory", "add", "likes maps", "--user", "alice",
                  "--persona", zed.group()[:4])
    assert added.returncode == 0, added.stderr
    listed = roost("memory", "ls", "--user", "alice", "--persona", zed.group()[:4])
    assert listed.returncode == 0 and "likes maps" in listed.stdout, listed.stderr
    async with database.transaction() as session:
        rows = (await session.execute(text(
            "SELECT content, agent_id::text, persona_id::text FROM memories ORDER BY content"
        ))).tuples().all()
    assert [(c, a, p) for c, a, p in rows] == [
        ("likes maps", None, named_id.group()), ("likes tea", own_id.group(), None)], rows


async def test_roost_memory_takes_a_persona_s_public_agent_before_a_stranger_s(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """Alice's persona has a public agent ``helper`` (its owner Bob's) and a stranger,
    Carol, has a public ``helper`` too: ``roost agents show helper`` and ``roost memory add
    --agent helper`` both name the persona's (the memory CLI answered "several agents")."""
    env = cli_env(pg_server, db_name, tmp_path)
    alice_id, _ = await make_user(database, username="alice")
    bob_id, _ = await make_user(database, username="bob")
    carol_id, _ = await make_user(database, username="carol")
    async with database.transaction() as session:
        persona = Persona(owner_id=bob_id, name="Desk")
        session.add(persona)
        await session.flush()
        session.add(PersonaMember(persona_id=persona.id, user_id=alice_id, role="editor"))
        persona_id = persona.id
    await make_agent(database, carol_id, slug="helper", is_public=True)
    ours = await make_agent(database, bob_id, slug="helper", is_public=True,
                            persona_id=persona_id)

    def roost(*args: str) -> subprocess.CompletedProcess[str]:
        return run_roost(*args, env=env)

    shown = roost("agents", "show", "helper", "--user", "alice")
    assert shown.returncode == 0 and str(ours.id) in shown.stdout, (shown.stdout, shown.stderr)
    added = roost("memory", "add", "likes tea", "--user", "alice", "--agent", "helper")
    assert added.returncode == 0, added.stderr
    async with database.transaction() as session:
        agent_id = await session.scalar(text("SELECT agent_id FROM memories"))
    assert agent_id == ours.id, (agent_id, ours.id)
    assert isinstance(agent_id, uuid.UUID)
