"""``roost calendar import|export|agenda``: calendars from the command line.

Every command acts for one user, ``--user`` (username or e-mail; default: the root user),
in that user's row-level-security scope, through the same services as the API.
``--calendar`` takes a calendar's exact name or id (or a unique start of one); ``import``
creates the calendar when no calendar has that name.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from roost.calendar import recurrence, service
from roost.calendar.schemas import CalendarCreate
from roost.clitools import (
    fail,
    id_table,
    parse_input,
    print_table,
    printable,
    read_bytes,
    write_bytes,
)
from roost.errors import NotFound
from roost.identity.cliscope import Env, UserOpt
from roost.identity.cliscope import run_as as _run

console = Console()
calendar_app = typer.Typer(help="Calendars: import and export iCalendar files, the agenda.",
                           no_args_is_help=True)

CalendarOpt = Annotated[str, typer.Option("--calendar", "-c",
                                          help="The calendar: its name or id.")]


@calendar_app.command("import")
def calendar_import(
    file: Annotated[str, typer.Argument(help="An .ics file (- for standard input).")],
    calendar: CalendarOpt,
    user: UserOpt = None,
    timezone: Annotated[str, typer.Option(
        help="The time zone of a calendar this command creates.")] = "UTC",
) -> None:
    """Import an iCalendar file: create its events, update those whose UID is known."""
    raw = read_bytes(file)
    # Checked now (one line, as the API would refuse it), used if no calendar matches.
    new_calendar = parse_input(CalendarCreate, {"name": calendar, "timezone": timezone})

    async def go(env: Env) -> tuple[str, dict[str, Any]]:
        async with env.scoped() as session:
            try:
                cal = await service.find_calendar(session, env.principal, calendar)
            except NotFound:  # (an upsert: another import may create it meanwhile)
                cal = await service.ensure_calendar(session, env.principal, new_calendar.name,
                                                    new_calendar.timezone)
            return cal.name, await service.import_ics(session, env.principal, cal.id, raw)

    name, result = _run(user, go)
    console.print(Text(printable(f"{name}: {result['created']} created, {result['updated']} updated, "
                       f"{result['unchanged']} unchanged, {len(result['skipped'])} skipped")))
    for reason in result["skipped"]:
        console.print(Text(printable(f"  skipped {reason}")))


@calendar_app.command("export")
def calendar_export(
    calendar: CalendarOpt,
    user: UserOpt = None,
    output: Annotated[str, typer.Option("--output", "-o",
                                        help="Write to this file (default: standard output).")
                      ] = "-",
) -> None:
    """Export a calendar as an iCalendar (.ics) file."""

    async def go(env: Env) -> bytes:
        async with env.scoped() as session:
            cal = await service.find_calendar(session, env.principal, calendar)
            _, data = await service.export_ics(session, env.principal, cal.id)
            return data

    data = _run(user, go)
    write_bytes(output, data)


@calendar_app.command("agenda")
def calendar_agenda(
    user: UserOpt = None,
    days: Annotated[int, typer.Option(min=1, max=366, help="How many days from now.")] = 7,
    calendar: Annotated[str | None, typer.Option("--calendar", "-c",
                                                 help="Only this calendar (name or id).")
                        ] = None,
    tz: Annotated[str | None, typer.Option(
        "--tz", help="Show times in this zone (default: UTC).")] = None,
) -> None:
    """Your occurrences (recurrence expanded) from now for --days days."""
    try:
        zone = recurrence.zone(tz or "UTC")
    except recurrence.RecurrenceError as exc:
        raise fail("Invalid --tz", str(exc)) from None
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    async def go(env: Env) -> tuple[list[dict[str, Any]], bool, dict[Any, str]]:
        async with env.scoped() as session:
            cal_id = None
            if calendar is not None:
                cal_id = (await service.find_calendar(session, env.principal, calendar)).id
            names = {c.id: c.name for c in await service.list_calendars(session, env.principal)}
            found, truncated = await service.occurrences(
                session, env.principal, now, now + timedelta(days=days), calendar_id=cal_id,
                limit=service.MAX_OCCURRENCES)
            return found, truncated, names

    found, truncated, names = _run(user, go)
    table = id_table("start", "end", "summary", "calendar", "location", wrap=("summary",))
    for o in found:
        if o["all_day"]:
            start = o["start"].astimezone(recurrence.zone(o["timezone"])).strftime("%Y-%m-%d")
            end = "all day"
        else:
            start = o["start"].astimezone(zone).strftime("%Y-%m-%d %H:%M")
            end = o["end"].astimezone(zone).strftime("%H:%M")
        table.add_row(start, end, Text(printable(o["summary"]) + (" ↻" if o["recurring"] else "")),
                      Text(printable(names.get(o["calendar_id"], "-"))),
                      Text(printable(o["location"] or "")))
    print_table(console, table)
    if truncated:
        console.print(Text(f"(only the first {len(found)} shown: use fewer --days)"))


def register(app: typer.Typer) -> None:
    """Add ``roost calendar`` (``roost.domains``)."""
    app.add_typer(calendar_app, name="calendar")
