"""``roost prompts ls|show|publish``: versioned system prompts from the command line.

Every command acts for one user, ``--user`` (username or e-mail; default: the root user),
in that user's row-level-security scope, through the same services as the API.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from roost.clitools import (
    MAX_INT32,
    add_text_row,
    fail,
    id_table,
    load_json,
    print_table,
    printable,
    read_text,
)
from roost.identity.cliscope import Env, UserOpt
from roost.identity.cliscope import run_as as _run
from roost.prompts import service
from roost.prompts.schemas import KeyOut, PromptCreate, PromptOut, Scope, VariableDef

console = Console()
prompts_app = typer.Typer(help="System prompts: list keys, show and publish versions.",
                          no_args_is_help=True)

KeyArg = Annotated[str, typer.Argument(help="The prompt key, e.g. chat.system.")]


@prompts_app.command("ls")
def prompts_ls(user: UserOpt = None, category: Annotated[str | None, typer.Option(
        help="Only this category.")] = None) -> None:
    """The keys of your scopes (yours, your groups', the factory's): versions and labels."""

    async def go(env: Env) -> list[KeyOut]:
        async with env.scoped() as session:
            return await service.list_keys(session, env.principal, category=category)

    keys = _run(user, go)
    table = id_table("key", "scope", "category", "versions", "labels", "used", "success")
    for k in keys:
        labels = ", ".join(f"{name}→v{v}" for name, v in sorted(k.labels.items()))
        # The category is a group's administrator's text: escaped like every stored string.
        add_text_row(table, k.prompt_key, k.scope, k.prompt_category, str(k.versions),
                     labels or "-", str(k.usage_count),
                     "-" if k.success_rate is None else f"{k.success_rate:.0%}")
    print_table(console, table)


@prompts_app.command("show")
def prompts_show(
    key: KeyArg, user: UserOpt = None,
    version: Annotated[int | None, typer.Option(
        min=1, max=MAX_INT32, help="This version number.")] = None,
    label: Annotated[str | None, typer.Option(
        help="The version this label points at (default: production).")] = None,
) -> None:
    """The version of KEY you would get (resolution order: yours, your group's, the
    factory default), or --version N, and its text."""
    if version is not None and label is not None:
        raise fail("Invalid options", "give --version or --label, not both")

    async def go(env: Env) -> PromptOut:
        async with env.scoped() as session:
            row = await service.find_version(session, env.principal, key, version=version,
                                             label=label)
            return service.prompt_out(row, (await service.labels_of(session, [row.id]))[row.id])

    p = _run(user, go)
    # A group's prompt is another member's text: its category, defaults and text reach a
    # terminal without control sequences.
    console.print(Text(printable(f"{p.prompt_key} v{p.version} ({p.scope}"
                       + (f", labels: {', '.join(p.labels)}" if p.labels else "") + ")")))
    console.print(Text(printable(
        f"id {p.id} · category {p.prompt_category} · used {p.usage_count} times"
        + ("" if p.success_rate is None else f" · success {p.success_rate:.0%}")
        + ("" if p.is_active else " · INACTIVE"))))
    for var in p.variables:
        console.print(Text(printable(
            f"  {{{{{var['name']}}}}} {var.get('type', 'string')}"
            + (" required" if var.get("required") else "")
            + (f" default={var['default']!r}" if var.get("default") is not None else ""))))
    console.print()
    shown = p.prompt_text.rstrip("\n")
    sys.stdout.write((printable(shown) if sys.stdout.isatty() else shown) + "\n")


@prompts_app.command("publish")
def prompts_publish(
    key: KeyArg,
    file: Annotated[str, typer.Option("--file", "-f",
                                      help="The prompt text (- for standard input).")],
    user: UserOpt = None,
    label: Annotated[str, typer.Option(
        help="Point this label at the new version ('' for none).")] = "production",
    category: Annotated[str, typer.Option(help="Its category.")] = "general",
    name: Annotated[str | None, typer.Option(help="A readable name (default: the key).")
                    ] = None,
    variables: Annotated[str | None, typer.Option(
        help='Variable definitions as JSON: [{"name": "x", "type": "string", '
             '"required": true, "default": null}]')] = None,
    scope: Annotated[str, typer.Option(
        help="user (yours), group (--group's, as its administrator) or factory "
             "(administrators).")] = "user",
    group: Annotated[str | None, typer.Option(help="The group's id, with --scope group.")
                     ] = None,
) -> None:
    """Publish a new version of KEY from a file; it gets --label (default production)."""
    text = read_text(file)
    defs: Any = load_json(variables, "Invalid --variables") if variables else []
    if not isinstance(defs, list):  # an object's keys or a number are no definitions
        raise fail("Invalid --variables", 'expected a JSON list of definitions, e.g. '
                   '[{"name": "x", "type": "string"}]')
    try:
        body = PromptCreate(
            prompt_key=key, prompt_text=text, prompt_name=name, prompt_category=category,
            variables=[VariableDef.model_validate(v) for v in defs],
            scope=_scope(scope), group_id=group, label=label or None)
    except (ValidationError, TypeError) as exc:
        raise fail("Invalid input", _first_error(exc)) from None

    async def go(env: Env) -> PromptOut:
        async with env.scoped() as session:
            row, labels = await service.create_version(session, env.principal, body)
            return service.prompt_out(row, labels)

    p = _run(user, go)
    console.print(Text(f"published {p.prompt_key} v{p.version} ({p.scope})"
                       + (f", label {label} → v{p.version}" if label else "") + f"\nid {p.id}"))


def _scope(value: str) -> Scope:
    if value not in ("user", "group", "factory"):
        raise fail("Invalid --scope", "use user, group or factory")
    return value  # type: ignore[return-value]


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where}: {err['msg']}" if where else str(err["msg"])
    return str(exc)


def register(app: typer.Typer) -> None:
    """Add ``roost prompts`` (``roost.domains``)."""
    app.add_typer(prompts_app, name="prompts")
