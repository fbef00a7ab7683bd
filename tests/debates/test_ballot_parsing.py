"""Reading a ballot answer (pure): hostile JSON is an invalid ballot, never a crash."""

from __future__ import annotations

import pytest

from roost.debates.prompts import BallotError, parse_ballot

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
