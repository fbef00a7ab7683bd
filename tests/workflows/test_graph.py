"""The graph validator (pure): one test per kind of problem, each naming the node or
edge; the ten-node graph with a parallel branch and a condition is valid."""

from __future__ import annotations

from typing import Any

import pytest

from roost.workflows.graph import (
    MAX_LLM_OUTPUT_TOKENS,
    MAX_NODES,
    NODE_TYPES,
    Issue,
    content_hash,
    diff_items,
    size_problem,
    validate_graph,
)
from tests.workflows.graphs import edge, node, simple_graph, ten_node_graph


def problems(graph: dict[str, Any]) -> list[Issue]:
    return validate_graph(graph["nodes"], graph["edges"], graph.get("viewport"))


def only(issues: list[Issue], code: str) -> Issue:
    found = [i for i in issues if i.code == code]
    assert len(found) == 1, issues
    return found[0]


def test_the_ten_node_graph_with_a_parallel_branch_and_a_condition_is_valid() -> None:
    graph = ten_node_graph()
    assert len(graph["nodes"]) == 10
    assert problems(graph) == []


def test_the_node_types() -> None:
    assert {"start", "llm", "agent", "tool", "knowledge", "condition", "parallel", "join",
            "approval", "loop", "end"} <= set(NODE_TYPES)


def test_unknown_node_type_names_the_node() -> None:
    graph = simple_graph()
    graph["nodes"][1]["type"] = "teleport"
    issue = only(problems(graph), "unknown_node_type")
    assert issue.node_id == "l" and "teleport" in issue.message and "llm" in issue.message


def test_required_data_per_type_names_the_node_and_field() -> None:
    graph = simple_graph()
    graph["nodes"][1]["data"] = {"temperature": 9}
    issues = [i for i in problems(graph) if i.code == "invalid_data"]
    assert {i.node_id for i in issues} == {"l"}
    text = " ".join(i.message for i in issues)
    assert "'prompt' is required" in text and "data.temperature: must be at most 2" in text


def test_dangling_edge_names_the_edge() -> None:
    graph = simple_graph()
    graph["edges"].append(edge("ghost", "l", "nowhere"))
    issue = only(problems(graph), "dangling_edge")
    assert issue.edge_id == "ghost" and "target" in issue.message


def test_edges_must_use_existing_handles() -> None:
    graph = ten_node_graph()
    graph["edges"][9]["sourceHandle"] = "maybe"  # condition: only true / false
    graph["edges"][0]["targetHandle"] = "side"  # llm: only its default input
    issues = [i for i in problems(graph) if i.code == "invalid_handle"]
    assert {i.edge_id for i in issues} == {"e-check-done", "e-start-ask"}
    assert any("'false', 'true'" in i.message for i in issues)


def test_an_end_has_no_output_and_a_start_no_input() -> None:
    graph = simple_graph()
    graph["edges"].append(edge("back", "e", "s"))
    issue = only(problems(graph), "invalid_handle")
    assert issue.edge_id == "back"


def test_a_cycle_without_a_loop_node_is_refused_naming_its_nodes() -> None:
    graph = {"nodes": [node("s", "start"), node("a", "llm", prompt="a"),
                       node("b", "llm", prompt="b"), node("e", "end")],
             "edges": [edge("1", "s", "a"), edge("2", "a", "b"), edge("3", "b", "a"),
                       edge("4", "b", "e")]}
    issue = only(problems(graph), "cycle")
    assert issue.node_id in {"a", "b"} and "'a'" in issue.message and "'b'" in issue.message


def test_a_cycle_through_a_loop_node_is_allowed() -> None:
    graph = {"nodes": [node("s", "start"), node("repeat", "loop", max_iterations=3,
                                                condition="attempt < 3"),
                       node("try", "llm", prompt="try {{ attempt }}"), node("e", "end")],
             "edges": [edge("1", "s", "repeat"), edge("2", "repeat", "try", "body"),
                       edge("3", "try", "repeat"), edge("4", "repeat", "e", "done")]}
    assert problems(graph) == []


def test_a_loop_whose_body_goes_straight_back_to_it_is_allowed() -> None:
    """A loop's ``body`` edge may lead back to the loop itself (an empty body)."""
    graph = {"nodes": [node("s", "start"), node("again", "loop", max_iterations=3),
                       node("e", "end")],
             "edges": [edge("1", "s", "again"), edge("2", "again", "again", "body"),
                       edge("3", "again", "e", "done")]}
    assert problems(graph) == []


@pytest.mark.parametrize("done_edges", [
    # what follows 'done' leads back into the loop
    [edge("4", "again", "t", "done"), edge("5", "t", "again")],
    # what follows 'done' is also in the body, and leads back into the loop
    [edge("4", "again", "t", "done"), edge("5", "b", "t"), edge("6", "t", "again")],
    # 'done' straight back to the loop
    [edge("4", "again", "again", "done")],
])
def test_a_cycle_back_through_a_loops_done_output_is_refused(done_edges: list[Any]) -> None:
    """Every exit of such a loop enters it afresh (its iteration count starts again): the
    run would never end, so the graph is refused naming the loop's cycle."""
    graph = {"nodes": [node("s", "start"), node("again", "loop", max_iterations=3),
                       node("b", "template", template="b"), node("t", "template", template="t"),
                       node("e", "end")],
             "edges": [edge("1", "s", "again"), edge("2", "again", "b", "body"),
                       edge("3", "b", "again"), *done_edges,
                       edge("9", "again", "e", "done")]}
    issue = only(problems(graph), "cycle")
    assert "'again'" in issue.message and "done" in issue.message


def test_nested_loops_are_allowed() -> None:
    """An inner loop's ``done`` going back to the outer loop is the outer loop's body."""
    graph = {"nodes": [node("s", "start"), node("outer", "loop", max_iterations=2),
                       node("inner", "loop", max_iterations=2),
                       node("b", "template", template="b"), node("e", "end")],
             "edges": [edge("1", "s", "outer"), edge("2", "outer", "inner", "body"),
                       edge("3", "inner", "b", "body"), edge("4", "b", "inner"),
                       edge("5", "inner", "outer", "done"), edge("6", "outer", "e", "done")]}
    assert problems(graph) == []


def test_exactly_one_start() -> None:
    none = simple_graph()
    none["nodes"][0]["type"] = "llm"
    none["nodes"][0]["data"] = {"prompt": "x"}
    assert "no start node" in only(problems(none), "start_count").message
    two = simple_graph()
    two["nodes"].append(node("s2", "start"))
    two["edges"].append(edge("e3", "s2", "l"))
    issue = only(problems(two), "start_count")
    assert issue.node_id == "s2" and "2 start nodes" in issue.message


def test_unreachable_nodes_and_duplicates_are_named() -> None:
    graph = simple_graph()
    graph["nodes"].append(node("island", "llm", prompt="alone"))
    graph["nodes"].append(node("l", "llm", prompt="again"))
    graph["edges"].append(edge("e1", "s", "l"))
    issues = problems(graph)
    assert only(issues, "unreachable").node_id == "island"
    assert only(issues, "duplicate_node_id").node_id == "l"
    assert only(issues, "duplicate_edge_id").edge_id == "e1"


def test_parallel_and_join_need_branches() -> None:
    graph = {"nodes": [node("s", "start"), node("p", "parallel"), node("j", "join"),
                       node("e", "end")],
             "edges": [edge("1", "s", "p"), edge("2", "p", "j"), edge("3", "j", "e")]}
    issues = problems(graph)
    assert only(issues, "parallel_branches").node_id == "p"
    assert only(issues, "join_inputs").node_id == "j"


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ x['__class__'] }}",
    "{{ x|attr('__class__') }}",
    "{% include '/etc/passwd' %}",
    "{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}",
    "{{ unclosed",
])
def test_hostile_or_broken_templates_are_refused_at_save(template: str) -> None:
    issue = only(problems(simple_graph(prompt=template)), "invalid_template")
    assert issue.node_id == "l" and issue.message.startswith("data.prompt: ")


@pytest.mark.parametrize("expression", [
    "x.__class__", "__import__('os').system('id')", "open('/etc/passwd')", "x.y",
    "[c for c in x]", "lambda: 1", "'a' * 10", "_secret == 1", "x[1:2]",
])
def test_hostile_expressions_are_refused_at_save(expression: str) -> None:
    graph = ten_node_graph()
    graph["nodes"][7]["data"]["expression"] = expression
    issue = only(problems(graph), "invalid_expression")
    assert issue.node_id == "check"


def test_values_jsonb_cannot_store_are_refused() -> None:
    graph = simple_graph()
    graph["nodes"][1]["data"]["temperature"] = float("nan")
    graph["edges"][0]["label"] = "nul\x00"
    issues = problems(graph)
    assert any(i.node_id == "l" and "NaN" in i.message for i in issues)
    assert any(i.edge_id == "e1" and "NUL" in i.message for i in issues)


def test_size_limits_are_checked_first() -> None:
    nodes = [node(f"n{i}", "llm", prompt="x") for i in range(10_000)]
    problem = size_problem(nodes, [])
    assert problem is not None and problem.limit == MAX_NODES
    assert "10000 nodes" in problem.message and f"limit is {MAX_NODES}" in problem.message
    assert size_problem(nodes[:MAX_NODES], []) is None


def test_hash_and_diff() -> None:
    a = ten_node_graph()
    b = ten_node_graph()
    assert content_hash(a["nodes"], a["edges"], a["viewport"]) == \
        content_hash(b["nodes"], b["edges"], b["viewport"])
    b["nodes"][1]["position"] = {"x": 5, "y": 5}
    b["nodes"].pop(2)
    b["nodes"].append(node("extra", "llm", prompt="x"))
    b["edges"].pop()
    changes = diff_items(a["nodes"], b["nodes"])
    assert changes == {"added": ["extra"], "removed": ["fan"],
                       "changed": [{"id": "ask", "fields": ["position"]}]}
    assert diff_items(a["edges"], b["edges"])["removed"] == ["e-review-done"]
    assert content_hash(a["nodes"], a["edges"], a["viewport"]) != \
        content_hash(b["nodes"], b["edges"], b["viewport"])


def _one(kind: str, **data: Any) -> dict[str, Any]:
    """start -> a node of ``kind`` with ``data`` -> end."""
    return {"nodes": [node("s", "start"), node("x", kind, **data), node("e", "end")],
            "edges": [edge("1", "s", "x"), edge("2", "x", "e")]}


@pytest.mark.parametrize("bad", ["-" * 36, "0" * 36, "a-" * 18, "0" * 32,
                                 "{12345678-1234-1234-1234-123456789abc}",
                                 "01234567-89ab-cdef-0123-456789abcdef\n"])
def test_knowledge_document_ids_that_are_not_uuids_are_refused_at_save(bad: str) -> None:
    """Only the 8-4-4-4-12 form is an id: 36 dashes once passed, and failed the run."""
    issue = only(problems(_one("knowledge", query="q", document_ids=[bad])), "invalid_data")
    assert issue.node_id == "x" and "data.document_ids[0]" in issue.message
    assert problems(_one("knowledge", query="q",
                         document_ids=["0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"])) == []


@pytest.mark.parametrize("arguments", [
    {"q": {"deep": ["{{ ''.__class__ }}"]}},
    {"q": [{"r": "{{ broken"}]},
    {"q": {"deep": "x" * 50_001}},
])
def test_nested_tool_argument_templates_are_checked_at_save(arguments: dict[str, Any]) -> None:
    """The run renders every string of a tool's arguments at any depth: each is checked at
    save like a top-level one (the sandbox, the 50,000-character limit), naming its path."""
    issue = only(problems(_one("tool", tool="t", arguments=arguments)), "invalid_template")
    assert issue.node_id == "x" and issue.message.startswith("data.arguments.q"), issue


def test_tool_arguments_nested_deeper_than_json_allows_are_refused_once() -> None:
    deep: Any = "{{ q }}"
    for _ in range(200):
        deep = {"k": [deep]}
    issues = problems(_one("tool", tool="t", arguments={"q": deep}))
    assert [i.code for i in issues] == ["invalid_node"] and "deeper" in issues[0].message


@pytest.mark.parametrize("name", ["inputs", "nodes"])
def test_names_templates_already_use_are_refused(name: str) -> None:
    """'inputs' and 'nodes' are the run's inputs and every node's output in templates: an
    input, an output_key or a node id of that name would be silently shadowed."""
    start = {"nodes": [node("s", "start", inputs=[name]), node("e", "end")],
             "edges": [edge("1", "s", "e")]}
    issue = only(problems(start), "invalid_data")
    assert issue.node_id == "s" and f"{name!r} is reserved" in issue.message
    keyed = _one("template", template="T", output_key=name)
    issue = only(problems(keyed), "invalid_data")
    assert issue.node_id == "x" and "data.output_key" in issue.message
    named = {"nodes": [node("s", "start"), node(name, "template", template="T"),
                       node("e", "end")],
             "edges": [edge("1", "s", name), edge("2", name, "e")]}
    issue = only(problems(named), "invalid_node")
    assert issue.node_id == name and "reserved" in issue.message


@pytest.mark.parametrize("name", [".", ".."])
def test_node_ids_a_url_cannot_carry_are_refused(name: str) -> None:
    """An approval's id is a segment of its decision URL, and browsers drop "." and ".."
    segments (even percent-encoded): such an approval could not be decided."""
    named = {"nodes": [node("s", "start"), node(name, "approval", message="ok?"),
                       node("e", "end")],
             "edges": [edge("1", "s", name), edge("2", name, "e", "approved")]}
    issue = only(problems(named), "invalid_node")
    assert issue.node_id == name and "URL" in issue.message


@pytest.mark.parametrize("body_edges", [
    # the body goes on to a join that 'done' feeds too: the loop never iterates
    [edge("2", "lp", "x", "body"), edge("3", "x", "j"), edge("6", "j", "e")],
    # no body edge at all
    [edge("3", "x", "j"), edge("6", "j", "e"), edge("7", "s", "x")],
])
def test_a_loop_whose_body_never_returns_to_it_is_refused(body_edges: list[Any]) -> None:
    """Such a loop never ends an iteration, so its 'done' branch never comes: a join it
    feeds would wait forever and the run end "completed" having reached no end node."""
    graph = {"nodes": [node("s", "start"), node("lp", "loop", max_iterations=3),
                       node("x", "template", template="X"), node("y", "template", template="Y"),
                       node("j", "join"), node("e", "end", output="{{ j.output }}")],
             "edges": [edge("1", "s", "lp"), edge("4", "lp", "y", "done"), edge("5", "y", "j"),
                       *body_edges]}
    issue = only(problems(graph), "loop_no_return")
    assert issue.node_id == "lp" and "back" in issue.message


def test_an_llm_nodes_max_tokens_is_at_most_what_the_node_asks_for() -> None:
    """max_tokens above MAX_LLM_OUTPUT_TOKENS was accepted, then silently lowered at run."""
    issue = only(problems(_one("llm", prompt="p", max_tokens=MAX_LLM_OUTPUT_TOKENS + 1)),
                 "invalid_data")
    assert f"data.max_tokens: must be at most {MAX_LLM_OUTPUT_TOKENS}" in issue.message
    assert problems(_one("llm", prompt="p", max_tokens=MAX_LLM_OUTPUT_TOKENS)) == []
