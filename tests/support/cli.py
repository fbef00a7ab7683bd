"""Run the real ``roost`` command in a child process, as a user would.

A command runs in a child of a fork server (tests/support/forkserver.py: ``roost.cli``
and every domain's commands imported once per test process, a fork per command; one
server per distinct value of the variables read at import time, such as ``COLUMNS``), or,
with ``fresh=True``, as a new ``roost`` process.  Either way the command has its own process,
argv, environment, working directory, stdin, stdout, stderr and exit code; a test about
start-up itself (imports, output while loading) passes ``fresh=True``.
"""

from __future__ import annotations

import atexit
import io
import json
import locale
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOST = str(Path(sys.executable).with_name("roost"))
FORK_SERVER = Path(__file__).with_name("forkserver.py")
DEFAULT_COLUMNS = "200"  # rich would wrap narrow tables in CI logs
# What rich's consoles (created when roost.cli is imported) read from the environment.
IMPORT_TIME_ENV = ("COLUMNS", "LINES", "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR",
                   "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES",
                   "ROOST_DOCS_DIR")


def command_env(env: dict[str, str]) -> dict[str, str]:
    """The test process's environment without its ROOST_ settings, plus ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    full_env.update(env)
    full_env.setdefault("COLUMNS", DEFAULT_COLUMNS)
    return full_env


class _ForkServer:
    """A fork server of this test process, started on first use, killed at exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="roost-forkserver-"))
        self.socket_path = str(self._dir / "s")
        self.env = env

    def ensure(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            Path(self.socket_path).unlink(missing_ok=True)
            with open(self._dir / "log", "ab") as log:
                self._process = subprocess.Popen(
                    [sys.executable, str(FORK_SERVER), self.socket_path], env=self.env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                )
            assert self._process.stdout is not None
            line = self._process.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError("the roost fork server did not start: "
                                   + (self._dir / "log").read_text(errors="replace")[-3000:])
            atexit.register(self.stop)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


_servers: dict[tuple[str | None, ...], _ForkServer] = {}
_servers_lock = threading.Lock()


def _server_for(env: dict[str, str]) -> _ForkServer:
    """The fork server whose import-time environment is ``env``'s (one per distinct value
    of those variables: most tests use one, a test at 80 columns another)."""
    key = tuple(env.get(name) for name in IMPORT_TIME_ENV)
    with _servers_lock:
        if key not in _servers:
            base = command_env({})
            for name, value in zip(IMPORT_TIME_ENV, key, strict=True):
                base.pop(name, None)
                if value is not None:
                    base[name] = value
            _servers[key] = _ForkServer(base)
        return _servers[key]


def _text(data: bytes) -> str:
    """As ``subprocess.run(text=True)`` decodes: the locale's encoding, universal newlines."""
    wrapper = io.TextIOWrapper(io.BytesIO(data), encoding=locale.getpreferredencoding(False))
    return wrapper.read()


def _run_forked(args: tuple[str, ...], env: dict[str, str], cwd: str, timeout: float,
                stdin: str | None) -> subprocess.CompletedProcess[str]:
    server = _server_for(env)
    server.ensure()
    with tempfile.TemporaryDirectory(prefix="roost-cmd-") as tmp:
        paths = {name: os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")}
        Path(paths["stdin"]).write_bytes(
            (stdin or "").encode(locale.getpreferredencoding(False)))
        for name in ("stdout", "stderr"):
            Path(paths[name]).touch()
        request = {"argv": [ROOST, *args], "env": env, "cwd": cwd, **paths}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(server.socket_path)
            conn.sendall((json.dumps(request) + "\n").encode())
            answers = conn.makefile("r", encoding="utf-8")
            pid = int(answers.readline())
            try:
                code = int(answers.readline())
            except TimeoutError:
                os.kill(pid, 9)  # as subprocess.run kills the child on a timeout
                raise subprocess.TimeoutExpired([ROOST, *args], timeout) from None
        return subprocess.CompletedProcess(
            [ROOST, *args], code, _text(Path(paths["stdout"]).read_bytes()),
            _text(Path(paths["stderr"]).read_bytes()))


def run_roost(*args: str, env: dict[str, str], timeout: float = 120,
              stdin: str | None = None, cwd: str | Path | None = None,
              fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """``stdin``: text piped to the command (secrets are read from standard input); none
    is an empty stdin.  ``fresh``: a new ``roost`` process, not a fork-server child."""
    full_env = command_env(env)
    workdir = str(cwd) if cwd is not None else os.getcwd()
    if not fresh:
        return _run_forked(args, full_env, workdir, timeout, stdin)
    return subprocess.run(
        [ROOST, *args], env=full_env, capture_output=True, text=True, timeout=timeout,
        check=False, input=stdin if stdin is not None else "", cwd=workdir,
    )


def readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` (a pseudo-terminal's end) has something to read within ``timeout``
    seconds.  Poll-based: ``select.select`` refuses a descriptor numbered 1024 or more
    ("filedescriptor out of range in select()"), which a long test worker reaches."""
    with selectors.DefaultSelector() as chosen:
        chosen.register(fd, selectors.EVENT_READ)
        return bool(chosen.select(timeout))
