"""The docs' curl examples work when copied: every one that sends a JSON body says so.
Roost takes JSON only as ``application/json`` (415 otherwise), and ``curl -d`` alone sends
``application/x-www-form-urlencoded`` (a workflow-run example did, and answered 415)."""

from __future__ import annotations

import re
from pathlib import Path

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
