"""What a debate's participants are asked, and how their answers are read (pure: no
database, no model)."""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from roost.inputs import is_invisible

MAX_TURN_CHARS_SEEN: Final = 4000  # of each earlier turn, in a later prompt
MAX_BALLOT_CHARS: Final = 100_000  # a ranking of at most 20 positions is far shorter
# A turn is asked for at most 800 tokens; a provider that answers megabytes anyway has the
# rest cut, so 400 turns cannot make a debate's answer gigabytes.
MAX_TURN_CHARS: Final = 100_000
# Within one line: a pattern that may cross newlines (``\W``, ``\s``) backtracks over
# every later line from every line start, quadratic on an answer of blank lines.
# Markdown around the value too ("**Confidence:** 0.8", "Confidence: **0.6**"), on one
# line; not a sign or a dot before it (-0.5 is no confidence of 0.5).
_CONFIDENCE = re.compile(r"^[^\w\n]*confidence[^\w\n]*[:=][^\w\n.+-]*([01](?:\.\d+)?|\.\d+)"
                         r"[^\w\n]*$", re.IGNORECASE | re.MULTILINE)
_FENCE: Final = "```"


class BallotError(ValueError):
    """A participant's ranking that is not a valid answer (the debate fails with it)."""


@dataclass(frozen=True)
class SeenTurn:
    round_number: int
    participant_id: str
    position: str
    content: str


def _header(topic: str, description: str | None, positions: Sequence[str]) -> str:
    lines = [f"Topic: {topic}"]
    if description:
        lines.append(f"Context: {description}")
    lines.append("Positions: " + json.dumps(list(positions), ensure_ascii=False))
    return "\n".join(lines)


def _transcript(turns: Sequence[SeenTurn]) -> str:
    if not turns:
        return "Nobody has spoken yet: you open the debate."
    return "The debate so far:\n\n" + "\n\n".join(
        f"[round {t.round_number}] {t.participant_id} (for {t.position}):\n"
        f"{t.content[:MAX_TURN_CHARS_SEEN]}" for t in turns)


def system_prompt(participant_id: str, instructions: str | None, *, judging: bool) -> str:
    role = ("The debate is over and you now rank the positions honestly, by the strength of "
            "the arguments made." if judging else
            "Argue for the position you are assigned, answer the other participants' "
            "strongest points, and be concise.")
    own = (instructions or "").strip()
    return ((own + "\n\n") if own else "") + (
        f"You are {participant_id}, a participant in a structured debate. {role}")


def turn_prompt(topic: str, description: str | None, positions: Sequence[str], *,
                position: str, round_number: int, total_rounds: int,
                turns: Sequence[SeenTurn]) -> str:
    return (f"{_header(topic, description, positions)}\n"
            f"You argue for: {position}\n"
            f"This is round {round_number} of {total_rounds}.\n\n"
            f"{_transcript(turns)}\n\n"
            "Give your argument now. End with a line `Confidence: <a number from 0 to 1>` "
            "saying how confident you are in your position.")


def ballot_prompt(topic: str, description: str | None, positions: Sequence[str], *,
                  turns: Sequence[SeenTurn]) -> str:
    return (f"{_header(topic, description, positions)}\n\n"
            f"{_transcript(turns)}\n\n"
            "The debate is over. Rank every position, from the most to the least convincing, "
            "whichever one you argued. Answer with a JSON object only, no other text: "
            '{"ranking": [every position exactly once, best first, spelled as listed], '
            '"confidence": <a number from 0 to 1>}')


def turn_confidence(content: str) -> float:
    """The last ``Confidence: x`` line of a turn (0 to 1), or 0 when there is none."""
    found = _CONFIDENCE.findall(content)
    if not found:
        return 0.0
    return min(max(float(found[-1]), 0.0), 1.0)


def _unfenced(body: str) -> str:
    """``body`` (stripped) without a Markdown code fence around it (```json ... ```)."""
    if body.startswith(_FENCE):
        body = body[len(_FENCE):].lstrip(string.ascii_letters)  # the language tag
    if body.endswith(_FENCE):
        body = body[:-len(_FENCE)]
    return body.strip()


def position_key(position: str) -> str:
    """How positions are compared (with each other, and with a ballot's names): case,
    surrounding spaces, composed or decomposed accents and invisible characters aside (a
    model answers "café" in one form whatever form the debate was given in, and never
    writes the zero-width space a pasted position may carry)."""
    visible = "".join(c for c in position if c.isspace() or not is_invisible(c))
    return unicodedata.normalize("NFC", visible.strip()).casefold()


def parse_ballot(text: str, positions: Sequence[str]) -> tuple[list[str], float]:
    """The ranking (each position once, spelled as the debate spells it; matched without
    regard to case or surrounding spaces) and confidence of a ballot answer."""
    body = text.strip()
    if len(body) > MAX_BALLOT_CHARS:  # first: nothing below reads a huge answer
        raise BallotError(f"the answer is longer than {MAX_BALLOT_CHARS} characters")
    body = _unfenced(body)
    if not body.startswith("{") and "{" in body and "}" in body:
        body = body[body.index("{"):body.rindex("}") + 1]
    try:
        data: Any = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BallotError(f"the answer is not JSON ({exc.msg})") from None
    except RecursionError:  # thousands of nested brackets
        raise BallotError("the answer is nested too deeply") from None
    except ValueError:  # an integer of more digits than int() converts
        raise BallotError("the answer holds a number too long to read") from None
    if not isinstance(data, Mapping):
        raise BallotError("the answer is not a JSON object")
    ranking = data.get("ranking")
    if not isinstance(ranking, list) or not all(isinstance(r, str) for r in ranking):
        raise BallotError('"ranking" must be a list of position names')
    canonical = {position_key(p): p for p in positions}
    named = [canonical.get(position_key(r)) for r in ranking]
    unknown = [r for r, n in zip(ranking, named, strict=True) if n is None]
    if unknown:
        raise BallotError(f'"ranking" names {len(unknown)} unknown position(s)')
    if len(set(named)) != len(named):
        raise BallotError('"ranking" names a position more than once')
    if len(named) != len(positions):
        missing = len(positions) - len(named)
        raise BallotError(f'"ranking" leaves out {missing} position(s): rank every one')
    confidence = data.get("confidence", 0.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) \
            or not 0 <= confidence <= 1:
        raise BallotError('"confidence" must be a number from 0 to 1')
    return [n for n in named if n is not None], float(confidence)
