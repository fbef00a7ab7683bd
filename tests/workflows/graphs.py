"""Graphs for the workflow tests, in the shape an XYFlow canvas saves."""

from __future__ import annotations

from typing import Any


def node(node_id: str, kind: str, x: float = 0, y: float = 0, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": kind, "position": {"x": x, "y": y}, "data": data}


def edge(edge_id: str, source: str, target: str, source_handle: str | None = None,
         **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"id": edge_id, "source": source, "target": target, **extra}
    if source_handle is not None:
        found["sourceHandle"] = source_handle
    return found


def ten_node_graph() -> dict[str, Any]:
    """start -> llm -> parallel -> (agent, knowledge, tool) -> join -> condition
    -> true: end / false: approval -> approved: end.  Ten nodes, as a canvas keeps them
    (sizes, selection, measured...)."""
    nodes = [
        {**node("start", "start", 0, 0, inputs=["question"], label="Start"),
         "width": 150, "height": 40, "selected": False, "dragging": False},
        node("ask", "llm", 200, 0, prompt="Answer briefly: {{ question }}",
             model="stub-model", temperature=0.2),
        node("fan", "parallel", 400, 0),
        node("helper", "agent", 600, -100, agent="helper", input="{{ ask.output }}"),
        node("docs", "knowledge", 600, 0, query="{{ question }}", top_k=4),
        node("search", "tool", 600, 100, tool="web_search",
             arguments={"q": "{{ question }}", "limit": 3}),
        node("merge", "join", 800, 0, mode="all"),
        node("check", "condition", 1000, 0,
             expression="merge['score'] >= 0.5 and 'yes' in merge['labels']"),
        {**node("review", "approval", 1200, 100, message="Publish {{ ask.output }}?"),
         "measured": {"width": 180, "height": 60}, "className": "approval-node"},
        node("done", "end", 1400, 0, output="{{ ask.output }}"),
    ]
    edges = [
        edge("e-start-ask", "start", "ask", animated=True),
        edge("e-ask-fan", "ask", "fan"),
        edge("e-fan-helper", "fan", "helper"),
        edge("e-fan-docs", "fan", "docs"),
        edge("e-fan-search", "fan", "search"),
        edge("e-helper-merge", "helper", "merge"),
        edge("e-docs-merge", "docs", "merge"),
        edge("e-search-merge", "search", "merge"),
        edge("e-merge-check", "merge", "check"),
        edge("e-check-done", "check", "done", "true", label="ok", style={"stroke": "#0a0"}),
        edge("e-check-review", "check", "review", "false", targetHandle=None),
        edge("e-review-done", "review", "done", "approved"),
    ]
    return {"nodes": nodes, "edges": edges, "viewport": {"x": -12.5, "y": 40, "zoom": 0.75}}


def simple_graph(prompt: str = "Summarize: {{ input }}") -> dict[str, Any]:
    return {"nodes": [node("s", "start"), node("l", "llm", prompt=prompt), node("e", "end")],
            "edges": [edge("e1", "s", "l"), edge("e2", "l", "e")],
            "viewport": {"x": 0, "y": 0, "zoom": 1}}


def template_loop(iterations: int, body: str = "b") -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """start -> a loop of ``iterations`` over one template node ``body`` -> end: its nodes
    and edges (an inline-only graph, computed without any model or tool)."""
    nodes = [node("start", "start"), node("lp", "loop", max_iterations=iterations),
             node(body, "template", template="x"), node("done", "end", output="y")]
    edges = [edge("e1", "start", "lp"), edge("e2", "lp", body, "body"),
             edge("e3", body, "lp"), edge("e4", "lp", "done", "done")]
    return nodes, edges
