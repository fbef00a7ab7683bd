"""``roost personas|agents|runs|secrets``: the agents domain from the command line.

Every command acts for one user, ``--user`` (username or e-mail; default: the root
user), in that user's row-level-security scope, through the same services as the API:
what the user could not see or change there, they cannot here.  Personas, agents and
runs are named by id (or a unique start of one); personas also by name, agents also by
slug.  Secret values are read from standard input or a hidden prompt, never from an
argument (which ``ps`` and shell history would keep), and never printed.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Annotated, Any, Final, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents import catalog, personas, runs, secrets
from roost.agents.models import (
    RUN_STATUSES,
    SECRET_TYPES,
    TERMINAL_RUN_STATUSES,
    Agent,
    Persona,
    Run,
    RunStep,
    Secret,
)
from roost.agents.schemas import (
    AgentConfig,
    AgentCreate,
    PersonaCreate,
    RunCreate,
    SecretSet,
)
from roost.clitools import (
    MAX_LIST,
    MAX_SECONDS,
    fail,
    id_table,
    print_table,
    printable,
    read_text,
    resolve_id,
    when,
)
from roost.config import get_settings
from roost.db.lookup import first_unique, full_id, id_starts_with
from roost.errors import NotFound
from roost.identity.cliscope import Env, UserOpt
from roost.identity.cliscope import run_as as _run
from roost.keyfiles import load_keys
from roost.principal import Principal
from roost.security.crypto import SecretBox

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

POLL_S: Final = 0.3
PREVIEW_CHARS: Final = 200

personas_app = typer.Typer(help="Personas: list, create, show, delete.", no_args_is_help=True)
agents_app = typer.Typer(help="Agents: list, create, show, delete, run.", no_args_is_help=True)
runs_app = typer.Typer(help="Agent runs: list, show with their steps, cancel.",
                       no_args_is_help=True)
secrets_app = typer.Typer(help="A persona's secrets: set, list, delete (values never shown).",
                          no_args_is_help=True)



def _invalid(exc: ValidationError) -> typer.Exit:
    # Field and reason only: pydantic's own message would quote the value.
    reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                        for e in exc.errors())
    return fail("Invalid input", reasons)


def _plain(value: object) -> Text:
    # Stored text (a model's answer, another member's names) printed without the control
    # sequences it may hold: no retitled window or cleared screen.
    return Text("" if value is None else printable(str(value)))


def _short(text: str | None, limit: int = PREVIEW_CHARS) -> str:
    flat = printable(" ".join((text or "").split()))
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


# --- name resolution ----------------------------------------------------------------------


async def _persona_id(session: AsyncSession, actor: Principal, ref: str) -> uuid.UUID:
    """A persona the actor can see: by its full id, else its exact name, else a unique start
    of its id (in that order: a persona named as another's id, or as a start every uuid7
    shares, made the full id or the name "several personas")."""
    full = full_id(ref)
    return await first_unique(
        session, select(Persona.id).where(personas.visible_personas(actor)),
        ((Persona.id == full,) if full is not None else ())
        + (Persona.name == ref, id_starts_with(Persona.id, ref)),  # never "%" or "_"
        ref, "persona")


async def _agent(session: AsyncSession, actor: Principal, ref: str) -> Agent:
    """An agent the actor can see, by slug or id (or a unique start): catalog.find_agent."""
    return await catalog.find_agent(session, actor, ref, id_start=True)


async def _run_id(session: AsyncSession, ref: str) -> uuid.UUID:
    # In the user's scope: row-level security keeps other users' runs out of the prefix.
    return await resolve_id(session, Run.id, ref, "run")


# --- personas -----------------------------------------------------------------------------


@personas_app.command("ls")
def personas_ls(
    user: UserOpt = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive",
                                                help="Only active (or inactive) ones.")] = None,
) -> None:
    """List the personas you own or are a member of."""
    async def go(env: Env) -> list[personas.PersonaView]:
        async with env.scoped() as session:
            views, _ = await personas.list_personas(session, env.principal, is_active=active,
                                                    limit=500)
            return views

    table = id_table("id", "name", "your role", "active", "e-mail", "created",
                     wrap=("name",))
    for view in _run(user, go):
        p = view.persona
        table.add_row(str(p.id), _plain(p.name), view.role or "admin",
                      "yes" if p.is_active else "no", _plain(p.email_address or ""),
                      when(p.created_at, seconds=True))
    print_table(console, table)


@personas_app.command("create")
def personas_create(
    name: Annotated[str, typer.Argument(help="The persona's name.")],
    user: UserOpt = None,
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    system_prompt: Annotated[str, typer.Option(help="Its instructions.")] = "",
    provider: Annotated[str | None, typer.Option(help="Default LLM provider (name).")] = None,
    model: Annotated[str | None, typer.Option(help="Default model.")] = None,
    email: Annotated[str | None, typer.Option(help="Its e-mail address.")] = None,
) -> None:
    """Create a persona (the user owns it)."""
    try:
        body = PersonaCreate(name=name, description=description, system_prompt=system_prompt,
                             default_provider=provider, default_model=model, email_address=email)
    except ValidationError as exc:
        raise _invalid(exc) from None

    async def go(env: Env) -> personas.PersonaView:
        async with env.scoped() as session:
            return await personas.create_persona(session, env.principal, body)

    view = _run(user, go)
    console.print(Text(f"Created persona {printable(view.persona.name)} ({view.persona.id})"))


@personas_app.command("show")
def personas_show(persona: Annotated[str, typer.Argument(help="Name or id.")],
                  user: UserOpt = None) -> None:
    """A persona, its members and its agents."""
    async def go(env: Env) -> tuple[personas.PersonaView, list[personas.MemberView],
                                    list[Agent]]:
        async with env.scoped() as session:
            persona_id = await _persona_id(session, env.principal, persona)
            view = await personas.get_persona(session, env.principal, persona_id)
            members = await personas.list_members(session, env.principal, persona_id)
            agents, _ = await catalog.list_agents(session, env.principal,
                                                  persona_id=persona_id, limit=500)
            return view, members, agents

    view, members, agents = _run(user, go)
    p = view.persona
    facts = id_table("field", "value", wrap=("value",))
    for field, value in (("id", p.id), ("name", p.name), ("owner", p.owner_id),
                         ("your role", view.role or "admin"), ("active", p.is_active),
                         ("e-mail", p.email_address), ("e-mail agent", p.email_agent_id),
                         ("provider", p.default_provider), ("model", p.default_model),
                         ("description", p.description), ("system prompt", p.system_prompt),
                         ("created", when(p.created_at, seconds=True))):
        facts.add_row(field, _plain(value))
    print_table(console, facts)
    table = id_table("member", "username", "role", "since")
    for m in members:
        table.add_row(str(m.member.user_id), _plain(m.username or "?"), m.member.role,
                      when(m.member.created_at, seconds=True))
    print_table(console, table)
    agents_table = id_table("agent", "slug", "name", "active")
    for a in agents:
        agents_table.add_row(str(a.id), a.slug, _plain(a.name), "yes" if a.is_active else "no")
    print_table(console, agents_table)


@personas_app.command("rm")
def personas_rm(persona: Annotated[str, typer.Argument(help="Name or id.")],
                user: UserOpt = None) -> None:
    """Delete a persona with its members, secrets, agents and mail (its runs stay)."""
    async def go(env: Env) -> uuid.UUID:
        async with env.scoped() as session:
            persona_id = await _persona_id(session, env.principal, persona)
            await personas.delete_persona(session, env.principal, persona_id)
            return persona_id

    console.print(Text(f"Deleted persona {printable(persona)} ({_run(user, go)})"))


# --- agents -------------------------------------------------------------------------------


def _agent_rows(agents: list[Agent]) -> None:
    table = id_table("id", "slug", "name", "persona", "owner", "active", "public",
                     wrap=("name",))
    for a in agents:
        table.add_row(str(a.id), a.slug, _plain(a.name), str(a.persona_id or "-"),
                      str(a.user_id), "yes" if a.is_active else "no",
                      "yes" if a.is_public else "no")
    print_table(console, table)


@agents_app.command("ls")
def agents_ls(
    user: UserOpt = None,
    persona: Annotated[str | None, typer.Option(help="Only this persona's (name or id).")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only the user's own.")] = False,
) -> None:
    """List the agents you can use: yours, your personas' and public ones."""
    async def go(env: Env) -> list[Agent]:
        async with env.scoped() as session:
            persona_id = await _persona_id(session, env.principal, persona) if persona else None
            rows, _ = await catalog.list_agents(session, env.principal, persona_id=persona_id,
                                                mine=True if mine else None, limit=500)
            return rows

    _agent_rows(_run(user, go))


@agents_app.command("create")
def agents_create(
    slug: Annotated[str, typer.Argument(help="Lower-case letters, digits and dashes.")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the slug).")] = None,
    user: UserOpt = None,
    persona: Annotated[str | None, typer.Option(help="Bind to this persona (name or id).")] = None,
    description: Annotated[str | None, typer.Option(help="What it does.")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="Its instructions.")] = None,
    provider: Annotated[str | None, typer.Option(help="Preferred LLM provider.")] = None,
    model: Annotated[str | None, typer.Option(help="Preferred model.")] = None,
    tool: Annotated[list[str] | None, typer.Option(
        "--tool", help="A tool it may call, by name or id (repeat).")] = None,
    document: Annotated[list[str] | None, typer.Option(
        "--document", help="A document id for its context (repeat).")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, max=200,
                                                  help="Model calls per run.")] = None,
    public: Annotated[bool, typer.Option("--public", help="Every user may run it.")] = False,
) -> None:
    """Create an agent (the user owns it)."""
    try:
        config = AgentConfig(max_steps=max_steps) if max_steps is not None else AgentConfig()
        body = AgentCreate(
            slug=slug, name=name or slug, description=description, system_prompt=system_prompt,
            preferred_provider=provider, preferred_model=model, tool_permissions=tool or [],
            document_ids=document or [], config=config, is_public=public)
    except ValidationError as exc:
        raise _invalid(exc) from None

    async def go(env: Env) -> Agent:
        async with env.scoped() as session:
            bound = body if persona is None else body.model_copy(
                update={"persona_id": await _persona_id(session, env.principal, persona)})
            return await catalog.create_agent(session, env.principal, bound,
                                              system=env.database)

    agent = _run(user, go)
    console.print(Text(f"Created agent {agent.slug} ({agent.id}); run it with "
                       f"`roost agents run {agent.slug} \"...\"`"))


@agents_app.command("show")
def agents_show(agent: Annotated[str, typer.Argument(help="Slug or id.")],
                user: UserOpt = None) -> None:
    """An agent's configuration."""
    async def go(env: Env) -> Agent:
        async with env.scoped() as session:
            return await _agent(session, env.principal, agent)

    out = catalog.agent_out(_run(user, go))
    facts = id_table("field", "value", wrap=("value",))
    for field, value in out.model_dump(mode="json").items():
        facts.add_row(field, _plain(value))
    print_table(console, facts)


@agents_app.command("rm")
def agents_rm(agent: Annotated[str, typer.Argument(help="Slug or id.")],
              user: UserOpt = None) -> None:
    """Delete an agent (its runs stay)."""
    async def go(env: Env) -> Agent:
        async with env.scoped() as session:
            found = await _agent(session, env.principal, agent)
            await catalog.delete_agent(session, env.principal, found.id)
            return found

    found = _run(user, go)
    console.print(Text(f"Deleted agent {found.slug} ({found.id})"))


def _step_line(step: RunStep) -> Text:
    # routing picks the model of an agent without one after the step is stored: the
    # model that answered is in its output
    what = (step.tool_name or (step.input or {}).get("model")
            or (step.output or {}).get("model") or "")
    named = f" {printable(str(what))}" if what else ""
    took = f", {step.duration_ms} ms" if step.duration_ms is not None else ""
    tokens = f", {step.tokens_in}+{step.tokens_out} tokens" if step.tokens_in else ""
    colour = {"completed": "green", "running": "yellow"}.get(step.status, "red")
    line = Text.assemble(f"[{step.step_number}] {step.step_type} ", (step.status, colour),
                         f"{named}{took}{tokens}")
    output = step.output or {}
    if step.error:
        line.append(f"\n    error: {_short(step.error)}", "red")
    elif step.step_type == "llm_call":
        calls = [str((c.get("function") or {}).get("name") or c.get("name") or "?")
                 for c in output.get("tool_calls") or [] if isinstance(c, dict)]
        if calls:
            line.append(f"\n    calls {printable(', '.join(calls))}")
        elif output.get("content"):
            line.append(f"\n    says {_short(str(output['content']))}")
    elif output:
        line.append(f"\n    result {_short(str(output))}")
    return line


async def _follow(env: Env, run_id: uuid.UUID, timeout_s: float) -> Run:
    """Print each step of the run as it finishes, in order, until the run ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    shown = 0
    while True:
        async with env.scoped() as session:
            run = await runs.get_run(session, env.principal, run_id)
            steps = await runs.list_steps(session, env.principal, run_id, after=shown)
        ended = run.status in TERMINAL_RUN_STATUSES
        for step in steps:
            if step.status == "running" and not ended:
                break  # later steps print after this one, in order
            err_console.print(_step_line(step))
            shown = step.step_number
        if ended or loop.time() >= deadline:
            return run
        await asyncio.sleep(POLL_S)


@agents_app.command("run")
def agents_run(
    agent: Annotated[str, typer.Argument(help="Slug or id.")],
    text: Annotated[str, typer.Argument(help="The input; - reads standard input.")],
    user: UserOpt = None,
    timeout: Annotated[float | None, typer.Option(
        min=1, max=MAX_SECONDS,
        help="Stop waiting after this many seconds (default: the agent's timeout "
             "plus a minute); the run goes on.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait",
                                       help="Follow the run until it ends.")] = True,
) -> None:
    """Start a run (a worker executes it: `roost worker`), print each step as it finishes
    (standard error), then the answer (standard output)."""
    if text == "-":
        text = read_text(text, what="the input")
    try:
        body = RunCreate(input=text)
    except ValidationError as exc:
        raise _invalid(exc) from None

    async def go(env: Env) -> tuple[Run, Run | None]:
        async with env.scoped() as session:
            found = await _agent(session, env.principal, agent)
            run, _ = await runs.create_run(session, env.principal, found, body, source="cli")
        err_console.print(Text(f"run {run.id} of {found.slug}: {run.status}"))
        if not wait:
            return run, None
        limit = timeout or float(run.config.get("timeout_s", 600)) + 60
        return run, await _follow(env, run.id, limit)

    run, done = _run(user, go)
    if done is None:
        console.print(str(run.id))
        return
    if done.status == "completed":
        # Plain stdout: scripts capture the answer as it is; a terminal gets it printable.
        print(printable(done.output or "") if sys.stdout.isatty() else done.output or "")
        return
    if done.status in TERMINAL_RUN_STATUSES:
        raise fail(f"Run {done.status}", printable(done.error_message or done.stop_reason or ""))
    raise fail("Still running", f"run {done.id} is {done.status}; follow it with "
                                f"`roost runs show {done.id}`", code=2)


# --- runs ---------------------------------------------------------------------------------


@runs_app.command("ls")
def runs_ls(
    user: UserOpt = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's (slug or id).")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, completed, failed "
                                                    "or cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST, help="How many.")] = 50,
) -> None:
    """The runs you can see, newest first."""
    if status is not None and status not in RUN_STATUSES:
        raise fail("Invalid --status", f"must be one of {', '.join(RUN_STATUSES)}")

    async def go(env: Env) -> list[Run]:
        async with env.scoped() as session:
            agent_id = (await _agent(session, env.principal, agent)).id if agent else None
            rows, _ = await runs.list_runs(session, env.principal, agent_id=agent_id,
                                           status=status, limit=limit)
            return rows

    table = id_table("id", "agent", "status", "stop", "steps", "tokens", "source", "created",
                     "input", wrap=("input",))
    for r in _run(user, go):
        table.add_row(str(r.id), str(r.agent_id or "-"), r.status, r.stop_reason or "-",
                      str(r.steps_count), str(r.tokens_in + r.tokens_out), r.source,
                      when(r.created_at, seconds=True), _plain(_short(r.input, 60)))
    print_table(console, table)


@runs_app.command("show")
def runs_show(run: Annotated[str, typer.Argument(help="Id (or a unique start of one).")],
              user: UserOpt = None) -> None:
    """A run, its steps and its output."""
    async def go(env: Env) -> tuple[Run, list[RunStep]]:
        async with env.scoped() as session:
            run_id = await _run_id(session, run)
            return (await runs.get_run(session, env.principal, run_id),
                    await runs.list_steps(session, env.principal, run_id))

    found, steps = _run(user, go)
    facts = id_table("field", "value", wrap=("value",))
    for field, value in (("id", found.id), ("agent", found.agent_id), ("status", found.status),
                         ("stop reason", found.stop_reason), ("trace", found.trace_id),
                         ("tokens", f"{found.tokens_in} in, {found.tokens_out} out"),
                         ("cost", found.cost), ("created", when(found.created_at, seconds=True)),
                         ("finished", when(found.completed_at, seconds=True)), ("input", found.input),
                         ("output", found.output), ("error", found.error_message)):
        facts.add_row(field, _plain(value))
    print_table(console, facts)
    for step in steps:
        console.print(_step_line(step))


@runs_app.command("cancel")
def runs_cancel(run: Annotated[str, typer.Argument(help="Id (or a unique start of one).")],
                user: UserOpt = None) -> None:
    """Cancel a run: it and its open steps close at once."""
    async def go(env: Env) -> Run:
        async with env.scoped() as session:
            return await runs.cancel_run(session, env.principal, await _run_id(session, run))

    found = _run(user, go)
    console.print(Text(f"Cancelled run {found.id}"))


# --- secrets ------------------------------------------------------------------------------


def _read_value() -> str:
    """The secret from standard input (one trailing line end dropped, a Windows CRLF
    whole: a stray CR would break every header the secret goes into) or, on a terminal,
    a hidden prompt typed twice."""
    if sys.stdin is not None and sys.stdin.isatty():  # None: closed, read_text says so
        value: str = typer.prompt("Value", hide_input=True, confirmation_prompt=True,
                                  err=True)
        return value
    raw = read_text("-", what="the secret")
    return raw.removesuffix("\r\n") if raw.endswith("\r\n") else raw.removesuffix("\n")


@secrets_app.command("set")
def secrets_set(
    persona: Annotated[str, typer.Argument(help="Persona name or id.")],
    secret_type: Annotated[str, typer.Argument(help=f"One of {', '.join(SECRET_TYPES)}.")],
    key_name: Annotated[str, typer.Argument(help="What it is for, e.g. OPENAI_API_KEY.")],
    user: UserOpt = None,
) -> None:
    """Set a secret (create or replace) from standard input or a hidden prompt."""
    value = _read_value()
    try:
        body = SecretSet.model_validate({"secret_type": secret_type, "key_name": key_name,
                                         "value": value})
    except ValidationError as exc:
        raise _invalid(exc) from None
    del value
    box = SecretBox.from_keys(load_keys(get_settings()).secrets_key)

    async def go(env: Env) -> tuple[Any, bool]:
        async with env.scoped() as session:
            persona_id = await _persona_id(session, env.principal, persona)
            return await secrets.set_secret(session, env.principal, box, persona_id, body)

    row, created = _run(user, go)
    console.print(Text(f"{'Set' if created else 'Replaced'} {row.secret_type}/{row.key_name} "
                       f"({row.id})"))


@secrets_app.command("ls")
def secrets_ls(persona: Annotated[str, typer.Argument(help="Persona name or id.")],
               user: UserOpt = None) -> None:
    """The persona's secrets: types, names and times (never values)."""
    async def go(env: Env) -> list[Any]:
        async with env.scoped() as session:
            persona_id = await _persona_id(session, env.principal, persona)
            return await secrets.list_secrets(session, env.principal, persona_id)

    table = id_table("id", "type", "key name", "updated", "last used")
    for row in _run(user, go):
        table.add_row(str(row.id), row.secret_type, _plain(row.key_name),
                      when(row.updated_at, seconds=True), when(row.last_used_at, seconds=True))
    print_table(console, table)


@secrets_app.command("rm")
def secrets_rm(
    persona: Annotated[str, typer.Argument(help="Persona name or id.")],
    secret: Annotated[str, typer.Argument(help="TYPE/KEY_NAME, or the secret's id.")],
    user: UserOpt = None,
) -> None:
    """Delete one of the persona's secrets."""
    kind, sep, key = secret.partition("/")

    async def go(env: Env) -> Any:
        async with env.scoped() as session:
            persona_id = await _persona_id(session, env.principal, persona)
            if sep and kind in SECRET_TYPES:
                rows = await secrets.list_secrets(session, env.principal, persona_id,
                                                  secret_type=kind)
                match = [r.id for r in rows if r.key_name == key]
                if not match:
                    raise NotFound(f"the persona has no {kind} secret named {key!r}")
                secret_id = match[0]
            else:
                secret_id = await resolve_id(session, Secret.id, secret, "secret",
                                             where=Secret.persona_id == persona_id)
            return await secrets.delete_secret(session, env.principal, persona_id, secret_id)

    row = _run(user, go)
    console.print(Text(f"Deleted {row.secret_type}/{row.key_name}"))


def register(app: typer.Typer) -> None:
    """Add ``roost personas``, ``agents``, ``runs`` and ``secrets`` (``roost.domains``)."""
    app.add_typer(personas_app, name="personas")
    app.add_typer(agents_app, name="agents")
    app.add_typer(runs_app, name="runs")
    app.add_typer(secrets_app, name="secrets")
