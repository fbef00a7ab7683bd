"""What every ``roost`` command shares to fail cleanly: the one red line of a failure, and
reading or writing the files its options name (``--file``, ``--inputs-json``,
``--passphrase-file``, ``-o``) with one line naming the file and the problem instead of
a traceback.

It sits in the foundation layer with ``roost.db`` so that the backup commands
(``roost.db.backup_cli``) use it too; ``roost.clitools`` re-exports it for the domains.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import select
import signal
import stat
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

import typer
from rich.console import Console
from rich.text import Text

err = Console(stderr=True)
T = TypeVar("T")

STDIN = "-"

# Control characters a terminal acts on (C0 but tab and newline, DEL, C1): ESC starts
# sequences that set the window's title, clear the screen or move the cursor.
_CONTROL: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidirectional controls (ALM, LRM, RLM, the embeddings, overrides and isolates): one in a
# name another user wrote reorders the text around it on the terminal ("Trojan Source").
_BIDI: Final = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` (stored text a model, a server or another user wrote) safe to print to a
    terminal: each control character but tab and newline shown as its escape (``\\x1b``),
    each bidirectional control as its own (``\\u202e``)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def fail(title: str, message: object, *, code: int = 1) -> typer.Exit:
    """Print ``title: message`` on stderr and return the exit to raise.  The message is
    printed as it is (rich markup would eat ``[local]`` in ``roost[local]``) but
    :func:`printable`: it often quotes a server's, a model's or a user's text."""
    # soft_wrap: long messages (ids to copy) are left to the terminal, not cut into lines.
    err.print(Text.assemble((printable(title), "red"), ": ", printable(str(message))),
              soft_wrap=True)
    return typer.Exit(code)


def load_json(raw: str, title: str, source: str = "not JSON") -> Any:
    """``raw`` parsed as JSON, or one red line ``title: source: why`` (exit 1): where the
    parser stopped, or json's own limits (an integer of over 4,300 digits, nesting deeper
    than the stack: a RecursionError's traceback otherwise), or a lone surrogate (the
    database's traceback otherwise)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise fail(title, f"{source}: {exc.msg} at character {exc.pos}") from None
    except ValueError:
        raise fail(title, f"{source}: a number too long") from None
    except RecursionError:
        raise fail(title, f"{source}: nested too deeply") from None
    try:  # a lone surrogate escape (\ud800) parses, but no stored text can hold it
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise fail(title, f"{source}: holds a lone surrogate (\\ud800-\\udfff), "
                          "which is no character") from None
    return value


def os_reason(exc: OSError) -> str:
    """What went wrong with a file, in words (no Python class name, no errno)."""
    reasons = {
        errno.ENOENT: "no such file or directory", errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a part of the path is not a directory",
        errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
        errno.EEXIST: "already exists",
    }
    return reasons.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def stdin() -> TextIO:
    """Standard input, for a command that reads it; closed (``roost ... <&-``: Python then
    sets ``sys.stdin`` to None) is the command's failure (exit 1), not an AttributeError."""
    if sys.stdin is None:
        raise fail("Cannot read standard input", "standard input is closed")
    return sys.stdin


DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
"""What a file option reads at most, unless its command says less: /dev/zero, or any
endless file, grew the process until it died with a MemoryError."""
FIFO_WAIT_S: Final = 10.0
"""How long a named pipe given as a file may take to bring its first byte (or its end)."""


def read_text(source: str | Path, *, what: str = "the file",
              max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The UTF-8 text of ``source`` (``-``: standard input), without a leading byte order
    mark (Windows Notepad writes one); a file that is missing, a directory, unreadable,
    not UTF-8 text, longer than ``max_bytes`` or a pipe no one writes to is the command's
    failure (exit 1)."""
    data = read_bytes(source, what=what, max_bytes=max_bytes)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise fail(f"Cannot read {what}",
                   f"{_shown(source)}: not UTF-8 text (byte {exc.start} is "
                   f"0x{exc.object[exc.start]:02x})") from None


def read_bytes(source: str | Path, *, what: str = "the file",
               max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of ``source`` (``-``: standard input); a file that is missing, a
    directory, unreadable, longer than ``max_bytes`` or a named pipe nothing is written to
    within :data:`FIFO_WAIT_S` (the command waited for ever) is the command's failure."""
    try:
        data = (stdin().buffer.read(max_bytes + 1) if str(source) == STDIN
                else _read_path(Path(source), max_bytes + 1, what))
    except OSError as exc:
        raise fail(f"Cannot read {what}", f"{_shown(source)}: {os_reason(exc)}") from None
    if len(data) > max_bytes:
        raise fail(f"Cannot read {what}", f"{_shown(source)}: longer than {max_bytes:,} bytes")
    return data


def _shown(source: str | Path) -> str:
    return "standard input" if str(source) == STDIN else str(source)


def _read_path(path: Path, limit: int, what: str) -> bytes:
    # Opened without blocking: a named pipe's open waits for a writer otherwise.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            ready, _, _ = select.select([fd], [], [], FIFO_WAIT_S)
            if not ready:
                raise fail(f"Cannot read {what}", f"{path}: a pipe nothing was written to "
                                                  f"within {FIFO_WAIT_S:.0f} s")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as file:
            fd = -1  # the file closes it
            return file.read(limit)
    finally:
        if fd >= 0:
            os.close(fd)


def write_bytes(target: str | Path, data: bytes, *, what: str = "the file") -> None:
    """Write ``data`` to ``target`` (``-``: standard output); a path that cannot be written
    (a directory, a missing parent, no permission) is the command's failure (exit 1)."""
    if str(target) == STDIN:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(target).write_bytes(data)
    except OSError as exc:
        reason = (f"its directory {Path(target).parent} does not exist"
                  if exc.errno == errno.ENOENT else os_reason(exc))
        raise fail(f"Cannot write {what}", f"{target}: {reason}") from None


def run_stoppable(work: Coroutine[Any, Any, T], what: str) -> T:
    """``asyncio.run(work)``, SIGTERM (systemd, docker stop, a timeout) cancelling it as
    Ctrl-C does, so ``work`` cleans up in both cases (its ``except CancelledError`` or
    ``finally`` runs); then the one line ``{what} stopped`` and exit 143 for SIGTERM,
    130 for Ctrl-C, as for the signal."""

    async def cancellable() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await work
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(cancellable())
    except asyncio.CancelledError:
        raise fail(f"{what} stopped", "terminated (SIGTERM)", code=128 + signal.SIGTERM) from None
    except KeyboardInterrupt:
        raise fail(f"{what} stopped", "interrupted (Ctrl-C)", code=128 + signal.SIGINT) from None
