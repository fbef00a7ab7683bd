"""The scheduler alone (no database): what a finished node activates, dead paths, joins,
loops, and a state that survives a round trip through JSON (as it does through a crash)."""

from __future__ import annotations

import json
from typing import Any

from roost.workflows.engine import Scheduler, State, make_plan
from roost.workflows.graph import validate_graph
from tests.workflows.graphs import edge, node


def scheduler(nodes: list[Any], edges: list[Any]) -> Scheduler:
    assert validate_graph(nodes, edges) == []
    return Scheduler(make_plan(nodes, edges), State())


def names(activations: list[Any]) -> list[str]:
    return [a.node_id for a in activations]


DIAMOND = ([node("s", "start"), node("c", "condition", expression="x"),
            node("a", "template", template="a"), node("b", "template", template="b"),
            node("j", "join"), node("e", "end")],
           [edge("1", "s", "c"), edge("2", "c", "a", "true"), edge("3", "c", "b", "false"),
            edge("4", "a", "j"), edge("5", "b", "j"), edge("6", "j", "e")])


def test_an_untaken_branch_is_dead_and_the_join_does_not_wait_for_it() -> None:
    s = scheduler(*DIAMOND)
    assert s.begin().node_id == "s"
    assert names(s.finish("s")) == ["c"]
    assert names(s.finish("c", "true", all_handles=False)) == ["a"]  # b is dead already
    assert names(s.finish("a")) == ["j"]
    assert names(s.finish("j")) == ["e"]


def test_a_join_all_waits_for_every_branch_and_any_for_the_first() -> None:
    for mode, expected in (("all", ([], ["j"])), ("any", (["j"], []))):
        nodes = [node("s", "start"), node("p", "parallel"), node("a", "template", template="a"),
                 node("b", "template", template="b"), node("j", "join", mode=mode),
                 node("e", "end")]
        edges = [edge("1", "s", "p"), edge("2", "p", "a"), edge("3", "p", "b"),
                 edge("4", "a", "j"), edge("5", "b", "j"), edge("6", "j", "e")]
        s = scheduler(nodes, edges)
        s.begin()
        s.finish("s")
        assert sorted(names(s.finish("p"))) == ["a", "b"]
        assert names(s.finish("a")) == expected[0], mode
        assert names(s.finish("b")) == expected[1], mode


def test_a_merge_without_join_runs_for_the_branch_taken() -> None:
    nodes = [node("s", "start"), node("c", "condition", expression="x"),
             node("a", "template", template="a"), node("b", "template", template="b"),
             node("m", "template", template="m"), node("e", "end")]
    edges = [edge("1", "s", "c"), edge("2", "c", "a", "true"), edge("3", "c", "b", "false"),
             edge("4", "a", "m"), edge("5", "b", "m"), edge("6", "m", "e")]
    s = scheduler(nodes, edges)
    s.begin()
    s.finish("s")
    assert names(s.finish("c", "false", all_handles=False)) == ["b"]
    assert names(s.finish("b")) == ["m"]


def test_a_loop_counts_its_iterations_and_the_state_survives_json() -> None:
    nodes = [node("s", "start"), node("l", "loop", max_iterations=2),
             node("body", "template", template="x"), node("e", "end")]
    edges = [edge("1", "s", "l"), edge("2", "l", "body", "body"), edge("3", "body", "l"),
             edge("4", "l", "e", "done")]
    s = scheduler(nodes, edges)
    assert s.plan.back_edges == frozenset({"3"})
    s.begin()
    (entry,) = s.finish("s")
    assert s.loop_step("l", from_body=entry.from_body, go_on=True) == "body"
    (body,) = s.finish("l", "body", all_handles=False)
    assert (body.node_id, body.iteration) == ("body", 0)
    s = Scheduler(s.plan, State.load(json.loads(json.dumps(s.state.dump()))))  # a crash
    (again,) = s.finish("body")
    assert again.from_body and again.iteration == 1
    assert s.loop_step("l", from_body=True, go_on=True) == "body"
    (body,) = s.finish("l", "body", all_handles=False)
    assert body.iteration == 1
    (again,) = s.finish("body")
    assert s.loop_step("l", from_body=True, go_on=True) == "done"  # max_iterations reached
    assert names(s.finish("l", "done", all_handles=False)) == ["e"]


def test_a_loop_whose_body_returns_straight_to_it_counts_its_iterations() -> None:
    """The body edge from a loop to itself is a return edge: the loop goes on (its count
    kept) rather than being entered afresh, so it stops at max_iterations."""
    nodes = [node("s", "start"), node("l", "loop", max_iterations=2), node("e", "end")]
    edges = [edge("1", "s", "l"), edge("2", "l", "l", "body"), edge("3", "l", "e", "done")]
    s = scheduler(nodes, edges)
    assert s.plan.back_edges == frozenset({"2"})
    s.begin()
    (entry,) = s.finish("s")
    assert s.loop_step("l", from_body=entry.from_body, go_on=True) == "body"
    (again,) = s.finish("l", "body", all_handles=False)
    assert again.from_body and again.iteration == 1
    assert s.loop_step("l", from_body=True, go_on=True) == "body"
    (again,) = s.finish("l", "body", all_handles=False)
    assert s.loop_step("l", from_body=True, go_on=True) == "done"
    assert names(s.finish("l", "done", all_handles=False)) == ["e"]


def test_a_loop_whose_body_returns_on_two_edges_goes_on_once_per_round() -> None:
    """A condition whose true and false edges both return to the loop: one body round
    (one live arrival, one dead) starts one next iteration, and the count survives JSON."""
    nodes = [node("s", "start"), node("l", "loop", max_iterations=3),
             node("c", "condition", expression="x"), node("e", "end")]
    edges = [edge("1", "s", "l"), edge("2", "l", "c", "body"), edge("3", "c", "l", "true"),
             edge("4", "c", "l", "false"), edge("5", "l", "e", "done")]
    s = scheduler(nodes, edges)
    assert s.plan.back_edges == frozenset({"3", "4"})
    s.begin()
    (entry,) = s.finish("s")
    assert s.loop_step("l", from_body=entry.from_body, go_on=True) == "body"
    assert names(s.finish("l", "body", all_handles=False)) == ["c"]
    (again,) = s.finish("c", "true", all_handles=False)
    assert again.from_body and again.iteration == 1
    assert s.loop_step("l", from_body=True, go_on=True) == "body"
    assert names(s.finish("l", "body", all_handles=False)) == ["c"]
    arrival = s.plan.outgoing["c"][1]  # the false edge, live, then (after a crash) the true
    assert s.deliver(arrival, True) == (None, [])
    s = Scheduler(s.plan, State.load(json.loads(json.dumps(s.state.dump()))))
    activation, dead = s.deliver(s.plan.outgoing["c"][0], False)
    assert activation is not None and activation.from_body and dead == []
    assert s.state.returns == {}


def test_a_node_after_a_dead_loop_is_dead_too() -> None:
    nodes = [node("s", "start"), node("c", "condition", expression="x"),
             node("l", "loop", max_iterations=3), node("body", "template", template="x"),
             node("other", "template", template="o"), node("j", "join", mode="all"),
             node("e", "end")]
    edges = [edge("1", "s", "c"), edge("2", "c", "l", "true"), edge("3", "c", "other", "false"),
             edge("4", "l", "body", "body"), edge("5", "body", "l"), edge("6", "l", "j", "done"),
             edge("7", "other", "j"), edge("8", "j", "e")]
    s = scheduler(nodes, edges)
    s.begin()
    s.finish("s")
    assert names(s.finish("c", "false", all_handles=False)) == ["other"]
    assert names(s.finish("other")) == ["j"]  # the loop's dead 'done' edge counted
