"""A fork server for the tests' ``roost`` commands (run as a script by tests/support/cli.py).

Importing ``roost.cli`` and a domain's commands takes 1.5-3 s of a command's 2-4 s on the
CI machine, and the suite runs a few hundred commands.  This process imports them once,
then forks one child per command: the child takes the command's argv, environment,
working directory, stdin, stdout and stderr, runs ``roost.cli.main()`` and exits the way
the console script would (the exit code of its ``SystemExit``, a traceback and code 1 for
an uncaught exception; threads joined, atexit hooks run, streams flushed).

What a child can tell apart from a fresh ``roost`` process: modules imported before its
command ran (the same ones its command imports first), and settings that a module reads
from the environment at import time (rich's consoles read ``COLUMNS`` and the colour
variables): the client sends a command whose values of those differ from this process's
to a real ``roost`` process instead.

Protocol, one Unix-socket connection per command: the client sends one JSON line
(argv, env, cwd, and the paths of the stdin, stdout and stderr files); the server answers
the child's pid, then its exit code, each on a line.  Commands run concurrently.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import selectors
import socket
import sys
import threading
from pathlib import Path

# As the ``roost`` console script: its own directory first, not this file's.
sys.path[0] = str(Path(sys.executable).parent)

from sqlalchemy.orm import configure_mappers  # noqa: E402

from roost import cli, domains  # noqa: E402  (after the path is the console script's)

domains.import_models()
domains.declare_runtime_settings()
for _domain in domains.DOMAINS:
    for _target in (_domain.cli,) if isinstance(_domain.cli, str) else (_domain.cli or ()):
        domains.load(_target.partition(":")[0])
configure_mappers()  # what a command's first ORM query would do (0.3 s)
assert threading.active_count() == 1, "a fork server must not have threads"
gc.freeze()  # the children's collections skip what was imported: fewer copied pages


def _become(request: dict[str, object]) -> None:
    """In the child: take the command's process state, then run it; never returns."""
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()  # in place: modules hold os.environ itself
    os.environ.update(env)
    os.chdir(str(request["cwd"]))
    for fd, key, flags in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY),
                           (2, "stderr", os.O_WRONLY)):
        opened = os.open(str(request[key]), flags)
        os.dup2(opened, fd)
        os.close(opened)
    argv = request["argv"]
    assert isinstance(argv, list)
    sys.argv = [str(a) for a in argv]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:  # as the interpreter reads it
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    _exit(code)


def _exit(code: int) -> None:
    """What the interpreter does at exit (join threads, atexit hooks, flush), without
    tearing down every object: that touches, so copies, each page shared with the server
    (over a second per command)."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()  # waits for the non-daemon threads, as at interpreter exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # a test process that died does not leave this behind
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                with conn.makefile("r", encoding="utf-8") as lines:
                    request = json.loads(lines.readline())
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    conn.close()
                    for pidfd, (_, other) in waiting.items():
                        os.close(pidfd)
                        other.close()
                    _become(request)
                conn.sendall(f"{pid}\n".encode())
                pidfd = os.pidfd_open(pid)
                waiting[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ)
            else:
                pidfd = key.fd
                selector.unregister(pidfd)
                pid, conn = waiting.pop(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:
                    pass  # the client gave up (a timeout) and closed
                conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
