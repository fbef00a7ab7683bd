"""The docs' curl examples work when copied: every one that sends a JSON body says so.
Roost takes JSON only as ``application/json`` (415 otherwise), and ``curl -d`` alone sends
``application/x-www-form-urlencoded`` (a workflow-run example did, and answered 415)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.cli import run_roost

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _curl_commands(text: str) -> list[tuple[int, str]]:
    """Each ``curl`` command of the page's code blocks, its continued lines joined, with
    the line it starts on."""
    found: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if re.search(r"(^|[\s;&|(])curl\s", lines[i]):
            start, command = i + 1, lines[i]
            while command.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i]
            found.append((start, command))
        i += 1
    return found


def test_every_curl_example_with_a_json_body_names_its_content_type() -> None:
    missing = []
    for page in PAGES:
        for line, command in _curl_commands(page.read_text(encoding="utf-8")):
            sends_body = re.search(r"\s(-d|--data(-raw|-binary)?)\s", command)
            if sends_body and not re.search(r"content-type:\s*application/json", command, re.I):
                missing.append(f"{page.relative_to(ROOT)}:{line}")
    assert not missing, f"curl examples sending a body without a JSON content type: {missing}"


def test_the_check_finds_the_examples() -> None:
    """The check above reads every page's examples (not a test that cannot fail)."""
    commands = [c for page in PAGES for _, c in _curl_commands(page.read_text(encoding="utf-8"))]
    assert sum(" -d " in c for c in commands) >= 20, len(commands)


def _readme_user_lines() -> list[tuple[str, list[str]]]:
    """Each ``roost GROUP a|b|c ... --user U`` line of the README's command summary: the
    group and the subcommands it names."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    found = []
    for line in block.splitlines():
        shown = line.split("#", 1)[0]
        m = re.match(r"roost ([a-z-]+) ([a-z|-]+(?:\|[a-z-]+)+)\b.*--user U", shown)
        if m:
            found.append((m.group(1), m.group(2).split("|")))
    return found


def test_every_subcommand_the_readme_lists_with_user_takes_user(tmp_path: Path) -> None:
    """Each subcommand a README summary line lists with `--user U` takes it (the line said
    `roost memory ...|shards --user U`; `roost memory shards --user alice` exited 2 with
    "No such option: --user": the partitions are global, docs/memory.md)."""
    lines = _readme_user_lines()
    assert len(lines) >= 10, lines  # the parser finds the summary's lines
    env = {"ROOST_DATA_DIR": str(tmp_path / "never")}
    missing = []
    for group, subs in lines:
        for sub in subs:
            out = run_roost(group, sub, "--help", env=env, timeout=60)
            if out.returncode != 0 or "--user" not in out.stdout:
                missing.append(f"roost {group} {sub}")
    assert not missing, missing
