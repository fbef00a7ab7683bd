"""``roost audit verify|prune``: check the hash chain and apply retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console

from roost.clitools import MAX_DAYS, fail, with_database
from roost.db.engine import Database

audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
console = Console()


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit hash chain and report the first broken link."""
    from roost.audit.service import ChainReport, verify_chain

    async def run(db: Database) -> ChainReport:
        async with db.transaction() as session:
            return await verify_chain(session)

    with console.status("verifying the audit chain..."):
        report = with_database(run)
    # The head, kept elsewhere and compared later, shows whether the newest records were
    # cut off (docs/operations.md, "The audit log").
    head = (f"head: chain_seq {report.head_chain_seq}, row_hash {report.head_hash}"
            if report.head_chain_seq is not None else "head: none (empty chain)")
    if report.ok:
        console.print(f"[green]audit chain intact[/green]: {report.rows_checked} records; "
                      f"{head}", soft_wrap=True)
        return
    raise fail(
        "audit chain broken",
        f"at seq {report.broken_seq} (id {report.broken_id}): "
        f"{report.reason}; {report.rows_checked} records checked; {head}",
    )


@audit_app.command("prune")
def audit_prune(
    older_than_days: Annotated[int, typer.Option(
        min=1, max=MAX_DAYS, help="Delete records older than this.")],
) -> None:
    """Apply audit retention: delete the oldest records (the pruning itself is audited)."""
    from roost.audit.service import apply_retention

    async def run(db: Database) -> int:
        async with db.transaction() as session:
            return await apply_retention(session, timedelta(days=older_than_days))

    console.print(f"pruned {with_database(run)} audit records")


def register(app: typer.Typer) -> None:
    """Add ``roost audit`` (``roost.domains`` calls this)."""
    app.add_typer(audit_app, name="audit")
