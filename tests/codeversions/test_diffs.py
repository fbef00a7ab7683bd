"""The bounded line diff of code versions: git's format exactly (dulwich's own diff as the
reference), and a bounded amount of work on input that makes difflib quadratic."""

from __future__ import annotations

import io
import random

from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob
from dulwich.patch import write_object_diff

from roost.codeversions.diffs import Budget, coarse_opcodes, file_patch, grouped_opcodes


def _apply(old: list[bytes], new: list[bytes], groups: list[list[tuple[str, int, int, int, int]]]
           ) -> list[bytes]:
    """``old`` with the hunks' changes made: what a patch tool would produce."""
    out: list[bytes] = []
    at = 0
    for group in groups:
        for tag, i1, i2, j1, j2 in group:
            out += old[at:i1]
            out += old[i1:i2] if tag == "equal" else new[j1:j2]
            at = i2
    return out + old[at:]


def test_the_patch_is_the_one_git_writes() -> None:
    rng = random.Random(20261205)
    store = MemoryObjectStore()
    for trial in range(300):
        lines = [rng.choice(["a\n", "b\n", "}\n", "\n", f"x{rng.randint(0, 30)}\n"])
                 for _ in range(rng.randint(0, 50))]
        changed = lines[:]
        for _ in range(rng.randint(0, 6)):
            if changed and rng.random() < 0.4:
                del changed[rng.randrange(len(changed))]
            else:
                changed.insert(rng.randint(0, len(changed)), f"y{rng.randint(0, 9)}\n")
        before, after = b"".join(s.encode() for s in lines), b"".join(s.encode() for s in changed)
        if trial % 3 == 0:
            before = before.rstrip(b"\n")  # no newline at the end of the file
        if trial % 5 == 0:
            after = after.rstrip(b"\n")
        old_blob, new_blob = Blob.from_string(before), Blob.from_string(after)
        store.add_objects([(old_blob, None), (new_blob, None)])
        old = (b"f.py", 0o100644, old_blob.id) if trial % 7 else (None, None, None)
        new = (b"f.py", 0o100644, new_blob.id) if trial % 11 else (None, None, None)
        expected = io.BytesIO()
        write_object_diff(expected, store, old, new)
        assert file_patch(store, old, new, budget=Budget()) == expected.getvalue(), trial
    binary = Blob.from_string(b"\x00\x01")
    store.add_object(binary)
    patch = file_patch(store, (b"f.bin", 0o100644, binary.id), (None, None, None),
                       budget=Budget())
    assert patch.endswith(b"Binary files a/f.bin and /dev/null differ\n")


def test_a_diff_past_its_budget_is_shown_as_a_replaced_middle() -> None:
    # Lines coming back interleaved: difflib's matcher is quadratic on them (85 KB took
    # 20 s, a 1 MB file would take half an hour).
    old = [f"{i}\n".encode() for i in range(1000)]
    new = [line for pair in zip(old[500:], old[:500], strict=True) for line in pair]
    new = [b"same start\n", *new, b"same end\n"]
    old = [b"same start\n", *old, b"same end\n"]
    budget = Budget(5_000)
    groups = list(grouped_opcodes(old, new, budget=budget))
    assert budget.left < 0  # it was the budget that stopped difflib
    codes = [code for group in groups for code in group]
    assert [code[0] for code in codes] == ["equal", "replace", "equal"]
    assert codes[1] == ("replace", 1, 1001, 1, 1001)
    assert _apply(old, new, groups) == new
    # The same files with room to spare: difflib's minimal diff, also correct.
    exact = list(grouped_opcodes(old, new, budget=Budget()))
    assert _apply(old, new, exact) == new
    assert sum(1 for group in exact for code in group if code[0] == "equal") > 100
    # A budget spent by an earlier file of the same diff leaves the next one coarse.
    small_old, small_new = [b"a\n", b"b\n", b"c\n"], [b"a\n", b"B\n", b"c\n"]
    assert [c[0] for g in grouped_opcodes(small_old, small_new, budget=budget) for c in g] == \
        ["equal", "replace", "equal"]


def test_a_big_file_with_a_few_edits_keeps_its_exact_diff() -> None:
    old = [f"line {i}\n".encode() for i in range(100_000)]
    new = old[:]
    new[10] = b"changed\n"
    new[90_000] = b"changed too\n"
    del new[50_000]
    groups = list(grouped_opcodes(old, new, budget=Budget()))
    changes = [code for group in groups for code in group if code[0] != "equal"]
    assert changes == [("replace", 10, 11, 10, 11), ("delete", 50_000, 50_001, 50_000, 50_000),
                       ("replace", 90_000, 90_001, 89_999, 90_000)]


def test_coarse_opcodes_cover_both_files() -> None:
    for old, new in (([], []), ([b"a\n"], []), ([], [b"a\n"]), ([b"a\n"], [b"a\n"]),
                     ([b"a\n", b"b\n"], [b"a\n", b"c\n", b"b\n"]),
                     ([b"x\n", b"a\n"], [b"a\n"]), ([b"a\n", b"a\n"], [b"a\n"])):
        codes = coarse_opcodes(old, new)
        assert _apply(old, new, [codes]) == new, (old, new, codes)
        assert sum(i2 - i1 for _, i1, i2, _, _ in codes) == len(old)
        assert sum(j2 - j1 for _, _, _, j1, j2 in codes) == len(new)
