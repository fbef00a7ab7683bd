"""``roost keys rotate-messages``: re-encrypt every stored message under the first key.

``roost.cli`` calls :func:`register`; it adds the command to the ``keys`` group when
another domain already made one, so there is a single ``roost keys``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from roost.clitools import fail, open_database

console = Console()
err = Console(stderr=True)


def rotate_messages_command(
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per transaction.")] = 500,
) -> None:
    """Re-encrypt stored messages under the first ROOST_MESSAGE_KEYS key (resumable).

    Covers every encrypted conversation column (messages, history events, summaries, LLM
    requests and responses), in batches with a progress bar.  Safe to interrupt: run it
    again to resume.  Rows no configured key decrypts are reported and left untouched.
    """
    import asyncio

    from roost.chat.keys import (
        CHECKPOINT_FILE,
        RotationBusy,
        RotationReport,
        count_encrypted_rows,
        rotate_messages,
    )
    from roost.config import get_settings
    from roost.keyfiles import KEY_DIR_NAME, load_keys
    from roost.security.crypto import MessageCipher

    settings = get_settings()
    key_file = settings.data_dir / KEY_DIR_NAME / "message_keys"
    if settings.message_keys is None and not key_file.exists():
        # load_keys would make a fresh key: nothing stored opens with it (a wrong DATA_DIR).
        raise fail("no message keys to rotate",
                   f"{key_file} does not exist and ROOST_MESSAGE_KEYS is not set; point "
                   "ROOST_DATA_DIR at the server's data directory", code=2)
    try:
        keys = load_keys(settings)
        cipher = MessageCipher(list(keys.message_keys))
    except (OSError, ValueError) as exc:
        raise fail("message keys are not usable", exc, code=2) from None
    checkpoint = settings.data_dir / KEY_DIR_NAME / CHECKPOINT_FILE

    async def run() -> RotationReport:
        db = await open_database(settings)
        try:
            counts = await count_encrypted_rows(db)
            with Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), console=console, transient=False,
            ) as progress:
                tasks = {t: progress.add_task(t, total=n) for t, n in counts.items()}

                def advance(table: str, rows: int) -> None:
                    progress.advance(tasks[table], rows)

                return await rotate_messages(
                    db, cipher, keys.message_keys, batch_size=batch_size,
                    checkpoint=checkpoint, on_batch=advance,
                )
        finally:
            await db.dispose()

    try:
        report = asyncio.run(run())
    except RotationBusy as exc:
        raise fail("not rotating", exc.detail) from None
    if report.resumed_from:
        console.print(f"resumed from {report.resumed_from}")
    console.print(
        f"re-encrypted {report.rows_rotated} of {report.rows_seen} rows "
        f"in {report.batches} batches"
    )
    if not report.ok:
        bad = report.undecryptable
        raise fail(f"{len(bad)} rows could not be decrypted with any configured key and were "
                   "left untouched", f"e.g. {bad[:5]}")
    if keys.message_keys[1:]:
        console.print("every row is under the first key: the old keys can now be removed")


def register(app: typer.Typer) -> None:
    """Add ``keys rotate-messages`` to the ``keys`` group (created if nobody made one)."""
    for group in app.registered_groups:
        if group.name == "keys" and group.typer_instance is not None:
            group.typer_instance.command("rotate-messages")(rotate_messages_command)
            return
    keys_app = typer.Typer(help="Encryption keys.", no_args_is_help=True)
    keys_app.command("rotate-messages")(rotate_messages_command)
    app.add_typer(keys_app, name="keys")
