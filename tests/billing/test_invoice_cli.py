"""``roost billing invoice USER`` as an operator runs it (the real console script): an ended
period is issued once, an open one is previewed, the PDF is written, bad input fails with
one clear line."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from roost.billing.invoices import Period
from roost.billing.models import Invoice
from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.billing.test_invoices import Row, add_plan, add_subscription, ingest
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer


def _month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def test_invoices_from_the_command_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    env["ROOST_BILLING_TAX_RATE"] = "0.1"
    uid, _ = await make_user(database, username="carol")
    await make_user(database, username="dave")
    plan = await add_plan(database, price="40.00")
    this_month = _month_start(datetime.now(UTC))
    last_month = _month_start(this_month - timedelta(days=1))
    next_month = _month_start(this_month + timedelta(days=32))
    sub = await add_subscription(database, plan, uid, period=Period(this_month, next_month))
    await ingest(database, [
        Row(sub.id, last_month + timedelta(days=2), "gpt-4o", "chat", 100, 200, 3,
            Decimal("2.5")),
        Row(sub.id, this_month + timedelta(seconds=1), "gpt-4o", "chat", 1, 1, 1,
            Decimal("1")),
    ], uid)

    # The current period is open: a preview, nothing stored.
    out = run_roost("billing", "invoice", "carol", env=env)
    assert out.returncode == 0, out.stderr
    assert "Preview (not issued" in out.stdout and "total 45.10 USD" in out.stdout
    bad = run_roost("billing", "invoice", "carol", "--pdf", str(tmp_path / "x.pdf"), env=env)
    assert bad.returncode == 1 and "only an issued invoice" in bad.stderr

    # Last month's period (before the current one) is issued, with the tax rate set.
    out = run_roost("billing", "invoice", "carol", "--period", f"{last_month:%Y-%m}",
                    "--json", env=env)
    assert out.returncode == 0, out.stderr
    issued = json.loads(out.stdout)
    assert issued["number"] == f"INV-{datetime.now(UTC).year}-000001"
    assert (issued["subtotal"], issued["tax"], issued["total"]) == ("42.50", "4.25", "46.75")
    assert issued["period_start"].startswith(f"{last_month:%Y-%m-%d}")

    # Again: the same invoice (shown, not re-issued); a PDF on request.
    pdf = tmp_path / "inv.pdf"
    out = run_roost("billing", "invoice", "carol", "--period", f"{last_month:%Y-%m}",
                    "--pdf", str(pdf), env=env)
    assert out.returncode == 0, out.stderr
    assert f"Invoice {issued['number']} (open)" in out.stdout and "46.75 USD" in out.stdout
    text = PdfReader(io.BytesIO(pdf.read_bytes())).pages[0].extract_text()
    assert issued["number"] in text and "46.75 USD" in text and "carol" in text
    # Without --period, the open period shows the newest issued invoice.
    out = run_roost("billing", "invoice", "carol", env=env)
    assert issued["number"] in out.stdout
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Invoice)) == 1

    for args, message in (
        (("carol", "--period", "2026-13"), "YYYY-MM"),
        (("carol", "--period", "1999-01"), "no period"),
        (("dave",), "no subscription"),
    ):
        bad = run_roost("billing", "invoice", *args, env=env)
        assert bad.returncode == 1, (args, bad.stdout)
        assert message in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr


async def test_a_period_past_the_calendar_fails_in_one_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`--period 9999-12` (whose end is in year 10000) and `--period 0000-01` fail with
    one line naming the option, not a traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    uid, _ = await make_user(database, username="carol")
    await add_subscription(database, await add_plan(database), uid, status="canceled")
    for month in ("9999-12", "0000-01"):
        out = run_roost("billing", "invoice", "carol", "--period", month, env=env)
        assert out.returncode == 1, (month, out.stdout)
        assert "--period" in out.stderr and "Traceback" not in out.stderr, out.stderr[-500:]
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-500:]


@pytest.mark.parametrize("where", ["in a missing directory", "a directory"])
async def test_a_pdf_path_that_cannot_be_written_fails_before_issuing(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        where: str) -> None:
    """`--pdf PATH` that cannot be written fails in one line naming PATH, before the
    invoice is issued (it was issued, then the write failed with a traceback)."""
    env = cli_env(pg_server, db_name, tmp_path)
    uid, _ = await make_user(database, username="carol")
    await add_subscription(database, await add_plan(database), uid, status="canceled")
    pdf = tmp_path / "nope" / "x.pdf" if where == "in a missing directory" else tmp_path
    out = run_roost("billing", "invoice", "carol", "--pdf", str(pdf), env=env)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr and str(pdf) in out.stderr, out.stderr[-500:]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-500:]
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Invoice)) == 0
