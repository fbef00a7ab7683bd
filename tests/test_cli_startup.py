"""``roost`` loads a domain's commands only when one of them runs: a command starts in
under a second, and every command is still there for ``--help`` and typo suggestions."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
import typer.main

from roost import domains
from tests.support.cli import run_roost


def test_each_domain_declares_exactly_the_commands_it_registers() -> None:
    for domain in domains.DOMAINS:
        if domain.cli is None:
            assert not domain.commands, domain.name
            continue
        scratch = typer.Typer()
        scratch.callback()(lambda: None)
        domains.load(domain.cli)(scratch)
        group = typer.main.get_command(scratch)
        assert isinstance(group, typer.core.TyperGroup)
        assert sorted(group.commands) == sorted(domain.commands), domain.name


def _modules_after(*argv: str) -> dict[str, bool]:
    """Run ``roost ARGV`` in a fresh interpreter; which heavy modules did it import?"""
    script = (
        "import json, sys\n"
        "from roost.cli import main\n"
        f"sys.argv = ['roost', *{list(argv)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('mcp', 'fpdf', 'roost.tools.cli', 'roost.billing.invoice_cli')\n"
        "print(json.dumps({m: m in sys.modules for m in heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_a_command_imports_only_its_own_domain() -> None:
    assert not any(_modules_after("users", "--help").values())
    assert not any(_modules_after("--version").values())
    assert _modules_after("mcp", "--help")["roost.tools.cli"]


def test_help_lists_every_command_and_a_typo_suggests_a_lazy_one() -> None:
    shown = run_roost("--help", env={}, fresh=True)
    assert shown.returncode == 0, shown.stderr
    for name in [*domains.cli_commands(), "serve", "db", "doctor", "backup"]:
        assert f" {name} " in shown.stdout, name
    typo = run_roost("toolz", "list", env={}, fresh=True)
    assert typo.returncode == 2
    assert "Did you mean 'tools'?" in typo.stderr
    keys = run_roost("keys", "--help", env={}, fresh=True)  # one group, two domains
    assert "rotate-messages" in keys.stdout and "create" in keys.stdout


def test_a_group_two_domains_add_to_is_whole_whichever_command_loaded_first() -> None:
    from roost.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    ctx = typer.Context(group)
    assert group.get_command(ctx, "users") is not None  # identity's commands, not chat's
    keys = group.get_command(ctx, "keys")
    assert isinstance(keys, typer.core.TyperGroup)
    assert {"create", "rotate-messages"} <= set(keys.commands)
