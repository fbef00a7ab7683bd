"""What every command's JSON options and files share (roost.db.cliio.load_json): one red
line and exit 1 for anything it cannot hand on, never a traceback."""

from __future__ import annotations

import pytest
import typer

from roost.db.cliio import load_json


@pytest.mark.parametrize(("raw", "why"), [
    ('{"a": ', "Expecting value"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("1" * 5000, "a number too long"),
    ('{"name": "a\\ud800b"}', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
])
def test_what_load_json_cannot_hand_on_is_one_line(
    raw: str, why: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited:
        load_json(raw, "Invalid --args")
    assert exited.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("Invalid --args: ") and why in err and "Traceback" not in err, err


def test_load_json_hands_on_any_json_value() -> None:
    assert load_json('{"a": ["\\u00e9", 1.5, null, true]}', "x") == {"a": ["é", 1.5, None, True]}
    assert load_json('"\\ud83d\\ude00"', "x") == "😀"  # a surrogate pair is one character
