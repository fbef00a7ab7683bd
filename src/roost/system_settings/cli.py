"""``roost settings ls|get|set|reset``: runtime settings from the command line, as the
operator (audited like the API; running servers apply a change without a restart)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from roost.clitools import add_text_row, fail, id_table, print_table, run_in_transaction
from roost.config import get_settings
from roost.principal import OPERATOR
from roost.system_settings import registry, service
from roost.system_settings.schemas import SettingOut

console = Console()
settings_app = typer.Typer(help="Runtime settings: override ROOST_* defaults without a restart.",
                           no_args_is_help=True)



def _known(key: str) -> str:
    """A declared setting's key; any other is refused before the database is opened."""
    if key not in {s.key for s in registry.known()}:
        raise fail("Not found", f"no runtime setting {key!r}; `roost settings ls` lists them")
    return key


KeyArg = Annotated[str, typer.Argument(help="The setting's key (see `roost settings ls`).",
                                       callback=_known)]


def _show(value: Any) -> str:
    return json.dumps(value)


def parse_value(raw: str) -> Any:
    """VALUE as JSON (``true``, ``40``, ``"x"``, ``null``), else the text itself."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw
    except RecursionError:  # '[[[[...' thousands deep: the parser's stack runs out
        raise fail("Invalid value", "nested too deeply") from None


@settings_app.command("ls")
def settings_ls() -> None:
    """Every runtime setting: its value, where it comes from, its default."""
    found: list[SettingOut] = run_in_transaction(
        lambda s: service.list_settings(s, OPERATOR, get_settings()))
    table = id_table("key", "value", "source", "default", "description", wrap=("description",))
    for o in found:
        add_text_row(table, o.key, _show(o.value), o.source, _show(o.default), o.description)
    print_table(console, table)


@settings_app.command("get")
def settings_get(key: KeyArg) -> None:
    """One setting, with its JSON Schema."""
    o = run_in_transaction(lambda s: service.read_setting(s, OPERATOR, get_settings(), key))
    console.print_json(json.dumps(o.model_dump(mode="json", by_alias=True)), ensure_ascii=True)


@settings_app.command("set")
def settings_set(
    key: KeyArg,
    value: Annotated[str, typer.Argument(help="The value: JSON, or else taken as text.")],
) -> None:
    """Override a setting (checked against its schema)."""
    parsed = parse_value(value)  # a value that cannot be read: refused before the database
    o = run_in_transaction(
        lambda s: service.set_setting(s, OPERATOR, get_settings(), key, parsed))
    console.print(Text(f"{o.key} = {_show(o.value)} (override)"))


@settings_app.command("reset")
def settings_reset(key: KeyArg) -> None:
    """Drop the override: the default applies again."""
    o = run_in_transaction(lambda s: service.reset_setting(s, OPERATOR, get_settings(), key))
    console.print(Text(f"{o.key} = {_show(o.value)} (default)"))


def register(app: typer.Typer) -> None:
    """Add ``roost settings`` (``roost.domains`` calls this)."""
    app.add_typer(settings_app, name="settings")
