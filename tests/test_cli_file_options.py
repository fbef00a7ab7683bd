"""``roost`` options that read a file (roost.db.cliio.read_text/read_bytes), given hostile
files: /dev/zero (the process grew until a MemoryError), a named pipe nobody writes to (it
waited for ever), a UTF-8 byte order mark (Python's "decode using utf-8-sig").  Each is one
clear line and a non-zero exit, or the file read as meant.  No database is needed: every
command here reads its file before it opens one."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import ROOST, command_env
from tests.workflows.graphs import simple_graph

# A cap on the child's address space, so that a command reading /dev/zero without end
# fails (MemoryError) instead of taking the test machine's memory.
_MEMORY_CAP = 3 * 1024 ** 3
_TIMEOUT = 40.0


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))


def _roost(args: list[str], data: Path) -> subprocess.CompletedProcess[str] | None:
    """The command's result, or None if it was still running after _TIMEOUT seconds."""
    try:
        return subprocess.run(
            [ROOST, *args], env=command_env({"ROOST_DATA_DIR": str(data)}),
            capture_output=True, text=True, timeout=_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL, preexec_fn=_cap_memory)
    except subprocess.TimeoutExpired:
        return None


def _commands(path: str) -> list[list[str]]:
    return [
        ["prompts", "publish", "k", "--file", path, "--user", "nobody"],  # text
        ["calendar", "import", path, "-c", "cal", "--user", "nobody"],  # bytes
        ["workflows", "validate", path],  # a path argument
    ]


def _assert_one_line_failure(out: subprocess.CompletedProcess[str] | None,
                             args: list[str]) -> None:
    assert out is not None, f"roost {' '.join(args)} hung (still running after {_TIMEOUT}s)"
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr and "MemoryError" not in out.stderr, \
        out.stderr[-1500:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Cannot read"), out.stderr[-1500:]


@pytest.mark.parametrize("index", range(3), ids=["prompts-publish", "calendar-import",
                                                 "workflows-validate"])
def test_an_option_file_that_is_dev_zero_is_one_line_not_a_memory_error(
        tmp_path: Path, index: int) -> None:
    """--file pointing at /dev/zero (here by a link named zero.json, so that `workflows
    validate` takes it as a file): one line "Cannot read the file: ...: longer than N
    bytes" and exit 1, not the process growing until a MemoryError traceback."""
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    args = _commands(str(zero))[index]
    _assert_one_line_failure(_roost(args, tmp_path / "data"), args)


def test_an_option_file_that_is_a_fifo_nobody_writes_to_fails_instead_of_hanging(
        tmp_path: Path) -> None:
    """A named pipe nothing is written to, given as a command's file: one line ("Cannot
    read the file: pipe.json: a pipe nothing was written to within 10 s") and a non-zero
    exit, not a command waiting for ever in open(); a pipe that is written to is read."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    args = _commands(str(fifo))[0]  # read_text and read_bytes share the one open
    out = _roost(args, tmp_path / "data")
    _assert_one_line_failure(out, args)
    assert out is not None and "a pipe nothing was written to" in out.stderr, out.stderr


def test_a_named_pipe_that_is_written_to_is_read(tmp_path: Path) -> None:
    """`workflows validate` of a named pipe a writer fills (as `<(...)` or a script does)."""
    fifo = tmp_path / "graph.json"
    os.mkfifo(fifo)
    proc = subprocess.Popen([ROOST, "workflows", "validate", str(fifo)],
                            env=command_env({"ROOST_DATA_DIR": str(tmp_path / "data")}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        with fifo.open("w") as writer:  # waits for the command to open its end
            writer.write(json.dumps(simple_graph()))
        out, err = proc.communicate(timeout=_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "valid: 3 nodes" in out, (out, err)


def test_a_json_file_with_a_utf8_byte_order_mark_is_read_as_the_passphrase_file_is(
        tmp_path: Path) -> None:
    """A graph saved by Windows Notepad starts with a UTF-8 byte order mark: read as the
    same JSON, as `--passphrase-file` reads it (it was Python's "Unexpected UTF-8 BOM
    (decode using utf-8-sig)")."""
    graph = tmp_path / "graph.json"
    graph.write_bytes(b"\xef\xbb\xbf" + json.dumps(simple_graph()).encode())
    out = _roost(["workflows", "validate", str(graph)], tmp_path / "data")
    assert out is not None
    assert "utf-8-sig" not in out.stderr, out.stderr
    assert out.returncode == 0 and "valid: 3 nodes" in out.stdout, (out.stdout, out.stderr)
