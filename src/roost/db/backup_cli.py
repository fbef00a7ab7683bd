"""``roost backup [PATH]`` and ``roost restore PATH`` (roost.db.backup does the work).

``roost.cli`` calls :func:`register`.  This module sits in the foundation layer with
``roost.db``, so it prints its errors with ``roost.db.cliio`` (which ``roost.clitools``
re-exports); a database that cannot be used is reported by ``roost.cli.main``, as for
every command.
"""

from __future__ import annotations

import errno
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from roost.config import get_settings
from roost.db.cliio import fail, os_reason, read_text, run_stoppable

console = Console()
err = Console(stderr=True)


PassphraseFile = Annotated[Path | None, typer.Option(
    "--passphrase-file", exists=True, dir_okay=False, readable=True,
    help="Read the passphrase from this file (its first line). Else ROOST_BACKUP_PASSPHRASE, "
         "else (with --encrypt, or for an encrypted backup) a prompt.")]


class _Bars:
    """A rich progress bar per stage (the service's Reporter), shown from the first stage
    on: a backup refused before any work prints its one line and nothing else."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.current: TaskID | None = None

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def stage(self, name: str, total: int | None) -> None:
        self._finish()
        if not self.progress.live.is_started:
            self.progress.start()
        self.current = self.progress.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        if self.current is not None:
            self.progress.advance(self.current, amount)

    def _finish(self) -> None:
        if self.current is not None:
            task = self.progress.tasks[-1]
            if task.total is not None:
                self.progress.update(self.current, completed=task.total)

    def close(self) -> None:
        self._finish()


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description:<10}"), BarColumn(),
                    TaskProgressColumn(), TimeElapsedColumn(), console=err, transient=False)


MAX_PASSPHRASE_FILE_BYTES = 64 * 1024


def _passphrase(file: Path | None, *, prompt: bool, confirm: bool) -> str | None:
    if file is not None:
        # The first line as editors see lines: "\n" or "\r\n" ends it (str.splitlines also
        # cuts at NEL, U+2028, \x1c-\x1e, which a passphrase may hold), a byte order mark
        # (Windows Notepad writes one) is not part of it.
        text = read_text(file, what="the passphrase file", max_bytes=MAX_PASSPHRASE_FILE_BYTES)
        value = text.removeprefix("\ufeff").split("\n", 1)[0].removesuffix("\r")
        if not value:
            raise fail("empty passphrase", f"{file} has no passphrase on its first line")
        return value
    configured = get_settings().backup_passphrase
    if configured is not None:
        return configured.get_secret_value()
    if not prompt:
        return None
    if sys.stdin is None or not sys.stdin.isatty():
        raise fail("passphrase needed", "give --passphrase-file or ROOST_BACKUP_PASSPHRASE "
                    "(no terminal to prompt on)")
    typed: str = typer.prompt("Backup passphrase", hide_input=True,
                              confirmation_prompt=confirm)
    return typed


def _from_the_driver(exc: BaseException) -> bool:
    """Raised by the PostgreSQL driver (connecting: refused, no socket, a timeout)."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("asyncpg."):
            return True
        tb = tb.tb_next
    return False


def _file_failure(title: str, exc: OSError, full_hint: str = "") -> typer.Exit:
    """The one line for a file that cannot be created or written (``full_hint`` added when
    the disk is full); the caller re-raises the driver's own OSErrors (_from_the_driver)."""
    reason = os_reason(exc)
    if exc.errno == errno.ENOSPC and full_hint:
        reason += f" ({full_hint})"
    if exc.filename is None:  # a write failed (the disk is full...)
        return fail(title, reason)
    return fail(title, f"cannot create or write {exc.filename}: {reason}")


def backup_command(
    path: Annotated[Path | None, typer.Argument(
        help="New directory to write (default: DATA_DIR/backups/roost-<UTC time>).")] = None,
    passphrase_file: PassphraseFile = None,
    encrypt: Annotated[bool, typer.Option(
        "--encrypt", help="Encrypt with a passphrase (prompted for when no file or "
        "ROOST_BACKUP_PASSPHRASE gives it).")] = False,
    physical: Annotated[bool, typer.Option(
        "--physical", help="pg_basebackup of the whole cluster instead of pg_dump; restores "
        "into an embedded data dir.")] = False,
    incremental_from: Annotated[Path | None, typer.Option(
        "--incremental-from", file_okay=False, exists=True,
        help="A physical backup this one adds the changed blocks to (implies --physical; "
        "restore needs every backup of the chain).")] = None,
) -> None:
    """Back up the database (pg_dump, one consistent snapshot), Roost's keys and the code
    versions' git repositories (DATA_DIR/repos).

    Writes a manifest with the versions, the sha256 of every file and per table its row
    count and content checksum; with a passphrase everything but the manifest is
    encrypted (scrypt, AES-256-GCM).  Safe while Roost is running.
    """
    from roost.db.backup import BackupError, create_backup

    settings = get_settings()
    passphrase = _passphrase(passphrase_file, prompt=encrypt, confirm=True)
    try:
        with _Bars(_progress()) as bars:
            result = run_stoppable(create_backup(
                settings, path, passphrase=passphrase, physical=physical,
                incremental_from=incremental_from, reporter=bars), "backup")
            bars.close()
    except BackupError as exc:
        raise fail("backup failed", exc) from None
    except OSError as exc:  # the backup directory cannot be created or written
        if _from_the_driver(exc):
            raise  # the database cannot be reached: roost.cli.main says so
        raise _file_failure("backup failed", exc) from None  # nothing is left
    for warning in result.warnings:
        err.print(Text.assemble(("warning", "yellow"), ": ", warning), soft_wrap=True)
    console.print(Text(
        f"{result.kind} backup written to {result.path}: {result.tables} tables, "
        f"{result.rows} rows, "
        f"{result.bytes / 1e6:.1f} MB{', encrypted' if result.encrypted else ''}"),
        soft_wrap=True)


def restore_command(
    path: Annotated[Path, typer.Argument(help="The backup directory.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the data of a target that is not empty (its database, "
        "keys and code repositories).")] = False,
    passphrase_file: PassphraseFile = None,
) -> None:
    """Restore a backup into an empty data dir (embedded) or database (ROOST_DATABASE_URL).

    Checks the manifest, every file's checksum and the dump before writing anything;
    refuses a target that holds data unless --force; restores in one transaction (with
    --force into a staging database), checks every table's row count and checksum against
    the manifest, then swaps it in (the old database, keys and code repositories kept
    aside) and writes the keys and repositories.
    """
    from roost.db.backup import (
        BackupError,
        TargetNotEmpty,
        needs_passphrase,
        plain_backups_under,
        restore_backup,
    )

    settings = get_settings()
    try:
        encrypted = needs_passphrase(path)
        plain_under = plain_backups_under(path) if encrypted else []
    except BackupError as exc:
        raise fail("restore refused", exc) from None
    if plain_under and passphrase_file is not None:
        # An encrypted increment restores mostly the files of the backups it builds on.
        raise fail("restore refused", f"{plain_under[0]}, a backup {path} builds on, is not "
                   "encrypted, so nothing shows it is the backup you made: restore without "
                   "--passphrase-file (ROOST_BACKUP_PASSPHRASE or the prompt) if you trust it")
    if plain_under:
        err.print(Text.assemble(("warning", "yellow"), ": ", f"{plain_under[0]}, a backup "
                                f"{path} builds on, is not encrypted: nothing authenticates "
                                "its files"), soft_wrap=True)
    if not encrypted and passphrase_file is not None:
        # Only encryption authenticates a backup (manifest.mac): a plain one where an
        # encrypted one was expected may have been swapped by whoever could write there.
        raise fail("restore refused", f"{path} is not encrypted, so nothing shows it is the "
                   "backup you made: restore it without --passphrase-file if you trust it")
    if not encrypted and get_settings().backup_passphrase is not None:
        err.print(Text.assemble(("warning", "yellow"), ": ", f"{path} is not encrypted "
                                "(ROOST_BACKUP_PASSPHRASE is set): nothing authenticates it"),
                  soft_wrap=True)
    passphrase = _passphrase(passphrase_file, prompt=encrypted, confirm=False) if encrypted else None
    try:
        with _Bars(_progress()) as bars:
            result = run_stoppable(restore_backup(settings, path, passphrase=passphrase,
                                         force=force, reporter=bars), "restore")
            bars.close()
    except TargetNotEmpty as exc:
        raise fail("restore refused", exc) from None
    except BackupError as exc:
        raise fail("restore failed", exc) from None
    except OSError as exc:  # the scratch directory (TMPDIR), the data dir or its keys
        if _from_the_driver(exc):
            raise
        raise _file_failure("restore failed", exc, full_hint=(
            f"the backup is decrypted and unpacked in {tempfile.gettempdir()} first: if "
            "that is the full one, set TMPDIR to a directory with room")) from None
    for warning in result.warnings:
        err.print(Text.assemble(("warning", "yellow"), ": ", warning), soft_wrap=True)
    console.print(Text(f"restored {result.tables} tables ({result.rows} rows) into "
                       f"{result.target}; keys in {settings.data_dir / 'keys'}"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
