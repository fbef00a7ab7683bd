"""How long a ``roost`` command takes from the shell, this tree beside an older one.

    .venv/bin/python bench/cli/startup.py [--runs 7] [--baseline /tmp/base/src] [--label now]

One embedded PostgreSQL in a temporary directory, migrated, with one user; then each
command below is run ``--runs`` times as a new process (``python -c 'from roost.cli
import main; main()'``, what the ``roost`` console script does) with ``ROOST_DATABASE_URL``
pointing at it, alternating the trees run by run.  ``--baseline`` is the ``src`` folder
of another checkout (``git worktree add /tmp/base <rev>``), put first on ``PYTHONPATH``
for its runs.  Medians of the wall time in ms; results in bench/results/cli_startup.json.

The commands: ``--version`` (no domain loaded), ``users list`` (identity's commands and a
query), ``tasks ls`` (the queue's), ``mcp --help`` (the tools domain: the MCP SDK), and
``--help`` (every domain, to list them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "cli_startup.json"
COMMANDS: list[list[str]] = [["--version"], ["users", "list"], ["tasks", "ls"],
                             ["mcp", "--help"], ["--help"]]
ENTRY = "from roost.cli import main; main()"


def timed_run(args: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    elapsed = (time.perf_counter() - began) * 1000
    if done.returncode != 0:
        raise SystemExit(f"roost {' '.join(args)} failed: {done.stderr[-2000:]}")
    return elapsed


async def prepare(url: str) -> None:
    from roost.config import Settings
    from roost.db.engine import create_database, to_async_url
    from roost.db.migrate import upgrade

    db = create_database(Settings(), url=to_async_url(url))
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="src folder of an older tree")
    parser.add_argument("--label", default="now")
    args = parser.parse_args()

    from roost.db.embedded import start_embedded
    from roost.db.engine import ensure_database_exists

    trees = {args.label: str(ROOT / "src")}
    if args.baseline is not None:
        trees["baseline"] = str(args.baseline.resolve())
    with tempfile.TemporaryDirectory(prefix="roost-bench-cli-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        try:
            ensure_database_exists(server, "bench_cli")
            url = server.libpq_url("bench_cli")
            asyncio.run(prepare(url))
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
            base_env.update({"ROOST_DATABASE_URL": url, "ROOST_DATA_DIR": str(tmp / "data"),
                             "COLUMNS": "120"})
            samples: dict[str, dict[str, list[float]]] = {
                tree: {" ".join(c): [] for c in COMMANDS} for tree in trees}
            for command in COMMANDS:
                for src in trees.values():  # warm the bytecode caches of both
                    timed_run(command, {**base_env, "PYTHONPATH": src})
                for _ in range(args.runs):
                    for tree, src in trees.items():
                        ms = timed_run(command, {**base_env, "PYTHONPATH": src})
                        samples[tree][" ".join(command)].append(ms)
        finally:
            server.stop()
    result = {
        "benchmark": "roost command start to exit, wall ms (median)",
        "runs": args.runs, "load_average_1m": round(os.getloadavg()[0], 2),
        "trees": trees,
        "median_ms": {tree: {cmd: round(statistics.median(v), 1) for cmd, v in per.items()}
                      for tree, per in samples.items()},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_ms"], indent=2))


if __name__ == "__main__":
    main()
