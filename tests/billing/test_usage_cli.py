"""``roost usage``: the ledger as a table, everyone's or one user's."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sqlalchemy import update

from roost.billing.models import UsageRecord
from roost.db.base import uuid7
from roost.db.engine import Database
from roost.identity.models import User
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer


async def test_usage_by_model_and_for_one_user(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    dora, _ = await make_user(database, username="dora")
    emil, _ = await make_user(database, username="emil")
    async with database.transaction() as s:
        for user, model, cost in ((dora, "gpt-4o", "0.012500"), (dora, "gpt-4o", "0.002500"),
                                  (emil, "claude-sonnet-4", "0.300000")):
            s.add(UsageRecord(id=uuid7(), user_id=user, request_type="chat", model=model,
                              tokens_input=1000, tokens_output=100, credits_used=2,
                              cost=Decimal(cost)))

    everyone = run_roost("usage", "--by", "model", env=env)
    assert everyone.returncode == 0, everyone.stderr
    assert "gpt-4o" in everyone.stdout and "claude-sonnet-4" in everyone.stdout
    assert "0.315000" in everyone.stdout  # the total cost, in decimal

    only_dora = run_roost("usage", "--by", "user", "--user", "dora", env=env)
    assert only_dora.returncode == 0, only_dora.stderr
    assert "dora" in only_dora.stdout and "emil" not in only_dora.stdout
    assert "0.015000" in only_dora.stdout

    bad = run_roost("usage", "--by", "planet", env=env)
    assert bad.returncode != 0 and "day, model, user" in bad.stderr


async def test_bounds_outside_utc_years_fail_in_one_line(
        pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    """`roost usage --since 0001-01-01T00:00:00+14:00 ...` (year 0 in UTC) fails with one
    line naming the option, not a database traceback quoting the SQL."""
    out = run_roost("usage", "--since", "0001-01-01T00:00:00+14:00",
                    "--until", "0001-01-02T00:00:00+14:00",
                    env=cli_env(pg_server, db_name, tmp_path))
    assert out.returncode == 1, out.stdout
    assert "SELECT" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-500:]
    assert "since" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


async def test_usage_by_model_prints_a_model_name_with_brackets(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """`roost usage --by model` lists a ledger row whose model is "[/]x" literally."""
    env = cli_env(pg_server, db_name, tmp_path)
    dora, _ = await make_user(database, username="dora")
    async with database.transaction() as s:
        s.add(UsageRecord(id=uuid7(), user_id=dora, request_type="chat", model="[/]x",
                          tokens_input=1, tokens_output=1, credits_used=0,
                          cost=Decimal("0.1")))
    out = run_roost("usage", "--by", "model", env=env)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "[/]x" in out.stdout


async def test_usage_for_one_administrator_shows_only_theirs(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`roost usage --user <an administrator>` shows that user's usage, not everyone's;
    a suspended user's usage is shown too, and an unknown user fails in one line."""
    env = cli_env(pg_server, db_name, tmp_path)
    ada, _ = await make_user(database, username="ada", admin=True)
    emil, _ = await make_user(database, username="emil")
    async with database.transaction() as s:
        for user, model in ((ada, "model-of-ada"), (emil, "model-of-emil")):
            s.add(UsageRecord(id=uuid7(), user_id=user, request_type="chat", model=model,
                              tokens_input=10, tokens_output=1, credits_used=1,
                              cost=Decimal("0.1")))
        await s.execute(update(User).where(User.id == emil).values(status="suspended"))
    out = run_roost("usage", "--by", "model", "--user", "ada", env=env)
    assert out.returncode == 0, out.stderr
    assert "model-of-ada" in out.stdout
    assert "model-of-emil" not in out.stdout, out.stdout
    suspended = run_roost("usage", "--by", "model", "--user", "emil", env=env)
    assert suspended.returncode == 0, suspended.stderr
    assert "model-of-emil" in suspended.stdout and "model-of-ada" not in suspended.stdout
    unknown = run_roost("usage", "--user", "nobody-here", env=env)
    assert unknown.returncode != 0 and "nobody-here" in unknown.stderr, unknown.stderr


async def test_a_range_given_with_an_offset_is_titled_in_utc(
        pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    """The title says "UTC": a range given at +05:00 is shown as the UTC moments summed,
    not the offset's wall times labelled UTC (five hours off)."""
    out = run_roost("usage", "--since", "2025-03-01T00:00:00+05:00",
                    "--until", "2025-03-02T00:00:00+05:00",
                    env=cli_env(pg_server, db_name, tmp_path))
    assert out.returncode == 0, out.stderr
    assert "2025-02-28 19:00 to 2025-03-01 19:00 UTC" in " ".join(out.stdout.split()), out.stdout


async def test_costs_in_two_currencies_are_shown_side_by_side_never_added(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """A model billed in USD and EUR shows "0.100000 EUR + 0.250000 USD" on its row and in the
    total; a row in one currency names it; no line adds the two amounts (0.35)."""
    env = cli_env(pg_server, db_name, tmp_path)
    dora, _ = await make_user(database, username="dora")
    async with database.transaction() as s:
        for model, cost, currency in (("gpt-4o", "0.250000", "USD"),
                                      ("gpt-4o", "0.100000", "EUR"),
                                      ("mistral-large", "0.050000", "EUR")):
            s.add(UsageRecord(id=uuid7(), user_id=dora, request_type="chat", model=model,
                              tokens_input=10, tokens_output=1, credits_used=1,
                              cost=Decimal(cost), currency=currency))
    out = run_roost("usage", "--by", "model", env=env)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[1]: " ".join(line.split()) for line in out.stdout.splitlines()
             if len(line.split()) > 1 and line.split()[1] in ("gpt-4o", "mistral-large", "total")}
    assert "0.100000 EUR + 0.250000 USD" in lines["gpt-4o"], out.stdout
    assert "0.050000 EUR" in lines["mistral-large"], out.stdout
    assert "0.150000 EUR + 0.250000 USD" in lines["total"], out.stdout
    assert "0.350000" not in out.stdout and "0.400000" not in out.stdout, out.stdout
