"""`roost serve` (one process and --workers N) as an operator starts and stops it: an SMTP
address another install holds is refused up front; SIGTERM while starting leaves no
embedded PostgreSQL running."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from roost.keyfiles import KeyMaterial
from tests.support.cli import ROOST
from tests.support.pg import PgTestServer
from tests.support.server import free_port, roost_server, serve_env
from tests.support.workers import child_env


def test_a_second_supervisor_cannot_take_the_smtp_address_of_a_running_one(
    pg_server: PgTestServer, db_name: str, open_tmp: Path, test_keys: KeyMaterial,
) -> None:
    """A second `roost serve --workers 2` with the SMTP address of a running one stops
    with one line "cannot listen on SMTP ...": the supervisors bind it with SO_REUSEPORT
    (their children share it), so the second install bound it too and started, and the
    kernel spread incoming mail over both installs' processes."""
    smtp_port = free_port()
    first = serve_env(pg_server, db_name, open_tmp / "a", test_keys,
                      ROOST_SMTP_LISTEN=f"127.0.0.1:{smtp_port}")
    second_env = child_env(**serve_env(pg_server, db_name, open_tmp / "b", test_keys,
                                       ROOST_SMTP_LISTEN=f"127.0.0.1:{smtp_port}",
                                       ROOST_SERVE_WORKER="false"))
    with roost_server(first, args=("--workers", "2"), timeout_s=120):
        second = subprocess.Popen(
            [ROOST, "serve", "--port", str(free_port()), "--workers", "2", "--no-migrate"],
            env=second_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            try:
                output, _ = second.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                second.send_signal(signal.SIGTERM)
                output, _ = second.communicate(timeout=60)
                raise AssertionError(
                    f"a second install started on the SMTP address in use:\n{output}"
                ) from None
        finally:
            if second.poll() is None:
                second.kill()
                second.communicate()
    assert second.returncode == 1, output
    assert f"cannot listen on SMTP 127.0.0.1:{smtp_port}" in output, output


def _postgres_running(data: Path) -> bool:
    """The embedded server itself runs on ``data`` (not initdb's bootstrap)."""
    found = []
    for q in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            line = " ".join(q.cmdline())
            if str(data) in line:
                found.append(line)
    return any("bin/postgres" in f for f in found) and not any("initdb" in f for f in found)


@pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["one-process", "workers"])
def test_sigterm_while_starting_stops_the_embedded_postgres(
    args: tuple[str, ...], open_tmp: Path, test_keys: KeyMaterial,
) -> None:
    """SIGTERM (systemd, docker stop) while `roost serve` starts on the embedded database
    (PostgreSQL starting or up, migrations running) stops PostgreSQL as the README says
    (it killed the process before the exit hook that stops it could run)."""
    data = open_tmp / "data"
    env = child_env(ROOST_DATA_DIR=str(data), ROOST_LLM_LOCAL_MODEL="false",
                    ROOST_LOG_LEVEL="warning", ROOST_ADMIN_TOKEN=test_keys.admin_token,
                    ROOST_SERVE_WORKER="false")
    proc = subprocess.Popen([ROOST, "serve", "--port", str(free_port()), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    try:
        deadline = time.monotonic() + 120
        while not _postgres_running(data):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the embedded PostgreSQL never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            output, _ = proc.communicate()
        gone_by = time.monotonic() + 15  # a server stopping by itself is given time
        while _postgres_running(data) and time.monotonic() < gone_by:
            time.sleep(0.2)
        left = _postgres_running(data)
        for q in psutil.process_iter():  # a PostgreSQL left behind: stop it here
            with contextlib.suppress(psutil.Error):
                if "bin/postgres" in " ".join(q.cmdline()) and str(data) in " ".join(q.cmdline()):
                    q.kill()
                    q.wait(30)
    assert not left, f"roost exited {proc.returncode}, PostgreSQL left running:\n{output}"
