"""``roost calendar import|export|agenda`` as a user runs them (the real console script)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import icalendar
import pytest

from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer


async def test_import_agenda_export_from_the_command_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="cal")
    await make_user(database, username="eve")
    soon = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0,
                                                           microsecond=0)
    ics = tmp_path / "mine.ics"
    ics.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:cli-1\r\n"
        f"DTSTART:{soon:%Y%m%dT%H%M%SZ}\r\nDTEND:{soon + timedelta(hours=1):%Y%m%dT%H%M%SZ}\r\n"
        "RRULE:FREQ=DAILY;COUNT=3\r\nSUMMARY:Daily review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")

    out = run_roost("calendar", "import", str(ics), "--calendar", "Personal", "--user", "cal",
                    env=env)
    assert out.returncode == 0, out.stderr
    assert "Personal: 1 created" in out.stdout
    out = run_roost("calendar", "import", str(ics), "--calendar", "Personal", "--user", "cal",
                    env=env)
    assert "0 created, 0 updated, 1 unchanged" in out.stdout

    out = run_roost("calendar", "agenda", "--days", "5", "--user", "cal", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Daily review") == 3

    out = run_roost("calendar", "agenda", "--user", "eve", env=env)  # another user's: none
    assert "Daily review" not in out.stdout

    target = tmp_path / "out.ics"
    out = run_roost("calendar", "export", "--calendar", "Personal", "--user", "cal",
                    "-o", str(target), env=env)
    assert out.returncode == 0, out.stderr
    events = icalendar.Calendar.from_ical(target.read_bytes()).walk("VEVENT")
    assert [str(e["UID"]) for e in events] == ["cli-1"]

    out = run_roost("calendar", "export", "--calendar", "Personal", "--user", "eve", env=env)
    assert out.returncode == 1 and "no calendar" in out.stderr

    bad = tmp_path / "bad.ics"
    bad.write_text("not a calendar")
    out = run_roost("calendar", "import", str(bad), "--calendar", "Personal", "--user", "cal",
                    env=env)
    assert out.returncode == 1 and "BEGIN:VCALENDAR" in out.stderr


@pytest.mark.parametrize("ref", ["", "%", "_"])
async def test_an_empty_or_wildcard_calendar_reference_names_no_calendar(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
        ref: str) -> None:
    """`--calendar ""` (an unset shell variable) or `%` is not a name or id start of any
    calendar: export fails instead of writing the user's only calendar."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="cal")
    ics = tmp_path / "a.ics"
    ics.write_text("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nEND:VCALENDAR\r\n")
    made = run_roost("calendar", "import", str(ics), "--calendar", "Private", "--user", "cal",
                     env=env)
    assert made.returncode == 0, made.stderr
    out = run_roost("calendar", "export", "--calendar", ref, "--user", "cal", env=env)
    assert out.returncode == 1 and "Private" not in out.stdout, out.stdout


async def test_cli_import_names_a_calendar_as_stored_without_invisible_characters(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`--calendar "Work\u200b"` (a pasted zero-width space) names the calendar "Work",
    as names are stored without invisible characters around them: the file goes into it.
    The lookup missed it and creating "Work" again crashed with a traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="zwuser")
    ics = tmp_path / "a.ics"
    ics.write_text("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\n"
                   "UID:z\r\nDTSTART:20270110T090000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    out = run_roost("calendar", "import", str(ics), "--calendar", "Work", "--user", "zwuser",
                    env=env)
    assert out.returncode == 0, out.stderr
    out = run_roost("calendar", "import", str(ics), "--calendar", "Work\u200b", "--user",
                    "zwuser", env=env)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "Work: 0 created, 0 updated, 1 unchanged" in out.stdout, out.stdout


async def test_cli_import_creates_a_missing_calendar_in_the_given_zone(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`--timezone` is the zone of the calendar the import creates (the creation is an
    upsert now, so two imports at once share the calendar)."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="tzuser")
    ics = tmp_path / "a.ics"
    ics.write_text("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\n"
                   "UID:t\r\nDTSTART:20270110T090000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    out = run_roost("calendar", "import", str(ics), "--calendar", "Berlin", "--timezone",
                    "Europe/Berlin", "--user", "tzuser", env=env)
    assert out.returncode == 0, out.stderr
    out = run_roost("calendar", "export", "--calendar", "Berlin", "--user", "tzuser", env=env)
    assert out.returncode == 0, out.stderr
    assert "X-WR-TIMEZONE:Europe/Berlin" in out.stdout, out.stdout
