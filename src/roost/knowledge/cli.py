"""``roost ingest PATH|URL``: ingest on this machine with a progress bar.

The operator's command runs the same resumable ingestion as the ``knowledge.ingest``
job, in this process (no worker needed), without the allowed-roots confinement that
API users get (the operator already has the machine).  Running it again skips files
whose content is unchanged, so an interrupted ingestion is resumed by re-running it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from sqlalchemy import select

from roost.clitools import (
    fail,
    id_table,
    open_database,
    parse_input,
    print_table,
    printable,
    reported_here,
    run_stoppable,
)

console = Console()
err = Console(stderr=True)
_URL_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
INTERRUPTED = ("interrupted: `roost ingest` was stopped (Ctrl-C or SIGTERM) before the run "
               "finished; run the command again to go on (unchanged files are skipped)")


def ingest_command(
    target: Annotated[str, typer.Argument(help="A file, a directory or an http(s) URL.")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r",
                                            help="Descend into sub-directories.")] = False,
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    tags: Annotated[str | None, typer.Option(help="Comma-separated tags.")] = None,
    user: Annotated[str | None, typer.Option(
        help="Owner (user name or e-mail); default: the root user.")] = None,
    group: Annotated[str | None, typer.Option(help="Share with this group (name).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Only the owner sees it.")] = False,
    force: Annotated[bool, typer.Option("--force",
                                        help="Re-ingest files whose content is unchanged.")] = False,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Then delete the owner's documents of files under the directory that "
                        "no longer exist (its direct children unless --recursive).")] = False,
) -> None:
    """Ingest documents (text, Markdown, HTML, PDF) for search."""
    from roost.config import get_settings
    from roost.errors import RoostError
    from roost.knowledge.config import KnowledgeConfig
    from roost.knowledge.ingest import interrupt_run, run_ingestion
    from roost.knowledge.schemas import IngestionRunCreate

    scheme = _URL_SCHEME.match(target.strip())
    if scheme is not None and scheme[1].lower() not in ("http", "https"):
        raise fail("cannot ingest", f"{scheme[1]}:// URLs are not supported: give a file, a "
                   "directory or an http(s) URL", code=2)
    try:  # the API's own checks (lengths, tags), before anything is stored
        body = parse_input(IngestionRunCreate, {
            "target": target, "recursive": recursive, "collection": collection or None,
            "tags": (tags or "").split(","), "is_private": private, "prune": prune})
    except typer.Exit:
        raise typer.Exit(2) from None  # bad options: a usage error, as this command's others
    except RoostError as exc:  # a bad tag (check_tags)
        raise fail("cannot ingest", exc.detail, code=2) from None
    settings = get_settings()
    cfg = KnowledgeConfig.from_settings(settings)

    async def run() -> dict[str, Any]:
        db = await open_database(settings)
        try:
            run_id = await _create_run(db, cfg, target, recursive=recursive, prune=prune,
                                       collection=body.collection, tags=body.tags, user=user,
                                       group=group, private=private)
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("{task.fields[current]}", markup=False),
                          console=console, transient=False) as bar:
                task = bar.add_task("ingesting", total=None, current="")

                def progress(done: int, total: int, source: str, outcome: str) -> None:
                    # Escaped (a file name is anyone's text: ESC would act on the terminal).
                    source = printable(source).replace("\n", "\\n")
                    shown = source if len(source) <= 60 else "…" + source[-59:]
                    bar.update(task, completed=done, total=total, current=f"{outcome}: {shown}")

                with reported_here():  # its errors are printed below, one per file
                    try:
                        summary = await run_ingestion(db, run_id, cfg, force=force,
                                                      confine=False, progress=progress)
                    except asyncio.CancelledError:  # Ctrl-C or SIGTERM (run_stoppable)
                        await interrupt_run(db, cfg, run_id, INTERRUPTED)
                        raise
            summary["errors_detail"] = await _errors(db, run_id)
            return summary
        finally:
            await db.dispose()

    try:
        summary = run_stoppable(run(), "ingestion")
    except RoostError as exc:
        raise fail("cannot ingest", exc.detail, code=2) from None
    pruned = ("pruned",) if prune else ()
    table = id_table("status", "files", "chunks", *pruned, "errors", "run")
    colour = {"success": "green", "partial": "yellow"}.get(str(summary["status"]), "red")
    table.add_row(f"[{colour}]{summary['status']}[/{colour}]", str(summary["totals_files"]),
                  str(summary["totals_chunks"]),
                  *((str(summary.get("totals_pruned", 0)),) if prune else ()),
                  str(summary["errors"]), str(summary["run_id"]))
    print_table(console, table)
    for error in summary["errors_detail"]:
        # One line per file: a newline in a name (which printable keeps) is shown escaped too.
        where = printable(str(error.get("path") or target)).replace("\n", "\\n")
        why = printable(str(error.get("error"))).replace("\n", "\\n")
        err.print(Text.assemble(("error", "red"), f" {where}: {why}"), soft_wrap=True)
    if summary["status"] == "failed":
        raise typer.Exit(1)


async def _create_run(
    db: Any, cfg: Any, target: str, *, recursive: bool, collection: str | None, tags: list[str],
    user: str | None, group: str | None, private: bool, prune: bool = False,
) -> uuid.UUID:
    import os

    from roost.audit import service as audit
    from roost.errors import NotFound, Unprocessable
    from roost.identity.accounts import find_user
    from roost.identity.common import group_ids_of, principal_for
    from roost.identity.models import Group, User
    from roost.identity.schemas import stored_group_name
    from roost.knowledge.models import IngestionRun
    from roost.knowledge.service import check_group, is_web_target, precheck_url

    async with db.transaction() as s:
        # By user name or e-mail as sign-in finds them (any case, composed or not).
        owner = (await find_user(s, user) if user is not None
                 else (await s.scalars(select(User).where(User.is_root))).one_or_none())
        if owner is None:
            raise NotFound(f"no user {user!r}" if user else
                           "no root user exists: pass --user NAME to choose the owner")
        group_id = None
        if group is not None:
            # Spelled as names are stored (composed, stripped, invisible ends dropped: the
            # API's rule): "É" typed decomposed, or a name pasted with a zero-width space,
            # matches.
            stored = stored_group_name(group)
            found = None if stored is None else (await s.scalars(
                select(Group).where(Group.name == stored))).one_or_none()
            if found is None:
                raise NotFound(f"no group named {group!r}")
            group_id = found.id
            # As the API checks it: a member shares with their own groups only (the
            # per-file check dropped the sharing silently, the run a "success").
            await check_group(s, principal_for(owner, group_ids=await group_ids_of(
                s, owner.id)), group_id)
        web = is_web_target(target)
        resolved = precheck_url(target, cfg) if web else await asyncio.to_thread(os.path.realpath, target)
        if not web and not await asyncio.to_thread(os.path.exists, resolved):
            # A typo is a usage error (exit 2), not a failed run left in the history.
            raise NotFound(f"the path {target!r} does not exist")
        if web and prune:
            raise Unprocessable("--prune applies to a directory, not a URL")
        run = IngestionRun(user_id=owner.id, target=resolved, source="web" if web else "file",
                           from_web=web, recursive=recursive, prune=prune, tags=tags,
                           collection=collection,
                           group_id=group_id, is_private=private,
                           embedding_model=cfg.embedder.model, status="pending")
        s.add(run)
        await s.flush()
        await audit.record(s, "knowledge.ingestion_run.started", user_id=owner.id,
                           resource_type="ingestion_run", resource_id=run.id,
                           changes={"target": resolved, "via": "cli", "recursive": recursive,
                                    "prune": prune},
                           category="system")
        return uuid.UUID(str(run.id))


async def _errors(db: Any, run_id: uuid.UUID) -> list[dict[str, Any]]:
    from roost.knowledge.models import IngestionRun

    async with db.transaction() as s:
        run = await s.get(IngestionRun, run_id)
        return list(run.errors or []) if run is not None else []


def register(app: typer.Typer) -> None:
    """Add ``roost ingest`` (``roost.domains`` calls this)."""
    app.command("ingest")(ingest_command)
