"""``roost billing plans|subscribe|subscriptions|cancel|prices`` as an operator runs them
(the real console script)."""

from __future__ import annotations

from pathlib import Path

from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer


async def test_plans_subscriptions_and_prices_from_the_command_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="carla")

    def roost(*args: str) -> tuple[int, str, str]:
        out = run_roost("billing", *args, env=env)
        return out.returncode, out.stdout, out.stderr

    code, out, err = roost("plans", "add", "pro", "--name", "Pro", "--price", "19.99",
                           "--currency", "EUR", "--credits", "50000", "--trial-days", "7",
                           "--limit", "runs_per_day=10", "--limit", "models_allowed=gpt-4o*")
    assert code == 0, err
    assert "Created plan pro" in out and "19.99 EUR" in out
    code, _, err = roost("plans", "add", "bad", "--price", "-3")
    assert code != 0 and "price" in err
    code, _, err = roost("plans", "add", "bad", "--limit", "max_users=3")
    assert code != 0 and "max_users" in err
    # No pattern at all is a mistake, not "every model" (an empty list); none says that.
    code, _, err = roost("plans", "add", "bad", "--limit", "models_allowed=,,")
    assert code != 0 and "models_allowed" in err

    code, out, err = roost("plans")
    assert code == 0, err
    assert "pro" in out and "runs_per_day=10" in out and "gpt-4o*" in out and "50,000" in out
    assert "bad" not in out

    code, out, err = roost("subscribe", "carla@example.test", "pro")
    assert code == 0, err
    assert "trialing" in out and "50,000 credits" in out
    code, _, err = roost("subscribe", "carla", "pro")
    assert code != 0 and "already has a live subscription" in err
    code, _, err = roost("subscribe", "nobody", "pro")
    assert code != 0 and "nobody" in err
    code, _, err = roost("subscribe", "carla", "gold")
    assert code != 0 and "gold" in err

    code, out, err = roost("subscriptions")
    assert code == 0, err
    assert "carla" in out and "trialing" in out and "50,000" in out

    code, out, err = roost("cancel", "carla", "--reason", "asked")
    assert code == 0 and "Canceled" in out, err
    code, out, _ = roost("subscriptions", "--status", "canceled")
    assert "carla" in out
    code, _, err = roost("cancel", "carla")
    assert code != 0 and "no live subscription" in err

    code, out, err = roost("prices", "set", "my-model*", "--input", "0.5", "--output", "1.25")
    assert code == 0, err
    assert "my-model*: 0.500000 in, 1.250000 out" in out
    code, out, err = roost("prices", "set", "my-model*", "--input", "0.75", "--output", "1.25")
    assert code == 0 and "0.750000" in out, err
    code, _, err = roost("prices", "set", "x", "--input", "-1", "--output", "1")
    assert code != 0 and "input_per_million" in err
    code, out, err = roost("prices")
    assert code == 0, err
    assert "my-model*" in out and "0.750000" in out and "gpt-4o*" in out


async def test_the_cancel_reason_is_checked_like_the_apis(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`roost billing cancel --reason` refuses what the API refuses (a control character,
    over 500 characters) instead of writing it to the audit log; nothing is canceled."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="dora")

    def roost(*args: str) -> tuple[int, str, str]:
        out = run_roost("billing", *args, env=env)
        return out.returncode, out.stdout, out.stderr

    assert roost("plans", "add", "ok", "--name", "Ok", "--price", "1")[0] == 0
    assert roost("subscribe", "dora", "ok")[0] == 0
    for reason in ("bad\x01reason", "x" * 5000):
        code, out, err = roost("cancel", "dora", "--reason", reason)
        assert code != 0 and "reason" in err, (out, err)
        assert "Traceback" not in err
    code, out, err = roost("subscriptions", "--status", "canceled")
    assert code == 0 and "dora" not in out, (out, err)
