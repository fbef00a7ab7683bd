"""Run the real ``roost`` console script in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOST = str(Path(sys.executable).with_name("roost"))


def run_roost(*args: str, env: dict[str, str], timeout: float = 120,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``stdin``: text piped to the command (secrets are read from standard input)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    full_env.update(env)
    full_env.setdefault("COLUMNS", "200")  # rich would wrap narrow tables in CI logs
    return subprocess.run(
        [ROOST, *args], env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
        input=stdin,
    )
