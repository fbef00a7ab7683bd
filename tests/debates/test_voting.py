"""The voting methods (roost.debates.voting): worked examples, then property-based tests
against pref-voting (an independent implementation) on random profiles."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pref_voting.margin_based_methods import beat_path
from pref_voting.profiles import Profile
from pref_voting.scoring_methods import borda, plurality

from roost.debates import voting
from roost.debates.voting import Ballot, VotingError, tally

A, B, C = "A", "B", "C"


def ballots(*rankings: str, weights: list[float] | None = None) -> list[Ballot]:
    return [Ballot(voter=f"v{i}", ranking=tuple(r), weight=(weights or [1] * len(rankings))[i])
            for i, r in enumerate(rankings)]


def test_majority_counts_first_preferences_and_says_if_absolute() -> None:
    result = tally("majority", [A, B, C], ballots("ABC", "ACB", "BCA"))
    assert result.winner == A and result.scores == {A: 2, B: 1, C: 0}
    assert result.absolute_majority is True and result.tied == ()


def test_majority_ignores_weights_weighted_uses_them() -> None:
    profile = ballots("ABC", "BAC", "BCA", weights=[5, 1, 1])
    assert tally("majority", [A, B, C], profile).winner == B
    weighted = tally("weighted", [A, B, C], profile)
    assert weighted.winner == A and weighted.scores[A] == 5


def test_a_tie_goes_to_the_position_listed_first() -> None:
    result = tally("majority", [C, B, A], ballots("ABC", "BAC"))
    assert result.winner == B and result.tied == (B, A)
    assert result.as_json()["tie_break"] == voting.TIE_BREAK_RULE


def test_borda_points_are_weighted() -> None:
    result = tally("borda", [A, B, C], ballots("ABC", "BCA", weights=[1, 1.5]))
    # A: 2 + 0; B: 1 + 2*1.5 = 4; C: 0 + 1.5
    assert result.scores == {A: 2, B: 4, C: Fraction(3, 2)} and result.winner == B


def test_condorcet_winner_beats_every_other() -> None:
    result = tally("condorcet", [A, B, C], ballots("BAC", "BCA", "ABC"))
    assert result.winner == B and result.condorcet_winner == B
    assert not result.no_condorcet_winner and result.support[B][A] == 2


def test_a_cycle_has_no_condorcet_winner_and_schulze_decides() -> None:
    # A>B 5:4... the classic: 3 ABC, 2 BCA, 2 CAB -> A>B 5:2, B>C 5:2, C>A 4:3 (a cycle)
    profile = ballots(*["ABC"] * 3, *["BCA"] * 2, *["CAB"] * 2)
    result = tally("condorcet", [A, B, C], profile)
    assert result.condorcet_winner is None and result.no_condorcet_winner
    # The weakest link of the cycle is C>A (4): Schulze drops it, A wins.
    assert result.winner == A and result.schulze_winners == (A,)
    out = result.as_json()
    assert out["no_condorcet_winner"] is True and "Schulze" in out["note"]
    assert out["strongest_paths"]["A"]["C"] == 5


def test_a_perfect_cycle_is_a_schulze_tie_broken_by_list_order() -> None:
    result = tally("condorcet", [B, C, A], ballots("ABC", "BCA", "CAB"))
    assert result.no_condorcet_winner and set(result.schulze_winners) == {A, B, C}
    assert result.winner == B and result.tied == (B, C, A)


@pytest.mark.parametrize(("positions", "profile", "message"), [
    ([], [], "no positions"),
    ([A, B], [], "no ballots"),
    ([A, B], ballots("A"), "does not rank every position"),
    ([A, B], ballots("AA"), "does not rank every position"),
    ([A, B], ballots("AB", weights=[0]), "weight"),
])
def test_bad_input_is_refused(positions: list[str], profile: list[Ballot], message: str) -> None:
    with pytest.raises(VotingError, match=message):
        tally("borda", positions, profile)
    with pytest.raises(VotingError, match="unknown voting method"):
        tally("approval", [A, B], ballots("AB"))


# --- against pref-voting ------------------------------------------------------------------

@st.composite
def profiles(draw: st.DrawFn) -> tuple[list[str], list[list[int]], list[int]]:
    """Positions, rankings (as indexes, best first) and integer weights."""
    m = draw(st.integers(min_value=2, max_value=5))
    n = draw(st.integers(min_value=1, max_value=9))
    rankings = [draw(st.permutations(list(range(m)))) for _ in range(n)]
    weights = draw(st.lists(st.integers(min_value=1, max_value=4), min_size=n, max_size=n))
    names = draw(st.permutations([f"pos-{i}" for i in range(m)]))  # listing order varies
    return list(names), [list(r) for r in rankings], weights


def _ours(names: list[str], rankings: list[list[int]], weights: list[int] | None,
          method: str) -> voting.Result:
    return tally(method, names, [
        Ballot(f"v{i}", tuple(names[c] for c in r), 1 if weights is None else weights[i])
        for i, r in enumerate(rankings)])


def _first_listed(names: list[str], winners: list[int]) -> str:
    """The oracle's winners (indexes) resolved by our documented tie-break."""
    return names[min(winners)]  # index order is the listing order


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(profiles())
def test_majority_and_weighted_match_plurality(
        drawn: tuple[list[str], list[list[int]], list[int]]) -> None:
    names, rankings, weights = drawn
    for counts, method in (([1] * len(rankings), "majority"), (weights, "weighted")):
        oracle = Profile(rankings, rcounts=counts)
        ours = _ours(names, rankings, counts, method)
        assert ours.winner == _first_listed(names, plurality(oracle))
        assert {names[c]: s for c, s in oracle.plurality_scores().items()} == ours.scores
        # Weighted with all weights 1 is majority.
    assert _ours(names, rankings, None, "weighted").winner == \
        _ours(names, rankings, None, "majority").winner


@FAST
@given(profiles())
def test_borda_matches(drawn: tuple[list[str], list[list[int]], list[int]]) -> None:
    names, rankings, weights = drawn
    oracle = Profile(rankings, rcounts=weights)
    ours = _ours(names, rankings, weights, "borda")
    assert {names[c]: s for c, s in oracle.borda_scores().items()} == ours.scores
    assert ours.winner == _first_listed(names, borda(oracle))


@FAST
@given(profiles())
def test_condorcet_and_schulze_match(drawn: tuple[list[str], list[list[int]], list[int]]) -> None:
    names, rankings, weights = drawn
    oracle = Profile(rankings, rcounts=weights)
    ours = _ours(names, rankings, weights, "condorcet")
    expected = oracle.condorcet_winner()
    if expected is not None:
        assert ours.condorcet_winner == names[expected] == ours.winner
        assert not ours.no_condorcet_winner
    else:
        assert ours.condorcet_winner is None and ours.no_condorcet_winner
        schulze = beat_path(oracle)
        assert sorted(ours.schulze_winners) == sorted(names[c] for c in schulze)
        assert ours.winner == _first_listed(names, schulze)
    for x in range(len(names)):
        for y in range(len(names)):
            if x != y:
                assert ours.support[names[x]][names[y]] == oracle.support(x, y)


@FAST
@given(profiles(), st.integers(min_value=2, max_value=7))
def test_scaling_every_weight_changes_no_winner(
        drawn: tuple[list[str], list[list[int]], list[int]], factor: int) -> None:
    names, rankings, weights = drawn
    for method in voting.METHODS:
        scaled = [w * factor for w in weights]
        assert _ours(names, rankings, weights, method).winner == \
            _ours(names, rankings, scaled, method).winner


def test_a_pairwise_tie_is_not_called_a_majority_cycle() -> None:
    """Two positions, one ballot each way: no Condorcet winner because of a pairwise tie,
    which the note names (it told of a majority cycle); a real cycle is still one."""
    ballots = [Ballot("x", ("a", "b")), Ballot("y", ("b", "a"))]
    result = tally("condorcet", ["a", "b"], ballots).as_json()
    assert result["no_condorcet_winner"] is True
    assert result["winner"] == "a" and result["tied"] == ["a", "b"]
    assert "cycle" not in result["note"], result["note"]
    assert "a pairwise tie" in result["note"], result["note"]
    cycle = [Ballot("x", ("a", "b", "c")), Ballot("y", ("b", "c", "a")),
             Ballot("z", ("c", "a", "b"))]
    note = tally("condorcet", ["a", "b", "c"], cycle).as_json()["note"]
    assert "a majority cycle" in note and "tie" not in note, note
