"""``roost debates start|show|ls``: debates from the command line, acting for ``--user``
(username or e-mail; default: the root user) in that user's row-level-security scope,
through the same services as the API.  A worker (``roost worker``) runs the debates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.catalog import find_agent
from roost.clitools import (
    MAX_SECONDS,
    add_text_row,
    fail,
    id_table,
    load_json,
    print_table,
    printable,
    read_text,
    resolve_id,
)
from roost.debates import service
from roost.debates.models import TERMINAL_STATUSES, DebateSession
from roost.debates.schemas import MAX_ROUNDS, DebateCreate
from roost.errors import BadRequest
from roost.identity.cliscope import Env, UserOpt
from roost.identity.cliscope import run_as as _run
from roost.principal import Principal

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")
POLL_S: Final = 0.5

debates_app = typer.Typer(help="Debates with voting: start, show, ls.", no_args_is_help=True)



def _participant(spec: str, weights: dict[str, float]) -> dict[str, Any]:
    """``ID=MODEL``, ``ID=MODEL@PROVIDER`` or ``ID=agent:SLUG-OR-ID``."""
    pid, sep, what = spec.partition("=")
    if not sep or not pid or not what:
        raise fail("Invalid input", f"participant {spec!r}: expected ID=MODEL, "
                                    "ID=MODEL@PROVIDER or ID=agent:SLUG")
    item: dict[str, Any] = {"id": pid, "weight": weights.pop(pid, 1.0)}
    if what.startswith("agent:"):
        item["agent_id"] = what[len("agent:"):]
    else:
        model, _, provider = what.partition("@")
        item["model"] = model
        if provider:
            item["provider"] = provider
    return item


async def _agent_id(session: AsyncSession, actor: Principal, ref: str, where: str) -> str:
    """``ref`` (an agent's id or slug, at ``where`` in the body) as the agent's id."""
    # Text PostgreSQL cannot hold (a NUL; a lone surrogate, not UTF-8) would make the
    # lookup a database error's traceback rather than this one line.
    if "\x00" in ref:
        raise BadRequest(f"{where}: must not contain a NUL character")
    try:
        ref.encode()
    except UnicodeEncodeError:
        raise BadRequest(f"{where}: must not contain a lone UTF-16 surrogate") from None
    return str((await find_agent(session, actor, ref)).id)


def _print_debate(view: service.DebateView, *, error: bool = True) -> None:
    """The debate on stdout; ``error``: its error too (start says it on stderr)."""
    d = view.debate
    _line(f"Debate {d.id}: {d.topic}")
    _line(f"status {d.status}, round {d.current_round}/{d.total_rounds}, "
          f"voting {d.voting_method}")
    _line("positions: " + ", ".join(str(p) for p in d.positions))
    turns = id_table("turn", "round", "participant", "position", "confidence", "content",
                     wrap=("content",))
    for t in view.turns:
        add_text_row(turns, str(t.turn_number), str(t.round_number), t.participant_id,
                     t.position, str(t.confidence), " ".join(t.content.split())[:400])
    print_table(console, turns)
    if view.ballots:
        ballots = id_table("participant", "weight", "confidence", "ranking", wrap=("ranking",))
        for b in view.ballots:
            add_text_row(ballots, b.participant_id, str(b.weight), str(b.confidence),
                         " > ".join(str(r) for r in b.ranking))
        print_table(console, ballots)
    result = (d.meta or {}).get("result")
    if result:
        _line(f"winner: {result['winner']}")
        if result.get("no_condorcet_winner"):
            console.print(Text("no Condorcet winner (a cycle): Schulze's method decided"))
        if result.get("tied"):
            _line(f"tie between {', '.join(result['tied'])}: {result['tie_break']}")
    if error and d.error_message:
        _line(f"error: {d.error_message}")


def _line(text: str) -> None:
    """A line of stored text (a topic, a position, an error): escaped as the tables' cells
    are (an ESC or a bidi override from the API must not act on the terminal)."""
    console.print(Text(printable(text)))


@debates_app.command("start")
def debates_start(
    topic: Annotated[str | None, typer.Argument(help="The topic (or give --file).")] = None,
    position: Annotated[list[str] | None, typer.Option(
        "--position", "-p", help="A position (twice at least).")] = None,
    participant: Annotated[list[str] | None, typer.Option(
        "--participant", "-P",
        help="ID=MODEL, ID=MODEL@PROVIDER or ID=agent:SLUG (twice at least).")] = None,
    weight: Annotated[list[str] | None, typer.Option(
        "--weight", help="ID=NUMBER: a participant's ballot weight (default 1).")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, max=MAX_ROUNDS,
                                               help="Rounds of turns (default 2).")] = None,
    method: Annotated[str | None, typer.Option(
        help="majority, weighted, borda or condorcet (default weighted).")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="The API's JSON body (POST /api/v1/debates); - reads standard "
                             "input.")] = None,
    user: UserOpt = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait",
                                       help="Wait for the debate to end, then show it.")] = False,
    timeout: Annotated[float, typer.Option(min=1, max=MAX_SECONDS, help="Stop waiting after "
                                                                         "this many seconds.")
                       ] = 600,
) -> None:
    """Start a debate (a worker runs it: `roost worker`); prints its id, or with --wait
    the finished debate."""
    if file is not None:
        given = [name for name, value in (
            ("TOPIC", topic), ("--position", position), ("--participant", participant),
            ("--weight", weight), ("--rounds", rounds), ("--method", method)) if value]
        if given:  # the file is the whole body: these would be dropped without a word
            raise fail("Invalid input", f"--file holds the whole body: leave out "
                                        f"{', '.join(given)} (or give them in the file)")
        raw = read_text(file)
        loaded: Any = load_json(raw, "Invalid input", "the file is not JSON")
        if not isinstance(loaded, dict):
            raise fail("Invalid input", "the file must hold a JSON object (the API's body: "
                                        "topic, positions, participants...), not "
                                        f"{_json_kind(loaded)}")
        if not isinstance(loaded.get("participants", []), list):
            raise fail("Invalid input", "participants: expected a list of objects, not "
                                        f"{_json_kind(loaded['participants'])}")
        body_json: dict[str, Any] = loaded
    else:
        if topic is None:
            raise fail("Invalid input", "give a topic (or --file)")
        weights: dict[str, float] = {}
        for w in weight or []:
            key, _, value = w.partition("=")
            if key in weights:
                raise fail("Invalid input", f"--weight {key!r} is given twice")
            try:
                weights[key] = float(value)
            except ValueError:
                raise fail("Invalid input", f"--weight {w!r}: expected ID=NUMBER") from None
        body_json = {"topic": topic, "positions": position or [],
                     "participants": [_participant(p, weights) for p in participant or []],
                     "total_rounds": rounds or 2, "voting_method": method or "weighted"}
        if weights:
            raise fail("Invalid input", f"--weight names unknown participant(s): "
                                        f"{', '.join(weights)}")

    async def go(env: Env) -> service.DebateView | DebateSession:
        async with env.scoped() as session:
            for i, p in enumerate(body_json.get("participants", [])):
                if isinstance(p, dict) and isinstance(p.get("agent_id"), str):
                    p["agent_id"] = await _agent_id(session, env.principal, p["agent_id"],
                                                    f"participants.{i}.agent_id")
            try:
                body = DebateCreate.model_validate(body_json)
            except ValidationError as exc:
                raise BadRequest(str(_reasons(exc))) from None
            debate = await service.create_debate(session, env.principal, body)
            debate_id = debate.id
        if not wait:
            return debate
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            async with env.scoped() as session:
                view = await service.read_debate(session, env.principal, debate_id)
            if view.debate.status in TERMINAL_STATUSES or \
                    asyncio.get_running_loop().time() >= deadline:
                return view
            await asyncio.sleep(POLL_S)

    out = _run(user, go)
    if isinstance(out, DebateSession):
        console.print(str(out.id))
        return
    _print_debate(out, error=False)
    _end_status(out.debate, waited_s=timeout)


def _end_status(debate: DebateSession, *, waited_s: float) -> None:
    """A debate that did not complete ends the command non-zero, saying why on stderr:
    failed or cancelled 1 (with its error), still going after ``waited_s`` 2."""
    if debate.status == "completed":
        return
    if debate.status in TERMINAL_STATUSES:
        raise fail(f"Debate {debate.status}", debate.error_message or
                   f"the debate {debate.id} was {debate.status}")
    typer.echo(f"Debate {debate.id} is still {debate.status} after {waited_s:g} s: "
               f"see it later with roost debates show {debate.id}", err=True)
    raise typer.Exit(2)


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words (never the value: it may be huge)."""
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "a list", str: "a string", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), "something else")


def _reasons(exc: ValidationError) -> str:
    # Field and reason only: pydantic's own message would quote the value.
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                     for e in exc.errors())


@debates_app.command("show")
def debates_show(debate: Annotated[str, typer.Argument(help="Id (or a unique start of one).")],
                 user: UserOpt = None,
                 as_json: Annotated[bool, typer.Option("--json", help="The API's JSON.")] = False,
                 ) -> None:
    """A debate with its turns, every ballot and the result."""

    async def go(env: Env) -> service.DebateView:
        async with env.scoped() as session:
            debate_id = await resolve_id(session, DebateSession.id, debate, "debate")
            return await service.read_debate(session, env.principal, debate_id)

    view = _run(user, go)
    if as_json:
        # ASCII JSON (as every --json of the CLI): stored text's C1 controls and bidi
        # overrides escaped, not acting on the terminal; it decodes to the same values.
        typer.echo(json.dumps(service.detail_out(view).model_dump(mode="json"), indent=2,
                              ensure_ascii=True))
        return
    _print_debate(view)


@debates_app.command("ls")
def debates_ls(user: UserOpt = None) -> None:
    """Your debates, newest first (the last 50)."""

    async def go(env: Env) -> list[DebateSession]:
        async with env.scoped() as session:
            rows, _ = await service.list_debates(session, env.principal, limit=50)
            return rows

    table = id_table("id", "status", "method", "winner", "topic", wrap=("topic",))
    for d in _run(user, go):
        add_text_row(table, str(d.id), d.status, d.voting_method, d.final_winner or "-",
                     d.topic[:200])
    print_table(console, table)


def register(app: typer.Typer) -> None:
    """Add ``roost debates`` (``roost.domains``)."""
    app.add_typer(debates_app, name="debates")
