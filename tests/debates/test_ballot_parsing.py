"""Reading a model's answers (pure): hostile JSON is an invalid ballot, never a crash,
and no answer makes the readers backtrack (they run on the worker's event loop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from roost.debates.prompts import BallotError, parse_ballot, turn_confidence

POSITIONS = ["fish", "dogs"]


def test_a_fenced_ballot_is_read() -> None:
    answer = '```json\n{"ranking": ["Dogs ", "fish"], "confidence": 0.5}\n```'
    assert parse_ballot(answer, POSITIONS) == (["dogs", "fish"], 0.5)


@pytest.mark.parametrize(("answer", "reason"), [
    # json.loads raised RecursionError: the debates.run job crashed and retried
    ('{"ranking": ' + "[" * 5000 + "]" * 5000 + ', "confidence": 0.5}', "nested too deeply"),
    # json.loads raised ValueError (int digits limit)
    ('{"ranking": ["fish", "dogs"], "confidence": ' + "1" * 5000 + "}", "number too long"),
    ('{"ranking": ["fish", "dogs"], "note": "' + "x" * 100_001 + '"}', "longer than"),
])
def test_hostile_json_is_an_invalid_ballot(answer: str, reason: str) -> None:
    with pytest.raises(BallotError, match=reason):
        parse_ballot(answer, POSITIONS)


def _runs_within(code: str, seconds: float = 60) -> bool:
    """``code`` ran to its end in a child Python within ``seconds`` (a hang guard, not a
    timing: the linear reading takes milliseconds, the quadratic one minutes)."""
    try:
        subprocess.run([sys.executable, "-c", code], timeout=seconds, check=True,
                       cwd=Path(__file__).parents[2])
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_huge_ballot_of_spaces_fails_at_once_as_too_long() -> None:
    """2,000,000 characters, mostly spaces: refused as too long before any pattern reads
    it (the code-fence regex backtracked over the spaces for minutes)."""
    code = ("from roost.debates.prompts import parse_ballot, BallotError\n"
            "for answer in ('{' + ' ' * 2_000_000 + 'x}', '```' + ' ' * 2_000_000 + 'x'):\n"
            "    try:\n"
            "        parse_ballot(answer, ['a', 'b'])\n"
            "    except BallotError as e:\n"
            "        assert 'longer than' in str(e), e\n"
            "    else:\n"
            "        raise AssertionError('accepted')\n")
    assert _runs_within(code), "parse_ballot took over 60 s on a 2,000,000-char answer"


@pytest.mark.parametrize("answer", [
    '```{"ranking": ["fish", "dogs"]}```',
    '  ```JSON\r\n{"ranking": ["fish", "dogs"]}\r\n```  ',
    'Here it is: {"ranking": ["fish", "dogs"]} ```',
])
def test_fences_and_text_around_a_ballot_are_dropped(answer: str) -> None:
    assert parse_ballot(answer, POSITIONS) == (["fish", "dogs"], 0.0)


def test_a_turn_of_many_blank_lines_is_read_in_linear_time() -> None:
    """300,000 newlines (far under the 16 MiB answer limit): no confidence, at once, not
    after minutes of backtracking from every line start over every later line."""
    code = ("from roost.debates.prompts import turn_confidence\n"
            "assert turn_confidence('\\n' * 300_000 + 'x') == 0.0\n"
            "assert turn_confidence('\\n' * 300_000 + 'Confidence: 0.5') == 0.5\n"
            "assert turn_confidence(('confidence' + ' ' * 30 + '\\n') * 30_000) == 0.0\n")
    assert _runs_within(code), "turn_confidence took over 60 s on 300,000 newlines"


@pytest.mark.parametrize(("content", "confidence"), [
    ("My case.\nConfidence: 0.7", 0.7),
    ("**Confidence**: .25  \r\nthanks", 0.25),
    ("Confidence: 0.2\n...\n- confidence = 1\n", 1.0),  # the last line counts
    ("Confidence: 0.9 because", 0.0),  # not a line of its own
    ("Confidence\n: 0.9", 0.0),  # split over two lines
    ("no number given", 0.0),
])
def test_the_last_confidence_line_of_a_turn_is_read(content: str, confidence: float) -> None:
    assert turn_confidence(content) == confidence


def test_a_confidence_line_ending_with_a_period_is_read() -> None:
    """Symbols may follow the number, only another number may not: a sentence's closing
    period ("Confidence: 0.8.") is read as 0.8, as "0.7!" is 0.7 (it read as 0)."""
    assert turn_confidence("My case.\nConfidence: 0.7!") == 0.7
    assert turn_confidence("My case.\nConfidence: 0.8.") == 0.8
    assert turn_confidence("My case.\nConfidence: **0.6**.") == 0.6
