from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.errors import Forbidden, NotFound, PayloadTooLarge
from roost.knowledge import paths
from roost.knowledge.paths import (
    PathNotAllowed,
    iter_files,
    read_ingest_file,
    resolve_ingest_path,
)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """root/ (allowed) with docs, and outside/ (not allowed) holding a secret."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "docs" / "deep").mkdir(parents=True)
    outside.mkdir()
    (root / "a.md").write_text("# A")
    (root / "docs" / "b.txt").write_text("b")
    (root / "docs" / "deep" / "c.html").write_text("<p>c</p>")
    (root / ".hidden.txt").write_text("hidden")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("git")
    (outside / "secret.txt").write_text("secret")
    return {"root": root, "outside": outside}


# --------------------------------------------------------------------------- resolve


def test_relative_and_absolute_paths_inside_root(tree: dict[str, Path]) -> None:
    root = tree["root"]
    assert resolve_ingest_path("docs/b.txt", [root]) == (root / "docs" / "b.txt").resolve()
    assert resolve_ingest_path(str(root / "a.md"), [root]) == (root / "a.md").resolve()
    assert resolve_ingest_path("docs", [root]) == (root / "docs").resolve()
    assert resolve_ingest_path("./docs/./deep", [root]) == (root / "docs" / "deep").resolve()


@pytest.mark.parametrize("path", ["../outside/secret.txt", "docs/../a.md", "docs/../../outside/secret.txt"])
def test_dotdot_is_refused_even_when_it_stays_inside(tree: dict[str, Path], path: str) -> None:
    with pytest.raises(PathNotAllowed, match=r"'\.\.'"):
        resolve_ingest_path(path, [tree["root"]])


def test_absolute_path_outside_roots_is_refused(tree: dict[str, Path]) -> None:
    with pytest.raises(PathNotAllowed, match="outside the allowed ingest directories") as info:
        resolve_ingest_path(str(tree["outside"] / "secret.txt"), [tree["root"]])
    assert isinstance(info.value, Forbidden) and info.value.status == 403
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path("/etc/passwd", [tree["root"]])
    # Existence outside the roots is never revealed: same answer for a missing file.
    with pytest.raises(PathNotAllowed, match="outside"):
        resolve_ingest_path(str(tree["outside"] / "missing.txt"), [tree["root"]])


def test_symlinked_file_escaping_the_root_is_refused(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "link.txt").symlink_to(tree["outside"] / "secret.txt")
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path("link.txt", [root])
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path(str(root / "link.txt"), [root])


def test_symlinked_parent_directory_escaping_the_root_is_refused(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "escape").symlink_to(tree["outside"], target_is_directory=True)
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path("escape/secret.txt", [root])
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path("escape", [root])
    # Also when the file behind the link does not exist.
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path("escape/missing.txt", [root], must_exist=False)


def test_dangling_symlink_pointing_outside_is_refused(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "dangling").symlink_to(tree["outside"] / "does-not-exist")
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path("dangling", [root])


def test_symlink_from_outside_into_root_is_refused(tree: dict[str, Path]) -> None:
    (tree["outside"] / "in").symlink_to(tree["root"] / "a.md")
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path(str(tree["outside"] / "in"), [tree["root"]])


def test_symlinks_inside_the_root_are_fine(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "alias.md").symlink_to(root / "a.md")
    assert resolve_ingest_path("alias.md", [root]) == (root / "a.md").resolve()


def test_root_behind_a_symlink(tree: dict[str, Path], tmp_path: Path) -> None:
    alias = tmp_path / "root-alias"
    alias.symlink_to(tree["root"], target_is_directory=True)
    resolved = (tree["root"] / "a.md").resolve()
    assert resolve_ingest_path(str(alias / "a.md"), [alias]) == resolved
    assert resolve_ingest_path(str(tree["root"] / "a.md"), [alias]) == resolved


def test_several_roots_first_existing_wins(tree: dict[str, Path], tmp_path: Path) -> None:
    second = tmp_path / "second"
    second.mkdir()
    (second / "only-here.txt").write_text("x")
    roots = [tree["root"], second]
    assert resolve_ingest_path("only-here.txt", roots) == (second / "only-here.txt").resolve()
    assert resolve_ingest_path("a.md", roots) == (tree["root"] / "a.md").resolve()


def test_missing_inside_root(tree: dict[str, Path]) -> None:
    with pytest.raises(NotFound):
        resolve_ingest_path("nope.txt", [tree["root"]])
    path = resolve_ingest_path("nope.txt", [tree["root"]], must_exist=False)
    assert path == (tree["root"] / "nope.txt").resolve()


@pytest.mark.parametrize("path", ["", "   ", "a\x00b"])
def test_empty_and_nul_paths_are_refused(tree: dict[str, Path], path: str) -> None:
    with pytest.raises(PathNotAllowed):
        resolve_ingest_path(path, [tree["root"]])


def test_no_roots_means_no_file_ingestion(tree: dict[str, Path]) -> None:
    with pytest.raises(PathNotAllowed, match="disabled"):
        resolve_ingest_path(str(tree["root"] / "a.md"), [])


def test_special_files_are_refused(tree: dict[str, Path]) -> None:
    fifo = tree["root"] / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(PathNotAllowed, match="not a regular file"):
        resolve_ingest_path("pipe", [tree["root"]])


def test_symlink_loop_is_refused(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    with pytest.raises((PathNotAllowed, NotFound)):
        resolve_ingest_path("loop1", [root])


# --------------------------------------------------------------------------- iter_files


def _names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root.resolve()).as_posix() for p in paths]


def test_iter_files_sorted_recursive_and_hidden(tree: dict[str, Path]) -> None:
    root = tree["root"]
    assert _names(list(iter_files(root, recursive=True)), root) == [
        "a.md",
        "docs/b.txt",
        "docs/deep/c.html",
    ]
    assert _names(list(iter_files(root, recursive=False)), root) == ["a.md"]
    assert _names(list(iter_files(root, True, skip_hidden=False)), root) == [
        ".git/config",
        ".hidden.txt",
        "a.md",
        "docs/b.txt",
        "docs/deep/c.html",
    ]


def test_iter_files_never_follows_links_out_of_root(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (root / "secret-link.txt").symlink_to(tree["outside"] / "secret.txt")
    (root / "outside-dir").symlink_to(tree["outside"], target_is_directory=True)
    (root / "docs" / "loop").symlink_to(root, target_is_directory=True)
    (root / "docs" / "alias.md").symlink_to(root / "a.md")
    (root / "peek").symlink_to(root / ".hidden.txt")
    files = list(iter_files(root, recursive=True))
    assert _names(files, root) == ["a.md", "docs/b.txt", "docs/deep/c.html"]
    assert all("secret" not in p.read_text() for p in files)


def test_iter_files_on_a_single_file_and_unreadable_dirs(tree: dict[str, Path]) -> None:
    root = tree["root"]
    assert list(iter_files(root / "a.md", recursive=True)) == [(root / "a.md").resolve()]
    errors: list[Path] = []
    assert list(iter_files(root / "missing", True, on_error=lambda p, e: errors.append(p))) == []
    assert errors == [(root / "missing").resolve()]


def test_iter_files_reports_directories_deeper_than_the_limit_and_walks_the_rest(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Depth first in sorted order, as before the walk lost its recursion; a directory
    below MAX_WALK_DEPTH levels is one ``on_error`` report, its siblings still walked."""
    root = tree["root"]
    (root / "docs" / "deep" / "deeper").mkdir()
    (root / "docs" / "deep" / "deeper" / "d.txt").write_text("d")
    (root / "docs" / "z.txt").write_text("z")
    monkeypatch.setattr(paths, "MAX_WALK_DEPTH", 2)
    errors: list[tuple[Path, str]] = []
    files = list(iter_files(root, True, on_error=lambda p, e: errors.append((p, str(e)))))
    assert _names(files, root) == ["a.md", "docs/b.txt", "docs/deep/c.html", "docs/z.txt"]
    assert [(p.relative_to(root.resolve()).as_posix(), "more than 2 levels" in e)
            for p, e in errors] == [("docs/deep/deeper", True)]


# --------------------------------------------------------------------------- read_ingest_file


def test_read_ingest_file(tree: dict[str, Path]) -> None:
    path = resolve_ingest_path("a.md", [tree["root"]])
    assert read_ingest_file(path, max_bytes=100) == b"# A"
    with pytest.raises(PayloadTooLarge):
        read_ingest_file(path, max_bytes=2)


def test_read_ingest_file_refuses_a_symlink_swapped_in_after_the_check(
    tree: dict[str, Path],
) -> None:
    root = tree["root"]
    path = resolve_ingest_path("a.md", [root])
    path.unlink()
    path.symlink_to(tree["outside"] / "secret.txt")  # the race an attacker would win
    with pytest.raises(PathNotAllowed):
        read_ingest_file(path, max_bytes=100)
