"""Running one configured check (``ruff check .``, ``python -m pytest -q``...) on a checkout:
a subprocess with a wall-clock timeout, resource limits and a cap on the output read.

* **No shell**: a check is an argv list from the settings, never a string a shell parses;
  nothing a user sends becomes part of a command.
* **Resource limits** (``resource.setrlimit``: CPU seconds, address space, file size,
  processes, no core files) are set by a tiny launcher (``python -I -S -c``) that then
  ``exec``s the check, rather than by ``preexec_fn``, which is unsafe in a process with
  threads (the worker runs ``asyncio.to_thread`` jobs).
* **Own process group** (``start_new_session``): a timeout, a flood or a cancelled job
  kills the check and everything it started; what it started is killed too when it
  exits by itself.
* **Clean environment**: ``PATH`` (Roost's ``bin`` first), ``HOME`` and ``TMPDIR`` in a
  scratch directory, ``LANG``; none of Roost's ``ROOST_*`` settings or keys.
* **Output cap**: stdout and stderr (merged) are read up to ``max_output_bytes``; a check
  writing more is killed (outcome ``flooded``, ``truncated``).  The stored tail is the
  last :data:`TAIL_CHARS` characters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

Outcome = Literal["passed", "failed", "timeout", "flooded", "error"]
TAIL_CHARS: Final = 8000
_READ_CHUNK: Final = 64 * 1024

# Runs with -I -S (no site, no environment variables read by Python): sets the limits,
# then replaces itself with the check.  argv: cpu_s memory_bytes file_bytes nproc -- check...
_LAUNCHER: Final = """
import os, resource, sys
cpu, mem, fsize, nproc = (int(v) for v in sys.argv[1:5])
def limit(kind, value, hard=None):
    if value > 0:
        resource.setrlimit(kind, (value, value if hard is None else hard))
limit(resource.RLIMIT_CPU, cpu, cpu + 5)
limit(resource.RLIMIT_AS, mem)
limit(resource.RLIMIT_FSIZE, fsize)
limit(resource.RLIMIT_NPROC, nproc)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
argv = sys.argv[6:]
try:
    os.execvpe(argv[0], argv, os.environ)
except OSError as exc:
    sys.stderr.write(f"cannot run {argv[0]}: {exc.strerror}\\n")
    os._exit(127)
"""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 300.0
    max_output_bytes: int = 256 * 1024
    cpu_s: int = 300
    memory_bytes: int = 2048 * 1024 * 1024
    file_bytes: int = 64 * 1024 * 1024
    processes: int = 1024


@dataclass(frozen=True)
class CheckResult:
    argv: tuple[str, ...]
    outcome: Outcome
    exit_code: int | None
    duration_ms: int
    output_tail: str
    truncated: bool

    def as_json(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "outcome": self.outcome, "exit_code": self.exit_code,
                "duration_ms": self.duration_ms, "output_tail": self.output_tail,
                "truncated": self.truncated}


def check_name(argv: tuple[str, ...] | list[str]) -> str:
    return shlex.join(argv)


def _bin_dirs() -> list[str]:
    """Roost's own ``bin`` (the virtual environment's: ruff, pytest) before ``PATH``."""
    own = str(Path(sys.executable).parent)
    rest = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d and d != own]
    return [own, *rest]


def resolve(program: str) -> str | None:
    """``python``/``python3`` is the Python running Roost; a bare name is looked up in
    Roost's ``bin`` then ``PATH``; a path is used as it is (relative to the checkout)."""
    if program in ("python", "python3"):
        return sys.executable
    if "/" in program:
        return program
    return shutil.which(program, path=os.pathsep.join(_bin_dirs()))


def environment(scratch: Path) -> dict[str, str]:
    home = scratch / "home"
    tmp = scratch / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.pathsep.join(_bin_dirs()), "HOME": str(home), "TMPDIR": str(tmp),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(data: bytes | bytearray) -> str:
    # PostgreSQL's jsonb refuses \u0000.
    return bytes(data).decode("utf-8", "replace")[-TAIL_CHARS:].replace("\x00", "\ufffd")


async def run_check(argv: tuple[str, ...], cwd: Path, env: dict[str, str],
                    limits: Limits) -> CheckResult:
    """Run one check in ``cwd`` and say how it went (never raises for the check's own
    failure; a cancelled caller kills it)."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    program = resolve(argv[0]) if argv else None
    if program is None:
        return CheckResult(argv, "error", None, 0, f"command not found: {argv[0] if argv else ''}",
                           False)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", _LAUNCHER, str(limits.cpu_s),
            str(limits.memory_bytes), str(limits.file_bytes), str(limits.processes), "--",
            program, *argv[1:], cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
    except OSError as exc:
        return CheckResult(argv, "error", None, elapsed(), f"cannot start: {exc.strerror}", False)
    assert proc.stdout is not None
    stdout = proc.stdout
    tail = bytearray()
    read = 0
    truncated = False

    async def pump() -> None:
        nonlocal read, truncated
        while True:
            chunk = await stdout.read(_READ_CHUNK)
            if not chunk:
                return
            room = limits.max_output_bytes - read
            if len(chunk) > room:
                chunk, truncated = chunk[:room], True
            read += len(chunk)
            tail.extend(chunk)
            del tail[:-(TAIL_CHARS * 4)]
            if truncated:
                return

    outcome: Outcome | None = None
    try:
        async with asyncio.timeout(limits.timeout_s):
            await pump()
            if truncated:
                _kill(proc)
                outcome = "flooded"
            await proc.wait()
    except TimeoutError:
        outcome = "timeout"
    finally:
        if proc.returncode is None:
            _kill(proc)
            await asyncio.shield(proc.wait())
        # The group's other processes (a server or sleeper the check started in the
        # background) must not outlive the check, which has ended however it went.
        _kill(proc)
    code = proc.returncode
    text = _tail(tail)
    if outcome == "timeout":
        text += f"\n[roost: killed after {limits.timeout_s:g} s]"
    elif outcome == "flooded":
        text += f"\n[roost: killed after {limits.max_output_bytes} bytes of output]"
    elif code == 127 and text.startswith("cannot run "):
        outcome = "error"
    else:
        outcome = "passed" if code == 0 else "failed"
    return CheckResult(argv, outcome, None if outcome in ("timeout", "flooded") else code,
                       elapsed(), text, truncated)


def overall(results: list[CheckResult]) -> str:
    """The version's ``validation_status`` from its checks' outcomes."""
    outcomes = {r.outcome for r in results}
    if "timeout" in outcomes:
        return "timeout"
    if "error" in outcomes:
        return "error"
    if outcomes - {"passed"}:
        return "failed"
    return "passed"
