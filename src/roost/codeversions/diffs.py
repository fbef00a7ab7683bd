"""Unified diffs of two blobs with a bounded amount of work.

difflib's matcher (what dulwich's ``write_object_diff`` uses) is quadratic on some inputs:
a file whose lines come back interleaved (the second half's lines between the first
half's) took 20 s at 85 KB and would take half an hour at the 1 MB a file may hold, on a
worker thread, inside the commit's transaction.  :func:`file_patch` runs the same matcher
with a budget of comparisons shared by the files of one diff (an upper bound of what its
``find_longest_match`` visits, known before each call); past the budget a file's changed
middle, between the lines both versions start and end with, is shown as replaced.  Every
diff stays correct (it turns the old file into the new one); only an adversarial or
wholesale rewrite loses its minimal form.  Everything else (headers, binary files, the
unified format) is git's.
"""

from __future__ import annotations

import difflib
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Final, Literal

from dulwich.object_store import BaseObjectStore
from dulwich.objects import S_ISGITLINK, Blob, ObjectID
from dulwich.patch import gen_diff_header, is_binary, patch_filename

CONTEXT_LINES: Final = 3
# Comparisons difflib may make for one commit's diff: about a second of pure Python on
# this machine.  A big file with a few dozen edits costs lines x edits: well within it.
DIFF_BUDGET: Final = 10_000_000
_NO_NEWLINE: Final = b"\n\\ No newline at end of file\n"
# A line ends at LF only, as git reads it: a bare CR is a character of its line
# (bytes.splitlines, like dulwich's Blob.splitlines, also breaks at CR, which gave
# miscounted lines and a patch git apply refused as corrupt).
_LINE: Final = re.compile(rb"[^\n]*\n|[^\n]+\Z")

Opcode = tuple[Literal["replace", "delete", "insert", "equal"], int, int, int, int]
FileSide = tuple[bytes | None, int | None, ObjectID | None]


class DiffTooCostly(Exception):
    """The matcher would pass its budget: the caller shows the change coarsely."""


class Budget:
    """Comparisons left for the files of one diff."""

    def __init__(self, comparisons: int = DIFF_BUDGET) -> None:
        self.left = comparisons


class _BoundedMatcher(difflib.SequenceMatcher[bytes]):
    """difflib's matcher that refuses to go past ``budget`` comparisons.  Before each
    ``find_longest_match`` it charges, for every line of ``a`` in the range, the number of
    places that line has in ``b`` (what the search iterates at most), from prefix sums.
    Past the budget its opcodes are :func:`coarse_opcodes`."""

    def __init__(self, a: Sequence[bytes], b: Sequence[bytes], budget: Budget) -> None:
        super().__init__(None, a, b)
        self._old, self._new = a, b
        self._budget = budget
        places = Counter(b)
        self._cost = list(accumulate((places[line] + 1 for line in a), initial=0))
        self._coarse: list[Opcode] | None = None

    def find_longest_match(self, alo: int = 0, ahi: int | None = None, blo: int = 0,
                           bhi: int | None = None) -> difflib.Match:
        high = len(self._old) if ahi is None else ahi
        self._budget.left -= self._cost[high] - self._cost[alo]
        if self._budget.left < 0:
            raise DiffTooCostly
        return super().find_longest_match(alo, high, blo, bhi)

    def get_opcodes(self) -> list[Opcode]:
        if self._coarse is None:
            try:
                return super().get_opcodes()
            except DiffTooCostly:
                self._coarse = coarse_opcodes(self._old, self._new)
        return self._coarse


def coarse_opcodes(a: Sequence[bytes], b: Sequence[bytes]) -> list[Opcode]:
    """The lines both start with, the middle replaced, the lines both end with."""
    limit = min(len(a), len(b))
    head = 0
    while head < limit and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < limit - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    a_end, b_end = len(a) - tail, len(b) - tail
    codes: list[Opcode] = [("equal", 0, head, 0, head)] if head else []
    if head < a_end and head < b_end:
        codes.append(("replace", head, a_end, head, b_end))
    elif head < a_end:
        codes.append(("delete", head, a_end, head, b_end))
    elif head < b_end:
        codes.append(("insert", head, a_end, head, b_end))
    if tail:
        codes.append(("equal", a_end, len(a), b_end, len(b)))
    return codes


def grouped_opcodes(a: Sequence[bytes], b: Sequence[bytes], *,
                    budget: Budget) -> Iterable[list[tuple[str, int, int, int, int]]]:
    """The hunks of the diff from ``a`` to ``b`` (difflib's within ``budget``)."""
    return _BoundedMatcher(a, b, budget).get_grouped_opcodes(CONTEXT_LINES)


def _range(start: int, stop: int) -> str:
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start if not length else start + 1},{length}"


def unified_lines(a: Sequence[bytes], b: Sequence[bytes], old_name: bytes, new_name: bytes,
                  *, budget: Budget) -> Iterator[bytes]:
    """``a`` -> ``b`` in the unified format (``---``/``+++``, ``@@`` hunks)."""
    started = False
    for group in grouped_opcodes(a, b, budget=budget):
        if not started:
            started = True
            yield b"--- " + old_name + b"\n"
            yield b"+++ " + new_name + b"\n"
        first, last = group[0], group[-1]
        yield (f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n").encode()
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (b" " + _ended(line, i1 + k == len(a) - 1)
                            for k, line in enumerate(a[i1:i2]))
                continue
            if tag in ("replace", "delete"):
                yield from (b"-" + _ended(line, True) for line in a[i1:i2])
            if tag in ("replace", "insert"):
                yield from (b"+" + _ended(line, True) for line in b[j1:j2])


def _ended(line: bytes, may_be_last: bool) -> bytes:
    if line[-1:] == b"\n" or not may_be_last:
        return line
    return line + _NO_NEWLINE


def split_lines(data: bytes) -> list[bytes]:
    """``data``'s lines as git splits them (at LF only), each with its LF (the last may
    have none)."""
    return _LINE.findall(data)


def _blob(store: BaseObjectStore, mode: int | None, sha: ObjectID | None) -> bytes:
    if sha is None:
        return b""
    if mode is not None and S_ISGITLINK(mode):
        return b"Subproject commit " + sha + b"\n"
    obj = store[sha]
    return obj.as_raw_string() if not isinstance(obj, Blob) else obj.data


def file_patch(store: BaseObjectStore, old: FileSide, new: FileSide, *,
               budget: Budget) -> bytes:
    """One file's patch as ``git diff`` writes it (header, then ``Binary files ... differ``
    or the unified hunks), its line diff within what is left of ``budget``."""
    (old_path, old_mode, old_sha), (new_path, new_mode, new_sha) = old, new
    out = io.BytesIO()
    out.writelines(gen_diff_header((old_path, new_path), (old_mode, new_mode),
                                   (old_sha, new_sha)))
    before, after = _blob(store, old_mode, old_sha), _blob(store, new_mode, new_sha)
    old_name, new_name = patch_filename(old_path, b"a"), patch_filename(new_path, b"b")
    if is_binary(before) or is_binary(after):
        out.write(b"Binary files " + old_name + b" and " + new_name + b" differ\n")
    else:
        out.writelines(unified_lines(split_lines(before), split_lines(after), old_name, new_name,
                                     budget=budget))
    return out.getvalue()
