"""The voting rules of a debate, pure (no database, no I/O); docs/debates.md states them.

Every ballot ranks **every** position, best first, and carries its participant's weight
(> 0; 1 unless the debate gives another).  Arithmetic is exact (``Fraction``), so a tie
is a tie, never a rounding accident.

* ``majority``: each ballot's first preference counts 1 (weights ignored); most wins.
* ``weighted``: each ballot's first preference counts its weight; most wins.
* ``borda``: with n positions, a ballot gives n-1 points to its first, n-2 to its
  second, ... 0 to its last, times its weight; most points wins.
* ``condorcet``: pairwise, ``support[x][y]`` is the weight of ballots ranking x above y.
  The Condorcet winner beats every other position (``support[x][y] > support[y][x]``).
  Without one, the result says so and Schulze's beatpath method decides: the strength of
  a path is its weakest link, a link x->y exists when x beats y and is as strong as
  ``support[x][y]``; ``p[x][y]`` is the strongest path's; the Schulze winners are the x
  with ``p[x][y] >= p[y][x]`` for every y (there is always at least one).

**Tie-break** (every method): when several positions tie for first, the winner is the
one listed first in the debate's ``positions``; the result names the tied positions and
the rule (``tie_break``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, Literal

Method = Literal["majority", "weighted", "borda", "condorcet"]
METHODS: Final[tuple[Method, ...]] = ("majority", "weighted", "borda", "condorcet")
TIE_BREAK_RULE: Final = "the tied position listed first in the debate's positions wins"


class VotingError(ValueError):
    """The input cannot be tallied (no ballots, a ranking that is not a full ranking...)."""


@dataclass(frozen=True)
class Ballot:
    voter: str
    ranking: tuple[str, ...]  # every position, best first
    weight: Fraction | Decimal | int | float = 1


@dataclass(frozen=True)
class Result:
    method: Method
    winner: str
    # majority/weighted: first preferences; borda: points; condorcet: pairwise wins.
    scores: dict[str, Fraction]
    tied: tuple[str, ...] = ()  # positions tied for first before the tie-break (>= 2)
    absolute_majority: bool | None = None  # majority/weighted: winner has > half
    condorcet_winner: str | None = None
    no_condorcet_winner: bool = False  # condorcet: Schulze decided
    support: dict[str, dict[str, Fraction]] = field(default_factory=dict)  # condorcet
    strongest_paths: dict[str, dict[str, Fraction]] = field(default_factory=dict)  # Schulze
    schulze_winners: tuple[str, ...] = ()

    @property
    def tie_break(self) -> str | None:
        return TIE_BREAK_RULE if self.tied else None

    def why_no_condorcet_winner(self) -> str:
        """"a majority cycle" (the pairwise wins go round), "a pairwise tie" (none does,
        but two positions tie and neither beats every other), or both: the note told of a
        cycle when two positions had merely tied."""
        beats = {x: {y for y, v in row.items() if y != x and v > self.support[y][x]}
                 for x, row in self.support.items()}
        tie = any(x != y and v == self.support[y][x]
                  for x, row in self.support.items() for y, v in row.items())
        reasons = [*(("a majority cycle",) if _has_cycle(beats) else ()),
                   *(("a pairwise tie",) if tie else ())]
        return " and ".join(reasons) or "a majority cycle"

    def as_json(self) -> dict[str, Any]:
        def num(v: Fraction) -> float | int:
            return int(v) if v.denominator == 1 else float(v)

        def matrix(m: Mapping[str, Mapping[str, Fraction]]) -> dict[str, dict[str, float | int]]:
            return {x: {y: num(v) for y, v in row.items()} for x, row in m.items()}

        out: dict[str, Any] = {
            "method": self.method, "winner": self.winner,
            "scores": {k: num(v) for k, v in self.scores.items()},
            "tied": list(self.tied), "tie_break": self.tie_break,
        }
        if self.absolute_majority is not None:
            out["absolute_majority"] = self.absolute_majority
        if self.method == "condorcet":
            out.update(
                condorcet_winner=self.condorcet_winner,
                no_condorcet_winner=self.no_condorcet_winner,
                support=matrix(self.support),
                note=(f"no Condorcet winner: {self.why_no_condorcet_winner()}; Schulze's "
                      "method decided" if self.no_condorcet_winner else
                      "the Condorcet winner beats every other position pairwise"))
            if self.no_condorcet_winner:
                out["strongest_paths"] = matrix(self.strongest_paths)
                out["schulze_winners"] = list(self.schulze_winners)
        return out


def _has_cycle(beats: Mapping[str, set[str]]) -> bool:
    """Whether the directed graph ``beats`` (x -> the positions x beats) has a cycle."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(start: str) -> bool:
        stack = [(start, iter(sorted(beats.get(start, ()))))]
        state[start] = 1
        while stack:
            node, following = stack[-1]
            step = next(following, None)
            if step is None:
                state[node] = 2
                stack.pop()
            elif state.get(step) == 1:
                return True
            elif step not in state:
                state[step] = 1
                stack.append((step, iter(sorted(beats.get(step, ())))))
        return False

    return any(node not in state and visit(node) for node in sorted(beats))


def _exact(weight: Fraction | Decimal | int | float) -> Fraction:
    value = Fraction(str(weight)) if isinstance(weight, float) else Fraction(weight)
    if value <= 0:
        raise VotingError("every ballot's weight must be > 0")
    return value


def _check(positions: Sequence[str], ballots: Sequence[Ballot]) -> list[Fraction]:
    if not positions:
        raise VotingError("there are no positions to vote on")
    if len(set(positions)) != len(positions):
        raise VotingError("the positions must be distinct")
    if not ballots:
        raise VotingError("there are no ballots")
    wanted = sorted(positions)
    for ballot in ballots:
        if sorted(ballot.ranking) != wanted:
            raise VotingError(f"the ballot of {ballot.voter!r} does not rank every position "
                              "exactly once")
    return [_exact(b.weight) for b in ballots]


def _first_listed(positions: Sequence[str], best: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """The winner among ``best`` by the tie-break, and the tie (empty without one)."""
    ordered = tuple(p for p in positions if p in best)
    return ordered[0], (ordered if len(ordered) > 1 else ())


def _top(positions: Sequence[str], scores: Mapping[str, Fraction]) -> tuple[str, tuple[str, ...]]:
    high = max(scores.values())
    return _first_listed(positions, [p for p in positions if scores[p] == high])


def first_preferences(positions: Sequence[str], ballots: Sequence[Ballot], *,
                      weighted: bool) -> dict[str, Fraction]:
    weights = _check(positions, ballots)
    scores = {p: Fraction(0) for p in positions}
    for ballot, weight in zip(ballots, weights, strict=True):
        scores[ballot.ranking[0]] += weight if weighted else 1
    return scores


def borda_scores(positions: Sequence[str], ballots: Sequence[Ballot]) -> dict[str, Fraction]:
    weights = _check(positions, ballots)
    n = len(positions)
    scores = {p: Fraction(0) for p in positions}
    for ballot, weight in zip(ballots, weights, strict=True):
        for place, position in enumerate(ballot.ranking):
            scores[position] += (n - 1 - place) * weight
    return scores


def pairwise_support(positions: Sequence[str],
                     ballots: Sequence[Ballot]) -> dict[str, dict[str, Fraction]]:
    """``support[x][y]``: the weight of the ballots ranking x above y."""
    weights = _check(positions, ballots)
    support = {x: {y: Fraction(0) for y in positions if y != x} for x in positions}
    for ballot, weight in zip(ballots, weights, strict=True):
        for i, x in enumerate(ballot.ranking):
            for y in ballot.ranking[i + 1:]:
                support[x][y] += weight
    return support


def condorcet_winner(positions: Sequence[str],
                     support: Mapping[str, Mapping[str, Fraction]]) -> str | None:
    for x in positions:
        if all(support[x][y] > support[y][x] for y in positions if y != x):
            return x
    return None


def schulze(positions: Sequence[str], support: Mapping[str, Mapping[str, Fraction]],
            ) -> tuple[dict[str, dict[str, Fraction]], list[str]]:
    """Strongest path strengths (Floyd-Warshall, winning votes) and the Schulze winners."""
    zero = Fraction(0)
    paths = {x: {y: (support[x][y] if support[x][y] > support[y][x] else zero)
                 for y in positions if y != x} for x in positions}
    for i in positions:
        for j in positions:
            if j == i:
                continue
            for k in positions:
                if k in (i, j):
                    continue
                paths[j][k] = max(paths[j][k], min(paths[j][i], paths[i][k]))
    winners = [x for x in positions
               if all(paths[x][y] >= paths[y][x] for y in positions if y != x)]
    return paths, winners


def tally(method: str, positions: Sequence[str], ballots: Sequence[Ballot]) -> Result:
    """The debate's decision under ``method`` (see the module's docstring)."""
    if method in ("majority", "weighted"):
        weighted = method == "weighted"
        scores = first_preferences(positions, ballots, weighted=weighted)
        winner, tied = _top(positions, scores)
        total = sum(scores.values(), Fraction(0))
        return Result(method="weighted" if weighted else "majority", winner=winner, scores=scores, tied=tied,
                      absolute_majority=scores[winner] * 2 > total)
    if method == "borda":
        scores = borda_scores(positions, ballots)
        winner, tied = _top(positions, scores)
        return Result(method="borda", winner=winner, scores=scores, tied=tied)
    if method == "condorcet":
        support = pairwise_support(positions, ballots)
        wins = {x: Fraction(sum(1 for y in support[x] if support[x][y] > support[y][x]))
                for x in positions}
        found = condorcet_winner(positions, support)
        if found is not None:
            return Result(method="condorcet", winner=found, scores=wins,
                          condorcet_winner=found, support=support)
        paths, best = schulze(positions, support)
        winner, tied = _first_listed(positions, best)
        return Result(method="condorcet", winner=winner, scores=wins, tied=tied,
                      no_condorcet_winner=True, support=support, strongest_paths=paths,
                      schulze_winners=tuple(best))
    raise VotingError(f"unknown voting method {method!r}: one of {', '.join(METHODS)}")
