"""`roost secrets rm PERSONA PREFIX`: an id prefix is looked up among that persona's
secrets only."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer


async def test_cli_rm_by_an_id_prefix_unique_in_the_persona(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """A prefix unique among the persona's secrets deletes that secret: it was looked up
    among every persona's, so another persona's secret starting the same (uuid7 ids made
    close together do) made it "the start of several secret ids" and nothing was deleted."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="olga")
    for name in ("Desk", "Bench"):
        made = run_roost("personas", "create", name, "--user", "olga", env=env)
        assert made.returncode == 0, made.stderr
        set_ = run_roost("secrets", "set", name, "other", "TOK", "--user", "olga", env=env,
                         stdin="value-123456\n")
        assert set_.returncode == 0, set_.stderr
    async with database.transaction() as session:
        rows = (await session.execute(text(
            "SELECT p.name, s.id::text FROM secrets s JOIN personas p ON p.id = s.persona_id"
        ))).tuples().all()
    ids: dict[str, str] = dict(rows)
    desk = ids["Desk"]
    # Bench's secret gets an id that starts as Desk's does (as uuid7 ids made in the same
    # millisecond do); rm reads no value, so the id's part in the encryption is moot here.
    twin = desk[:-4] + ("0000" if not desk.endswith("0000") else "1111")
    async with database.transaction() as session:
        await session.execute(text("UPDATE secrets SET id = CAST(:t AS uuid) WHERE id = "
                                   "CAST(:b AS uuid)"), {"t": twin, "b": ids["Bench"]})
    prefix = desk[:-4]  # unique among Desk's secrets (it has one), shared with Bench's
    removed = run_roost("secrets", "rm", "Desk", prefix, "--user", "olga", env=env)
    assert removed.returncode == 0, removed.stderr
    async with database.transaction() as session:
        left: list[str] = list((await session.execute(text(
            "SELECT p.name FROM secrets s JOIN personas p ON p.id = s.persona_id"
        ))).scalars().all())
    assert left == ["Bench"]
