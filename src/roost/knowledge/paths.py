"""Confine server-side file ingestion to the directories the operator allowed.

A user asking the server to ingest ``/etc/shadow``, ``docs/../../secrets`` or a symlink
planted inside an allowed root that points elsewhere gets :class:`PathNotAllowed`.

``PathNotAllowed`` is a :class:`roost.errors.Forbidden` (403), not a ``BadRequest``: the
path is well-formed, the server's policy is what refuses it, and a 403 tells the client
that retrying with the same path will never work.  Its message never says whether the
refused path exists, so it cannot be used to probe the file system outside the roots.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from roost.errors import Forbidden, NotFound, PayloadTooLarge

__all__ = ["MAX_WALK_DEPTH", "PathNotAllowed", "iter_files", "read_ingest_file", "resolve_ingest_path"]


class PathNotAllowed(Forbidden):
    title, type_slug = "Path not allowed", "path-not-allowed"


def _resolved_roots(allowed_roots: Sequence[Path | str]) -> list[Path]:
    roots: list[Path] = []
    for root in allowed_roots:
        # Roots themselves may sit behind symlinks (/tmp on macOS, /data -> /mnt/disk).
        roots.append(Path(os.path.realpath(os.path.abspath(Path(root).expanduser()))))
    return roots


def _within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_ingest_path(
    path: str | Path, allowed_roots: Sequence[Path | str], *, must_exist: bool = True
) -> Path:
    """Return the real, symlink-free path of ``path`` if it lies inside an allowed root.

    Relative paths are looked up under each root in order (the first existing match
    wins).  Refused: empty paths, NUL bytes, any ``..`` component, absolute paths outside
    every root, and paths whose real location (after following every symlink, in the
    file or any parent directory) leaves the roots.  Only regular files and directories
    are accepted: devices and FIFOs could hang or flood the ingester.
    """
    raw = os.fspath(path)
    if not raw or not raw.strip():
        raise PathNotAllowed("the ingest path is empty")
    if "\x00" in raw:
        raise PathNotAllowed("the ingest path contains a NUL byte")
    # No "~" expansion: the server user's home is not the caller's business.
    candidate = Path(raw)
    if ".." in candidate.parts:
        raise PathNotAllowed(f"the ingest path {raw!r} contains '..'; give a path without it")
    roots = _resolved_roots(allowed_roots)
    if not roots:
        raise PathNotAllowed(
            "file ingestion is disabled: no ingest directories are configured "
            "(ROOST_KNOWLEDGE_INGEST_ROOTS is empty)"
        )
    # As configured and as resolved: "/tmp/x" must pass when the root "/tmp" really is
    # "/private/tmp".
    lexical_roots = [Path(os.path.abspath(Path(r).expanduser())) for r in allowed_roots] + roots

    candidates = [candidate] if candidate.is_absolute() else [root / candidate for root in roots]
    refused = f"the ingest path {raw!r} is outside the allowed ingest directories"
    missing: Path | None = None
    for option in candidates:
        # abspath normalises "a/./b" without touching the disk; realpath then follows
        # every symlink (in the file and in each parent) so the check sees where the
        # bytes really live.  Both must be inside: no reaching in through outside links.
        lexical = Path(os.path.abspath(option))
        real = Path(os.path.realpath(lexical))
        if not any(_within(lexical, r) for r in lexical_roots) or not any(_within(real, r) for r in roots):
            raise PathNotAllowed(refused)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            missing = missing or real
            continue
        except OSError as exc:  # symlink loops, permissions
            raise PathNotAllowed(f"the ingest path {raw!r} cannot be read: {exc.strerror}") from None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise PathNotAllowed(f"the ingest path {raw!r} is not a regular file or directory")
        return real
    if missing is not None and not must_exist:
        return missing
    raise NotFound(f"the ingest path {raw!r} does not exist in the allowed ingest directories")


#: Directory levels a walk descends below its root; a deeper directory is reported to
#: ``on_error`` and skipped (no real document tree is that deep; a generated one is).
MAX_WALK_DEPTH = 256


def iter_files(
    root: Path | str,
    recursive: bool = True,
    *,
    skip_hidden: bool = True,
    on_error: Callable[[Path, OSError], None] | None = None,
) -> Iterator[Path]:
    """Yield the real paths of the regular files under ``root``, in a stable sorted order.

    Symlinked files are followed only when their target stays inside ``root``;
    symlinked directories are never descended into (that is how walks loop forever or
    leave the tree).  Hidden entries (dot-names) are skipped unless ``skip_hidden`` is
    false.  Directories that cannot be read, or lie more than :data:`MAX_WALK_DEPTH`
    levels down, are reported to ``on_error`` and skipped, so one bad folder does not
    stop a large ingestion.  A file yielded twice through two links is yielded once.
    The walk keeps its own stack (depth first, as a recursive one would), so a very
    deep tree cannot exhaust Python's recursion limit.
    """
    real_root = Path(os.path.realpath(os.path.abspath(root)))
    if real_root.is_file():
        yield real_root
        return
    seen: set[Path] = set()

    def entries_of(directory: Path) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as it:
                return iter(sorted(it, key=lambda e: e.name))
        except OSError as exc:
            if on_error is not None:
                on_error(directory, exc)
            return iter(())

    stack = [entries_of(real_root)]  # one iterator per open directory level
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if skip_hidden and entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                target = Path(os.path.realpath(path))
                if not _within(target, real_root) or not target.is_file():
                    continue  # escapes the root, dangles, or is a directory link
                if skip_hidden and any(
                    part.startswith(".") for part in target.relative_to(real_root).parts
                ):
                    continue  # a visible link must not expose a hidden file
                if target not in seen:
                    seen.add(target)
                    yield target
            elif entry.is_dir(follow_symlinks=False):
                if not recursive:
                    continue
                if len(stack) > MAX_WALK_DEPTH:
                    if on_error is not None:
                        on_error(path, OSError(f"the directory is more than {MAX_WALK_DEPTH} "
                                               "levels below the ingested one: not read"))
                    continue
                stack.append(entries_of(path))
            elif entry.is_file(follow_symlinks=False):
                if path not in seen:
                    seen.add(path)
                    yield path
        except OSError as exc:
            if on_error is not None:
                on_error(path, exc)


def read_ingest_file(path: Path, *, max_bytes: int) -> bytes:
    """Read a path returned by :func:`resolve_ingest_path` or :func:`iter_files` safely.

    Opens with ``O_NOFOLLOW`` so a file swapped for a symlink after the check is not
    followed (where the platform supports it), refuses non-regular files, and stops at
    ``max_bytes`` with :class:`roost.errors.PayloadTooLarge` instead of reading a huge
    file into memory.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PathNotAllowed(f"the file {str(path)!r} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PathNotAllowed(f"{str(path)!r} is not a regular file")
        if st.st_size > max_bytes:
            raise PayloadTooLarge(f"{path.name} is {st.st_size} bytes; the limit is {max_bytes} bytes")
        data = handle.read(max_bytes + 1)  # the file may have grown since fstat
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{path.name} is larger than the limit of {max_bytes} bytes")
    return data
