"""The git repositories of code versions, with dulwich (pure Python: no ``git`` binary).

One bare repository per chat session or run, ``<root>/<owner id>/<session or run id>.git``
(``HEAD`` is ``refs/heads/main``).  A commit is built from objects, never from files on
disk: the parent commit's tree, the caller's changes applied (:func:`commit_tree_changes`),
a commit object, then the branch moved with a compare-and-swap.  Nothing a caller names is
written to the server's file system at commit time, so a hostile path can only be refused
(:func:`check_path`); a checkout (:func:`checkout`) writes regular files only.

Everything here is synchronous file work: services call it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dulwich.diff_tree import tree_changes
from dulwich.object_store import BaseObjectStore, commit_tree_changes
from dulwich.objects import Blob, Commit, ObjectID, RawObjectID, ShaFile, Tree
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo

from roost.codeversions.diffs import Budget, file_patch
from roost.errors import Conflict, NotFound, Unprocessable

MODE_FILE: Final = 0o100644
MODE_EXEC: Final = 0o100755
MODE_LINK: Final = 0o120000
MODE_GITLINK: Final = 0o160000
DEFAULT_BRANCH: Final = "main"
MAX_PATH_CHARS: Final = 1024
MAX_SEGMENT_BYTES: Final = 255
# A commit writes one tree object per directory it touches: 200 files 500 directories deep
# (short names, within MAX_PATH_CHARS) wrote 100,000 objects (400 MB, 100 s under the
# repository's lock).  Paths have at most MAX_PATH_SEGMENTS names, a commit touches at most
# MAX_COMMIT_DIRECTORIES directories.
MAX_PATH_SEGMENTS: Final = 32
MAX_COMMIT_DIRECTORIES: Final = 1000
# A directory is one tree object that every commit under it parses and rewrites whole:
# commits may not grow one past this many entries.
MAX_DIRECTORY_ENTRIES: Final = 10_000
COMMITTER: Final = b"Roost <roost@localhost>"
_BRANCH: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_STAT_WIDTH: Final = 40


class PathRefused(Unprocessable):
    """A file path that must not be written (422); the detail names the rule it broke."""

    def __init__(self, path: str, reason: str) -> None:
        shown = path if len(path) <= 200 and path.isprintable() else repr(path[:200])
        super().__init__(f"file path {shown}: {reason}", extra={"field": "files"})


class NothingToCommit(Unprocessable):
    title, type_slug = "Nothing to commit", "nothing-to-commit"


def repo_path(root: Path, owner: uuid.UUID, key: uuid.UUID) -> Path:
    """Where the repository of a chat session or run (``key``) owned by ``owner`` lives."""
    return root / str(owner) / f"{key}.git"


def _refused_character(c: str) -> bool:
    """Control characters (C0, DEL, C1: category Cc; U+009B is the one-byte CSI terminals
    read as ESC [), the line and paragraph separators (U+2028, U+2029: line breaks to
    some viewers) and the invisible bidirectional formatting characters (U+061C, U+200E,
    U+200F, U+202A-U+202E, U+2066-U+2069), which make a name read differently from what
    it is (``evil\u202egnp.py`` shows as ``evilyp.png``)."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI_CONTROLS


_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                  "\u2066\u2067\u2068\u2069")


# Names Windows and macOS file systems open as ``.git`` and that git therefore refuses to
# check out (verify_path with core.protectNTFS, on by default, and core.protectHFS): a
# repository holding one could not be cloned.  NTFS drops trailing dots and spaces,
# ``::$INDEX_ALLOCATION`` (any ``:`` stream) names the directory itself, ``git~1`` is the
# short name; HFS+ ignores these code points inside names.
_NTFS_DOT_GIT: Final = re.compile(r"(?:\.git|git~1)[. ]*(?::.*)?", re.IGNORECASE | re.DOTALL)
_HFS_IGNORED: Final = frozenset("\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff")


def _names_dot_git(segment: str) -> bool:
    """Whether git (protectNTFS, protectHFS) reads ``segment`` as ``.git``."""
    if segment.casefold() == ".git" or _NTFS_DOT_GIT.fullmatch(segment):
        return True
    return "".join(c for c in segment if c not in _HFS_IGNORED).casefold() == ".git"


def check_path(path: str) -> bytes:
    """A relative POSIX path inside the repository, as git stores it; refuses (422) absolute
    paths, ``..`` and ``.`` segments, empty segments, backslashes, control characters (C0,
    DEL and C1), line separators and bidirectional formatting characters, ``.git``
    anywhere, over-long names and paths more than :data:`MAX_PATH_SEGMENTS` deep."""
    if not path:
        raise PathRefused(path, "empty")
    if len(path) > MAX_PATH_CHARS:
        raise PathRefused(path, f"longer than {MAX_PATH_CHARS} characters")
    if any(_refused_character(c) for c in path):
        raise PathRefused(path, "contains control, line-separator or bidirectional formatting "
                                "characters")
    if "\\" in path:
        raise PathRefused(path, "contains a backslash (use / between directories)")
    if path.startswith("/"):
        raise PathRefused(path, "is absolute (paths are relative to the repository)")
    if re.match(r"^[A-Za-z]:", path):
        raise PathRefused(path, "starts with a drive letter")
    segments = path.split("/")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise PathRefused(path, f"is more than {MAX_PATH_SEGMENTS} names deep")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise PathRefused(path, "has an empty, '.' or '..' segment")
        if _names_dot_git(segment):
            raise PathRefused(path, "names .git (the repository's own data)")
        if "::" in segment:
            raise PathRefused(path, "contains '::' (an NTFS stream name)")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise PathRefused(path, f"has a name longer than {MAX_SEGMENT_BYTES} bytes")
    try:
        return path.encode("utf-8")
    except UnicodeEncodeError:
        raise PathRefused(path, "is not valid UTF-8") from None


def directories(paths: Iterable[bytes]) -> set[bytes]:
    """The directories (with the root, ``b""``) holding ``paths``: the trees a commit of
    them writes."""
    out = {b""}
    for path in paths:
        parts = path.split(b"/")
        out.update(b"/".join(parts[:i]) for i in range(1, len(parts)))
    return out


def check_branch(branch: str) -> Ref:
    """``refs/heads/<branch>`` for a plain branch name (422 otherwise).  ``HEAD`` is not
    one (``git branch HEAD`` refuses it: ``HEAD`` would then name two things)."""
    ref = Ref(b"refs/heads/" + branch.encode("utf-8", "replace"))
    if (not _BRANCH.match(branch) or not check_ref_format(ref) or branch.endswith("/")
            or branch == "HEAD"):
        raise Unprocessable("branch must be a git branch name: letters, digits, '.', '_', "
                            "'-' and '/', starting with a letter or digit, no '..', not "
                            "ending in '.lock', not HEAD", extra={"field": "branch"})
    return ref


@dataclass(frozen=True)
class CommitOutcome:
    commit_id: str
    parent_id: str | None
    files_changed: list[dict[str, Any]]
    diff_summary: str


def _open(path: Path, *, create: bool) -> Repo:
    if (path / "HEAD").is_file():
        return Repo(str(path))
    if not create:
        raise NotFound("the code version's repository is missing on this server")
    path.parent.mkdir(parents=True, exist_ok=True)
    return Repo.init_bare(str(path), mkdir=True, default_branch=DEFAULT_BRANCH.encode())


def _tip(repo: Repo, ref: Ref) -> ObjectID | None:
    try:
        return repo.refs[ref]
    except KeyError:
        return None


TreeCache = dict[ObjectID, Tree]


def _tree(store: BaseObjectStore, cache: TreeCache, tree_id: ObjectID) -> Tree:
    """The tree ``tree_id``, parsed once per commit: a 100,000-entry directory is 4 MB to
    parse, and every file of a request walks it (200 files took 20 s under the lock)."""
    tree = cache.get(tree_id)
    if tree is None:
        obj = store[tree_id]
        assert isinstance(obj, Tree)
        cache[tree_id] = tree = obj
    return tree


class _TreeCachingStore(BaseObjectStore):
    """Reads of ``store`` that answer the trees in ``cache`` without parsing them again
    (the diff of a commit walks the trees its planning already read)."""

    def __init__(self, store: BaseObjectStore, cache: TreeCache) -> None:
        super().__init__(object_format=store.object_format)
        self._store, self._cache = store, cache

    def get_raw(self, name: RawObjectID | ObjectID) -> tuple[int, bytes]:
        return self._store.get_raw(name)

    def __getitem__(self, sha1: ObjectID | RawObjectID) -> ShaFile:
        if len(sha1) == self.object_format.oid_length:  # a raw id: never cached
            return self._store[sha1]
        cached = self._cache.get(ObjectID(sha1))
        return cached if cached is not None else self._store[sha1]


def _lookup(store: BaseObjectStore, tree_id: ObjectID | None, parts: list[bytes],
            cache: TreeCache) -> tuple[int, int] | None:
    """Walk ``parts`` from ``tree_id``: None when the path is absent, else ``(depth, mode)``
    of the first entry that is not a directory (``depth == len(parts)`` for the path's
    own entry) or of the path itself when it is a directory."""
    if tree_id is None:
        return None
    current: ObjectID = tree_id
    for depth, part in enumerate(parts, start=1):
        tree = _tree(store, cache, current)
        if part not in tree:
            return None
        mode, sha = tree[part]
        if not stat.S_ISDIR(mode) or depth == len(parts):
            return depth, mode
        current = sha
    return None  # pragma: no cover - parts is never empty


def _subtree(store: BaseObjectStore, tree_id: ObjectID | None, parts: list[bytes],
             cache: TreeCache) -> Tree | None:
    """The directory at ``parts`` (``[]``: the root) if it exists as a directory."""
    if tree_id is None:
        return None
    tree = _tree(store, cache, tree_id)
    for part in parts:
        if part not in tree:
            return None
        mode, sha = tree[part]
        if not stat.S_ISDIR(mode):
            return None
        tree = _tree(store, cache, sha)
    return tree


def check_directory_sizes(store: BaseObjectStore, tree_id: ObjectID | None,
                          written: Iterable[bytes], cache: TreeCache) -> None:
    """Refuse (422) a commit that adds names to a directory so that it holds more than
    :data:`MAX_DIRECTORY_ENTRIES`: every later commit under it parses that tree again."""
    added: dict[bytes, set[bytes]] = {}
    for raw in written:
        parts = raw.split(b"/")
        for i, part in enumerate(parts):
            added.setdefault(b"/".join(parts[:i]), set()).add(part)
    for directory, names in added.items():
        tree = _subtree(store, tree_id, directory.split(b"/") if directory else [], cache)
        new = names if tree is None else {name for name in names if name not in tree}
        if new and (len(tree) if tree is not None else 0) + len(new) > MAX_DIRECTORY_ENTRIES:
            shown = directory.decode("utf-8", "replace") or "the repository's root"
            raise Unprocessable(f"directory {shown} would hold more than "
                                f"{MAX_DIRECTORY_ENTRIES} entries", extra={"field": "files"})


def plan_changes(store: BaseObjectStore, tree_id: ObjectID | None,
                 files: Mapping[str, bytes | None], cache: TreeCache | None = None,
                 ) -> list[tuple[bytes, int | None, ObjectID | None]]:
    """The tree changes that write (bytes) or delete (None) each file, blobs stored;
    refuses paths that break :func:`check_path`, that go through a file, a symbolic link
    or a submodule, that name a directory, a symlink or (to delete) nothing, a request
    naming both a path and something under it, and one that makes a directory hold more
    than :data:`MAX_DIRECTORY_ENTRIES` entries.  ``cache`` keeps the trees parsed."""
    cache = {} if cache is None else cache
    encoded = {path: check_path(path) for path in files}
    names = set(encoded.values())
    changes: list[tuple[bytes, int | None, ObjectID | None]] = []
    for path, raw in encoded.items():
        parts = raw.split(b"/")
        for i in range(1, len(parts)):
            if b"/".join(parts[:i]) in names:
                raise PathRefused(path, "is under another path of the same commit")
        found = _lookup(store, tree_id, parts, cache)
        mode: int | None = None
        if found is not None:
            depth, mode = found
            if depth < len(parts):
                what = "a symbolic link" if mode == MODE_LINK else "a submodule" \
                    if mode == MODE_GITLINK else "a file"
                raise PathRefused(path, f"goes through {what} ({b'/'.join(parts[:depth]).decode()})")
            if stat.S_ISDIR(mode):
                raise PathRefused(path, "is a directory")
            if mode == MODE_LINK:
                raise PathRefused(path, "is a symbolic link (only regular files are written)")
            if mode == MODE_GITLINK:
                raise PathRefused(path, "is a submodule")
        content = files[path]
        if content is None:
            if found is None:
                raise PathRefused(path, "cannot be deleted: it does not exist")
            changes.append((raw, None, None))
            continue
        blob = Blob.from_string(content)
        store.add_object(blob)
        changes.append((raw, MODE_EXEC if mode == MODE_EXEC else MODE_FILE, blob.id))
    check_directory_sizes(store, tree_id, (raw for raw, _, sha in changes if sha is not None),
                          cache)
    return changes


def branch_clash(repo: Repo, branch: str) -> str | None:
    """An existing branch that ``branch`` cannot live beside, as git stores branches
    (files under ``refs/heads``): ``main/x`` when ``main`` exists, ``feat`` when
    ``feat/x`` does.  ``main`` (``HEAD``'s branch) counts as existing even in an empty
    repository: a first commit on ``main/x`` would leave ``HEAD`` on a branch that could
    never be created.  None when there is none."""
    names = {raw.decode("utf-8", "replace")
             for raw in repo.refs.keys(base=Ref(b"refs/heads/"))} | {DEFAULT_BRANCH}
    for other in sorted(names):
        if other != branch and (branch.startswith(other + "/") or other.startswith(branch + "/")):
            return other
    return None


def commit_files(path: Path, *, branch: str, files: Mapping[str, bytes | None], message: str,
                 author: bytes, timestamp: int) -> CommitOutcome:
    """Commit the changes on ``branch`` (created from ``HEAD``'s commit, or as the first
    commit, when it does not exist); the outcome has the real diff against the parent.
    A new branch that clashes with an existing one as a path is a 409."""
    ref = check_branch(branch)
    repo = _open(path, create=True)
    try:
        store = repo.object_store
        tip = _tip(repo, ref)
        if tip is None:
            clash = branch_clash(repo, branch)
            if clash is not None:
                raise Conflict(f"branch {branch} conflicts with existing branch {clash}: git "
                               "cannot keep both (one would be a directory of the other); "
                               "choose another name")
        parent = tip if tip is not None else _tip(repo, Ref(b"HEAD"))
        parent_tree: ObjectID | None = None
        if parent is not None:
            parent_commit = store[parent]
            assert isinstance(parent_commit, Commit)
            parent_tree = parent_commit.tree
        cache: TreeCache = {}
        changes = plan_changes(store, parent_tree, files, cache)
        base = Tree()  # a copy: commit_tree_changes changes the tree it is given
        if parent_tree is not None:
            base = Tree.from_string(_tree(store, cache, parent_tree).as_raw_string())
        new_tree = commit_tree_changes(store, base, changes)
        cache[new_tree] = base  # the new root, as the diff below reads it
        if new_tree == parent_tree:
            raise NothingToCommit("nothing to commit: the files already have this content")
        commit = Commit()
        commit.tree = new_tree
        commit.parents = [parent] if parent is not None else []
        commit.author, commit.committer = author, COMMITTER
        commit.author_time = commit.commit_time = timestamp
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = message.encode("utf-8") + (b"" if message.endswith("\n") else b"\n")
        store.add_object(commit)
        try:
            moved = (repo.refs.add_if_new(ref, commit.id) if tip is None
                     else repo.refs.set_if_equals(ref, tip, commit.id))
        except (NotADirectoryError, IsADirectoryError):  # a clash that appeared meanwhile
            raise Conflict(f"branch {branch} conflicts with another branch's path") from None
        if not moved:
            raise Conflict(f"branch {branch} moved while committing: try again")
        files_changed, summary = diff_stat(_TreeCachingStore(store, cache), parent_tree,
                                           new_tree)
        return CommitOutcome(commit.id.decode(), parent.decode() if parent else None,
                             files_changed, summary)
    finally:
        repo.close()


def _file_patch(store: BaseObjectStore, change: Any, budget: Budget) -> bytes:
    old, new = change.old, change.new
    return file_patch(store, (old.path, old.mode, old.sha) if old else (None, None, None),
                      (new.path, new.mode, new.sha) if new else (None, None, None),
                      budget=budget)


def _count(patch: bytes) -> tuple[int, int]:
    """Added and deleted lines of one file's unified diff (its hunks, not its header)."""
    additions = deletions = 0
    in_hunks = False
    for line in patch.split(b"\n"):
        if line.startswith(b"@@"):
            in_hunks = True
        elif in_hunks and line.startswith(b"+"):
            additions += 1
        elif in_hunks and line.startswith(b"-"):
            deletions += 1
    return additions, deletions


_CHANGE_NAMES: Final = {"add": "added", "delete": "deleted", "modify": "modified"}


def diff_stat(store: BaseObjectStore, old_tree: ObjectID | None,
              new_tree: ObjectID | None) -> tuple[list[dict[str, Any]], str]:
    """``files_changed`` ([{path, change, additions, deletions}]) and a ``git diff
    --stat``-like summary of the diff between two trees."""
    files: list[dict[str, Any]] = []
    budget = Budget()
    for change in tree_changes(store, old_tree, new_tree):
        entry = change.new if change.new is not None and change.new.path else change.old
        assert entry is not None and entry.path is not None
        additions, deletions = _count(_file_patch(store, change, budget))
        files.append({"path": entry.path.decode("utf-8", "replace"),
                      "change": _CHANGE_NAMES.get(change.type, change.type),
                      "additions": additions, "deletions": deletions})
    return files, stat_summary(files)


def stat_summary(files: list[dict[str, Any]]) -> str:
    if not files:
        return "0 files changed"
    width = max(len(f["path"]) for f in files)
    most = max(f["additions"] + f["deletions"] for f in files) or 1
    lines = []
    for f in files:
        total = f["additions"] + f["deletions"]
        scale = min(1.0, _STAT_WIDTH / most)
        plus = round(f["additions"] * scale) if f["additions"] else 0
        minus = round(f["deletions"] * scale) if f["deletions"] else 0
        lines.append(f" {f['path'].ljust(width)} | {total} {'+' * plus}{'-' * minus}".rstrip())
    adds = sum(f["additions"] for f in files)
    dels = sum(f["deletions"] for f in files)
    n = len(files)
    lines.append(f" {n} file{'s' if n != 1 else ''} changed, "
                 f"{adds} insertion{'s' if adds != 1 else ''}(+), "
                 f"{dels} deletion{'s' if dels != 1 else ''}(-)")
    return "\n".join(lines)


def _commit(repo: Repo, commit_id: str) -> Commit:
    try:
        obj = repo.object_store[ObjectID(commit_id.encode("ascii"))]
    except (KeyError, ValueError, UnicodeEncodeError):
        raise NotFound(f"commit {commit_id} is not in the repository") from None
    if not isinstance(obj, Commit):
        raise NotFound(f"{commit_id} is not a commit")
    return obj


def patch_of(path: Path, commit_id: str, *, max_bytes: int) -> tuple[str, bool]:
    """The commit's unified diff against its first parent (at most ``max_bytes`` of it) and
    whether it was cut."""
    repo = _open(path, create=False)
    try:
        commit = _commit(repo, commit_id)
        store = repo.object_store
        parent_tree: ObjectID | None = None
        if commit.parents:
            parent = store[commit.parents[0]]
            assert isinstance(parent, Commit)
            parent_tree = parent.tree
        out = bytearray()
        budget = Budget()
        for change in tree_changes(store, parent_tree, commit.tree):
            out += _file_patch(store, change, budget)
            if len(out) > max_bytes:
                return out[:max_bytes].decode("utf-8", "replace"), True
        return out.decode("utf-8", "replace"), False
    finally:
        repo.close()


def checkout(path: Path, commit_id: str, dest: Path, *, max_bytes: int | None = None) -> int:
    """Write the commit's regular files under ``dest`` (an empty directory); symbolic links
    and submodules are skipped, every path is checked again and opened without following
    links.  More than ``max_bytes`` of files in all is refused (422, the checkout stops
    there: many commits add up to a tree no scratch directory should hold).  Returns the
    number of files written."""
    repo = _open(path, create=False)
    written = total = 0
    try:
        commit = _commit(repo, commit_id)
        store = repo.object_store
        for entry in store.iter_tree_contents(commit.tree):
            mode = entry.mode
            if entry.path is None or mode is None or entry.sha is None:
                continue
            if not stat.S_ISREG(mode):
                continue
            rel = check_path(entry.path.decode("utf-8"))
            target = dest / rel.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            blob = store[entry.sha]
            assert isinstance(blob, Blob)
            total += blob.raw_length()
            if max_bytes is not None and total > max_bytes:
                raise Unprocessable(f"the commit's files take more than {max_bytes >> 20} "
                                    "MiB: too big to check out for validation")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o755 if mode == MODE_EXEC else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(blob.as_raw_string())
            written += 1
    finally:
        repo.close()
    return written
