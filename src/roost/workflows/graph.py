"""The workflow graph: node types, their JSON Schemas and handles, and the validator
(pure: no database, no web; the engine uses it too).

A graph is what an XYFlow (React Flow) canvas saves: ``nodes`` (objects with ``id``,
``type``, ``position``, ``data`` and whatever else the canvas keeps: ``width``,
``selected``...), ``edges`` (``id``, ``source``, ``target``, optional ``sourceHandle`` and
``targetHandle``...) and a ``viewport`` (``x``, ``y``, ``zoom``).  Roost stores them as
they come and validates only what it executes: a node's ``id``, ``type`` and ``data``
(per type, :data:`NODE_TYPES`), every edge's ends and handles, and the graph's shape:
exactly one ``start``, at least one ``end``, every node reachable from the start, no
cycle except one that goes back into a ``loop`` node from its ``body`` (see
:func:`loop_return_edges`).

:func:`validate_graph` returns every problem found (up to :data:`MAX_ISSUES`), each
naming the node or edge by id; :func:`size_problem` is checked first and alone, so a
graph of 10,000 nodes is refused before any per-node work.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from roost.inputs import is_invisible
from roost.workflows.expressions import (
    MAX_TEMPLATE_CHARS,
    ExpressionError,
    TemplateRejected,
    check_template,
    compile_expression,
)

MAX_NODES: Final = 1000
MAX_EDGES: Final = 5000
MAX_ISSUES: Final = 100
MAX_ID_CHARS: Final = 255
# A node's canvas position (x, y) lies within this of the origin: the console draws the
# graph's extent (1e308 - -1e308 is Infinity: no drawing at all).
MAX_POSITION: Final = 1_000_000
MAX_JSON_DEPTH: Final = 32
# Templates a graph may hold: each is parsed at save (tens of microseconds) and rendered by
# a run, so a small body of many short strings must not buy seconds of work.
MAX_ARGUMENT_TEMPLATES: Final = 1000  # strings in one tool node's arguments, at any depth
MAX_TEMPLATES: Final = 10_000  # in the whole graph
# An approval waits at most a year (a larger delay is past what a date can hold).
MAX_APPROVAL_TIMEOUT_S: Final = 365 * 24 * 3600
# The most output tokens an llm node asks for (a larger max_tokens is refused at save).
MAX_LLM_OUTPUT_TOKENS: Final = 4096
# Names templates already give a meaning (the run's inputs, every node's output): an
# input, an output_key or a node id so named would be shadowed, so none may take them.
RESERVED_NAMES: Final = frozenset({"inputs", "nodes"})

# Ids a URL cannot carry as a path segment: browsers drop them (even percent-encoded), so
# an approval so named could not be decided from the console.  Refused at save only: a
# stored version keeps running.
DOT_SEGMENTS: Final = frozenset({".", ".."})

DEFAULT_VIEWPORT: Final[dict[str, Any]] = {"x": 0, "y": 0, "zoom": 1}

Handle = str | None  # None: the node's single, unnamed handle (XYFlow's null handle id)


@dataclass(frozen=True)
class NodeType:
    """What a node of one type holds and how it connects."""

    name: str
    description: str
    schema: dict[str, Any]
    inputs: frozenset[Handle]
    """Target handles edges may end at (empty: no incoming edge, the start)."""
    outputs: frozenset[Handle]
    """Source handles edges may leave from (empty: no outgoing edge, an end)."""
    templates: tuple[str, ...] = ()
    """``data`` fields that are Jinja2 templates (compiled in the sandbox at save)."""
    template_objects: tuple[str, ...] = ()
    """``data`` fields that are objects whose string values are templates."""
    expressions: tuple[str, ...] = ()
    """``data`` fields that are safe expressions (roost.workflows.expressions)."""
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.schema)
        object.__setattr__(self, "validator", Draft202012Validator(self.schema))


_ONE: Final[frozenset[Handle]] = frozenset({None})
_NONE: Final[frozenset[Handle]] = frozenset()
_LABEL: Final = {"type": "string", "maxLength": 200}
_TEMPLATE: Final = {"type": "string", "maxLength": MAX_TEMPLATE_CHARS}
_NAME: Final = {"type": "string", "minLength": 1, "maxLength": 255}
# A name templates see (an input, an output_key), without anchors: use re.fullmatch.
IDENTIFIER: Final = "[A-Za-z][A-Za-z0-9_]{0,63}"
# Patterns end in \Z, not $: jsonschema uses re.search, where $ also matches before a
# final newline ("q\n" would pass).
_IDENT: Final = {"type": "string", "pattern": f"^{IDENTIFIER}\\Z"}
_HEX: Final = "[0-9a-fA-F]"
_UUID: Final = {"type": "string",
                "pattern": f"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\\Z"}


def _schema(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    # Other keys stay allowed: canvases keep their own things (icons, colours) in data.
    return {"type": "object", "properties": {"label": _LABEL, "output_key": _IDENT,
                                             **properties},
            "required": list(required)}


NODE_TYPES: Final[dict[str, NodeType]] = {t.name: t for t in (
    NodeType("start", "Where a run begins; data.inputs names the run's input variables.",
             _schema({"inputs": {"type": "array", "items": _IDENT, "maxItems": 100,
                                 "uniqueItems": True}}),
             inputs=_NONE, outputs=_ONE),
    NodeType("end", "Where a branch of a run ends; data.output (a template) is its result.",
             _schema({"output": _TEMPLATE}), inputs=_ONE, outputs=_NONE,
             templates=("output",)),
    NodeType("llm", "Call a model with a templated prompt.",
             _schema({"prompt": {**_TEMPLATE, "minLength": 1}, "system": _TEMPLATE,
                      "model": _NAME, "provider": _NAME,
                      "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                      "max_tokens": {"type": "integer", "minimum": 1,
                                     "maximum": MAX_LLM_OUTPUT_TOKENS}},
                     ["prompt"]),
             inputs=_ONE, outputs=_ONE, templates=("prompt", "system")),
    NodeType("agent", "Run one of your agents (slug or id) with a templated input.",
             _schema({"agent": _NAME, "input": {**_TEMPLATE, "minLength": 1}},
                     ["agent", "input"]),
             inputs=_ONE, outputs=_ONE, templates=("input",)),
    NodeType("tool", "Call a tool (name or id); string argument values are templates.",
             _schema({"tool": _NAME, "arguments": {"type": "object", "maxProperties": 100}},
                     ["tool"]),
             inputs=_ONE, outputs=_ONE, template_objects=("arguments",)),
    NodeType("knowledge", "Retrieve passages from the knowledge base with a templated query.",
             _schema({"query": {**_TEMPLATE, "minLength": 1},
                      "top_k": {"type": "integer", "minimum": 1, "maximum": 100},
                      "document_ids": {"type": "array", "items": _UUID, "maxItems": 1000}},
                     ["query"]),
             inputs=_ONE, outputs=_ONE, templates=("query",)),
    NodeType("template", "Render a template into a value for the nodes after it (no call).",
             _schema({"template": _TEMPLATE}, ["template"]),
             inputs=_ONE, outputs=_ONE, templates=("template",)),
    NodeType("condition", "Branch on a safe expression: handles 'true' and 'false'.",
             _schema({"expression": {"type": "string", "minLength": 1, "maxLength": 1000}},
                     ["expression"]),
             inputs=_ONE, outputs=frozenset({"true", "false"}), expressions=("expression",)),
    NodeType("parallel", "Fan out: every outgoing edge runs, concurrently.",
             _schema({}), inputs=_ONE, outputs=_ONE),
    NodeType("join", "Wait for incoming branches: mode 'all' (default) or 'any'.",
             _schema({"mode": {"enum": ["all", "any"]}}), inputs=_ONE, outputs=_ONE),
    NodeType("approval", "Pause until an API call approves or rejects: handles 'approved' "
                         "and 'rejected'.",
             _schema({"message": _TEMPLATE,
                      "approvers": {"type": "array", "items": _NAME, "maxItems": 100},
                      "timeout_s": {"type": "integer", "minimum": 1,
                                    "maximum": MAX_APPROVAL_TIMEOUT_S}}),
             inputs=_ONE, outputs=frozenset({"approved", "rejected"}), templates=("message",)),
    NodeType("loop", "Repeat: 'body' while data.condition holds (at most max_iterations "
                     "times), then 'done'. The only node a cycle may pass through.",
             _schema({"max_iterations": {"type": "integer", "minimum": 1, "maximum": 1000},
                      "condition": {"type": "string", "minLength": 1, "maxLength": 1000}},
                     ["max_iterations"]),
             inputs=_ONE, outputs=frozenset({"body", "done"}), expressions=("condition",)),
)}


# Stands in for a node of an unknown type (already reported) when checking its edges.
_UNKNOWN: Final = NodeType("unknown", "", {"type": "object"}, inputs=frozenset({None}),
                           outputs=frozenset({None}))


@dataclass(frozen=True)
class Issue:
    """One problem: a code, a message, and the node or edge it is about."""

    code: str
    message: str
    node_id: str | None = None
    edge_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "node_id": self.node_id,
                "edge_id": self.edge_id}


@dataclass(frozen=True)
class SizeProblem:
    what: str
    count: int
    limit: int

    @property
    def message(self) -> str:
        return (f"the workflow has {self.count} {self.what}; the limit is {self.limit} "
                f"{self.what} per workflow")


def size_problem(nodes: Sequence[Any], edges: Sequence[Any]) -> SizeProblem | None:
    """The first limit the graph exceeds (checked before anything else), or None."""
    if len(nodes) > MAX_NODES:
        return SizeProblem("nodes", len(nodes), MAX_NODES)
    if len(edges) > MAX_EDGES:
        return SizeProblem("edges", len(edges), MAX_EDGES)
    return None


def within(values: Iterable[Any], budget: int) -> bool:
    """Whether ``values`` hold at most ``budget`` JSON values and string characters
    together: a walk that stops once past it, so it is cheap whatever their size."""
    stack = list(values)
    spent = len(stack)
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            spent += len(item)
        elif isinstance(item, dict):
            spent += 2 * len(item)  # its keys and its values
            if spent <= budget:
                stack.extend(item)
                stack.extend(item.values())
        elif isinstance(item, list):
            spent += len(item)
            if spent <= budget:
                stack.extend(item)
        if spent > budget:
            return False
    return True


class _Issues:
    def __init__(self) -> None:
        self.items: list[Issue] = []
        self.templates = 0  # checked so far, against MAX_TEMPLATES

    def add(self, code: str, message: str, *, node: str | None = None,
            edge: str | None = None) -> None:
        if len(self.items) < MAX_ISSUES:
            self.items.append(Issue(code, message, node, edge))

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_ISSUES

    @property
    def templates_full(self) -> bool:
        return self.templates > MAX_TEMPLATES


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as jsonb (NaN, a NUL character, too deep), or None."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            return "holds NaN or Infinity, which JSON cannot store"
        if isinstance(item, str) and "\x00" in item:
            return "holds a NUL character (\\u0000), which cannot be stored"
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return "holds a NUL character (\\u0000) in a key"
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def composed_graph(nodes: list[Any], edges: list[Any]) -> tuple[list[Any], list[Any]]:
    """``nodes`` and ``edges`` with node ids and edge ends composed (NFC), as they are
    stored: "café" typed decomposed is the node "café" (an edge, an approval naming it)."""
    def nfc(value: Any) -> Any:
        return unicodedata.normalize("NFC", value) if isinstance(value, str) else value

    return ([{**n, "id": nfc(n["id"])} if isinstance(n, dict) and "id" in n else n
             for n in nodes],
            [{**e, **{k: nfc(e[k]) for k in ("source", "target") if k in e}}
             if isinstance(e, dict) else e for e in edges])


_IDENTIFIER_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def identifier(value: str) -> bool:
    """A node id templates see bare (``{{ draft }}``): ASCII letters, digits and _, not
    starting with a digit."""
    return bool(value) and not value[0].isdigit() and set(value) <= _IDENTIFIER_CHARS


def _shown_names(nodes: Sequence[Any], types: dict[str, NodeType]) -> dict[str, list[str]]:
    """Each name templates see and what gives it: a start input, a node id that is an
    identifier, a node's ``output_key`` (a node's id and its own ``output_key`` are one
    value, counted once)."""
    givers: dict[str, list[str]] = {}
    for node in nodes:
        node_id = _ident(node.get("id")) if isinstance(node, dict) else None
        if node_id is None or node_id not in types:
            continue
        data = node.get("data")
        data = data if isinstance(data, dict) else {}
        mine: dict[str, str] = {}
        if identifier(node_id):
            mine[node_id] = f"node {node_id!r}"
        key = data.get("output_key")
        if isinstance(key, str) and key and key not in mine:
            mine[key] = f"the output_key of node {node_id!r}"
        inputs = data.get("inputs") if types[node_id].name == "start" else None
        for name in inputs if isinstance(inputs, list) else []:
            if isinstance(name, str) and name not in mine:
                mine[name] = f"the start input {name!r}"
        for name, what in mine.items():
            givers.setdefault(name, []).append(what)
    return givers


def _ident(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS else None


def _schema_message(error: SchemaError) -> str:
    """Where and why, from the schema (never the value, which may be long or secret)."""
    where = "data" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
    kind, expected = error.validator, error.validator_value
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "a field"
        return f"{where}: the field {missing!r} is required"
    reasons: dict[str, Callable[[], str]] = {
        "type": lambda: f"must be of type {expected}",
        "minLength": lambda: f"must have at least {expected} character(s)",
        "maxLength": lambda: f"must have at most {expected} characters",
        "minimum": lambda: f"must be at least {expected}",
        "maximum": lambda: f"must be at most {expected}",
        "enum": lambda: f"must be one of {', '.join(map(str, expected))}",
        "pattern": lambda: f"must match {expected}",
        "maxItems": lambda: f"must have at most {expected} items",
        "maxProperties": lambda: f"must have at most {expected} keys",
        "uniqueItems": lambda: f"must not repeat {_repeat(error.instance)}",
    }
    reason = reasons.get(str(kind), lambda: f"fails the {kind} rule")()
    return f"{where}: {reason}"


def _repeat(values: Any) -> str:
    """The first repeated item, named when it is a short string (an input's name)."""
    seen: list[Any] = []
    for value in values if isinstance(values, list) else []:
        if value in seen:
            return repr(value) if isinstance(value, str) and len(value) <= 64 else "an item"
        seen.append(value)
    return "an item"


def _check_data(issues: _Issues, node_id: str, spec: NodeType, data: dict[str, Any]) -> None:
    for error in sorted(spec.validator.iter_errors(data), key=lambda e: list(e.path))[:5]:
        issues.add("invalid_data", f"{spec.name} node: {_schema_message(error)}", node=node_id)
    for name in spec.templates:
        source = data.get(name)
        if isinstance(source, str):
            _check_template(issues, node_id, f"data.{name}", source)
    for name in spec.template_objects:
        # The run renders every string at any depth (nodes._rendered_arguments): each is
        # checked here, iteratively; deeper than MAX_JSON_DEPTH is refused anyway.
        values = data.get(name)
        stack: list[tuple[str, Any, int]] = [
            (f"data.{name}.{key}", value, 1) for key, value in reversed(values.items())
        ] if isinstance(values, dict) else []
        strings = 0
        while stack and not issues.full and not issues.templates_full:
            where, value, depth = stack.pop()
            if isinstance(value, str):
                strings += 1
                if strings > MAX_ARGUMENT_TEMPLATES:
                    issues.add("too_many_templates",
                               f"data.{name} holds more than {MAX_ARGUMENT_TEMPLATES} strings "
                               f"(each is a template); the limit is {MAX_ARGUMENT_TEMPLATES} "
                               "per node", node=node_id)
                    break
                _check_template(issues, node_id, where, value)
            elif depth < MAX_JSON_DEPTH and isinstance(value, dict):
                stack.extend((f"{where}.{key}", child, depth + 1)
                             for key, child in reversed(value.items()))
            elif depth < MAX_JSON_DEPTH and isinstance(value, list):
                stack.extend((f"{where}[{i}]", child, depth + 1)
                             for i, child in reversed(list(enumerate(value))))
    for field_name, names in _named(spec, data):
        for reserved in sorted(RESERVED_NAMES & names):
            issues.add("invalid_data", f"{spec.name} node: data.{field_name}: {reserved!r} is "
                                       "reserved (templates see the run's inputs as 'inputs' "
                                       "and every node's output as 'nodes')", node=node_id)
    for name in spec.expressions:
        source = data.get(name)
        if isinstance(source, str):
            try:
                compile_expression(source)
            except ExpressionError as exc:
                issues.add("invalid_expression", f"data.{name}: {exc}", node=node_id)


def _named(spec: NodeType, data: dict[str, Any]) -> list[tuple[str, set[str]]]:
    """The names ``data`` gives template variables: ``output_key``, a start's ``inputs``."""
    found = [("output_key", {data["output_key"]})] if isinstance(data.get("output_key"),
                                                                  str) else []
    inputs = data.get("inputs") if spec.name == "start" else None
    if isinstance(inputs, list):
        found.append(("inputs", {i for i in inputs if isinstance(i, str)}))
    return found


def _check_template(issues: _Issues, node_id: str, where: str, source: str) -> None:
    issues.templates += 1
    if issues.templates_full:  # reported once, at the first template past the limit
        if issues.templates == MAX_TEMPLATES + 1:
            issues.add("too_many_templates",
                       f"the workflow holds more than {MAX_TEMPLATES} templates; the limit "
                       f"is {MAX_TEMPLATES} per workflow", node=node_id)
        return
    try:
        check_template(source)
    except TemplateRejected as exc:
        issues.add("invalid_template", f"{where}: {exc}", node=node_id)


def _handle(value: Any) -> tuple[bool, Handle]:
    """(well-formed, handle id): absent or null is the unnamed handle."""
    if value is None:
        return True, None
    return (True, value) if isinstance(value, str) and len(value) <= MAX_ID_CHARS else (False, None)


def _show(handle: Handle) -> str:
    return "the default (null) handle" if handle is None else f"handle {handle!r}"


def _allowed(handles: frozenset[Handle]) -> str:
    if not handles:
        return "none"
    return ", ".join(sorted("null" if h is None else repr(h) for h in handles))


def _finite(value: Any) -> TypeGuard[int | float]:
    """A number a float holds: not NaN or Infinity, nor an integer past a float's range
    (10**400: math.isfinite raises OverflowError on it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def validate_viewport(viewport: Any) -> list[Issue]:
    if not isinstance(viewport, dict):
        return [Issue("invalid_viewport", "viewport must be an object {x, y, zoom}")]
    issues = []
    for key in ("x", "y", "zoom"):
        value = viewport.get(key)
        if not _finite(value):
            issues.append(Issue("invalid_viewport", f"viewport.{key} must be a finite number"))
        elif key == "zoom" and value <= 0:
            issues.append(Issue("invalid_viewport", "viewport.zoom must be greater than 0"))
    problem = _json_problem(viewport)
    if problem:
        issues.append(Issue("invalid_viewport", f"viewport {problem}"))
    return issues


def validate_graph(nodes: Sequence[Any], edges: Sequence[Any],
                   viewport: Any = None) -> list[Issue]:
    """Every problem of the graph (at most :data:`MAX_ISSUES`), or an empty list.  The
    caller checks :func:`size_problem` first."""
    issues = _Issues()
    if viewport is not None:
        for issue in validate_viewport(viewport):
            issues.add(issue.code, issue.message)

    types: dict[str, NodeType] = {}
    # Ids compared composed (NFC): "café" typed composed and decomposed look the same on
    # the canvas, and an approval or a template naming one form would miss the other.
    seen_ids: set[str] = set()
    for index, node in enumerate(nodes):
        if not isinstance(node, dict):
            issues.add("invalid_node", f"nodes[{index}] is not an object")
            continue
        node_id = _ident(node.get("id"))
        if node_id is None:
            issues.add("invalid_node", f"nodes[{index}] has no id (a string of 1 to "
                                       f"{MAX_ID_CHARS} characters)")
            continue
        if node_id in types or unicodedata.normalize("NFC", node_id) in seen_ids:
            issues.add("duplicate_node_id", f"node {node_id!r} appears more than once",
                       node=node_id)
            continue
        seen_ids.add(unicodedata.normalize("NFC", node_id))
        if any(is_invisible(c) and not c.isspace() for c in node_id):
            # "ask" and "ask" + a zero-width space look alike on the canvas and in a URL.
            issues.add("invalid_node", f"node id {node_id!r} holds an invisible character "
                                       "(a zero-width space, a joiner, a bidi mark...); "
                                       "type it again without", node=node_id)
        if node_id in DOT_SEGMENTS:
            issues.add("invalid_node", f"node id {node_id!r} cannot be used in a URL (the "
                                       "approvals route names the node); choose another id",
                       node=node_id)
        if node_id in RESERVED_NAMES:
            issues.add("invalid_node", f"node id {node_id!r} is reserved (templates see the "
                                       "run's inputs as 'inputs' and every node's output as "
                                       "'nodes'); choose another id", node=node_id)
        problem = _json_problem(node)
        if problem:
            issues.add("invalid_node", f"node {node_id!r} {problem}", node=node_id)
        position = node.get("position")
        if isinstance(position, dict) and not all(
                _finite(position.get(axis)) and abs(position[axis]) <= MAX_POSITION
                for axis in ("x", "y") if axis in position):
            issues.add("invalid_position", f"node {node_id!r}: position x and y must be "
                       f"numbers from -{MAX_POSITION:,} to {MAX_POSITION:,}", node=node_id)
        kind = node.get("type")
        spec = NODE_TYPES.get(kind) if isinstance(kind, str) else None
        if spec is None:
            shown = f"unknown type {kind[:64]!r}" if isinstance(kind, str) else "no type"
            issues.add("unknown_node_type",
                       f"node {node_id!r} has {shown}; known types are "
                       f"{', '.join(NODE_TYPES)}", node=node_id)
            types[node_id] = _UNKNOWN
            continue
        types[node_id] = spec
        data = node.get("data", {})
        if not isinstance(data, dict):
            issues.add("invalid_data", f"node {node_id!r}: data must be an object", node=node_id)
            continue
        _check_data(issues, node_id, spec, data)
        if issues.full:
            return issues.items

    for name, what in _shown_names(nodes, types).items():
        if len(what) > 1:  # templates would see one of them: whichever was set last
            issues.add("invalid_data", f"the name {name!r} is given by {what[0]} and by "
                       f"{what[1]}: templates see one name for both; rename one")

    starts = [n for n, t in types.items() if t.name == "start"]
    if len(starts) != 1:
        issues.add("start_count",
                   "the workflow has no start node; add exactly one" if not starts else
                   f"the workflow has {len(starts)} start nodes "
                   f"({', '.join(map(repr, starts[:5]))}); keep exactly one",
                   node=starts[1] if len(starts) > 1 else None)
    if nodes and not any(t.name == "end" for t in types.values()):
        issues.add("no_end", "the workflow has no end node; add at least one")

    successors: dict[str, list[str]] = {n: [] for n in types}
    incoming: dict[str, int] = dict.fromkeys(types, 0)
    outgoing: dict[str, int] = dict.fromkeys(types, 0)
    edge_ids: set[str] = set()
    links: set[tuple[str, Handle, str, Handle]] = set()
    kept: list[tuple[str, str, Handle, str]] = []
    for index, edge in enumerate(edges):
        if not isinstance(edge, dict):
            issues.add("invalid_edge", f"edges[{index}] is not an object")
            continue
        edge_id = _ident(edge.get("id"))
        if edge_id is None:
            issues.add("invalid_edge", f"edges[{index}] has no id (a string of 1 to "
                                       f"{MAX_ID_CHARS} characters)")
            continue
        if edge_id in edge_ids:
            issues.add("duplicate_edge_id", f"edge {edge_id!r} appears more than once",
                       edge=edge_id)
            continue
        edge_ids.add(edge_id)
        problem = _json_problem(edge)
        if problem:
            issues.add("invalid_edge", f"edge {edge_id!r} {problem}", edge=edge_id)
        source, target = _ident(edge.get("source")), _ident(edge.get("target"))
        ends_ok = True
        for end, value in (("source", source), ("target", target)):
            if value is None or value not in types:
                issues.add("dangling_edge",
                           f"edge {edge_id!r}: its {end} is not a node of this workflow"
                           if value is not None else f"edge {edge_id!r} has no {end}",
                           edge=edge_id)
                ends_ok = False
        if not ends_ok or source is None or target is None:
            continue
        ok_s, source_handle = _handle(edge.get("sourceHandle"))
        ok_t, target_handle = _handle(edge.get("targetHandle"))
        s_spec, t_spec = types[source], types[target]
        if s_spec is not _UNKNOWN and (not ok_s or source_handle not in s_spec.outputs):
            issues.add("invalid_handle",
                       f"edge {edge_id!r}: the {s_spec.name} node {source!r} has no output "
                       f"{_show(source_handle) if ok_s else 'handle of that form'} "
                       f"(its outputs: {_allowed(s_spec.outputs)})", edge=edge_id)
            continue
        if t_spec is not _UNKNOWN and (not ok_t or target_handle not in t_spec.inputs):
            issues.add("invalid_handle",
                       f"edge {edge_id!r}: the {t_spec.name} node {target!r} has no input "
                       f"{_show(target_handle) if ok_t else 'handle of that form'} "
                       f"(its inputs: {_allowed(t_spec.inputs)})", edge=edge_id)
            continue
        link = (source, source_handle, target, target_handle)
        if link in links:
            issues.add("duplicate_edge", f"edge {edge_id!r} repeats another edge between the "
                                         "same handles", edge=edge_id)
            continue
        links.add(link)
        kept.append((edge_id, source, source_handle, target))
        successors[source].append(target)
        outgoing[source] += 1
        incoming[target] += 1

    for node_id, spec in types.items():
        if spec.name == "parallel" and outgoing[node_id] < 2:
            issues.add("parallel_branches", f"parallel node {node_id!r} needs at least two "
                                            "outgoing edges (one per branch)", node=node_id)
        if spec.name == "join" and incoming[node_id] < 2:
            issues.add("join_inputs", f"join node {node_id!r} needs at least two incoming "
                                      "edges", node=node_id)

    if len(starts) == 1:
        reached = _reachable(starts[0], successors)
        for node_id in types:
            if node_id not in reached:
                issues.add("unreachable", f"node {node_id!r} cannot be reached from the start "
                                          f"node {starts[0]!r}", node=node_id)
    loops = {n for n, t in types.items() if t.name == "loop"}
    returns = loop_return_edges(loops, kept)
    for loop in sorted(loops):
        if not any(edge_id in returns and target == loop for edge_id, _, _, target in kept):
            issues.add("loop_no_return",
                       f"loop node {loop!r}: its 'body' output never leads back to it, so "
                       "no iteration would end and its 'done' output would never go on; "
                       "connect the body's last node back to the loop", node=loop)
    forward: dict[str, list[str]] = {n: [] for n in types}
    for edge_id, source, _, target in kept:
        if edge_id not in returns:
            forward[source].append(target)
    for cycle in _cycles(forward):
        shown = " -> ".join(repr(n) for n in cycle[:8]) + (" ..." if len(cycle) > 8 else "")
        issues.add("cycle", f"cycle that does not return through a loop node's body: "
                            f"{shown}; route repetition through a loop node's 'body' output "
                            "(what follows its 'done' output must not lead back into it)",
                   node=cycle[0])
    return issues.items


def loop_return_edges(loops: Iterable[str],
                      edges: Sequence[tuple[str, str, Handle, str]]) -> set[str]:
    """The ids of the edges by which each loop's body hands back to the loop: edges
    ``(id, source, source_handle, target)`` into a loop node from a node its ``body``
    output reaches without passing through the loop, or from the loop's own ``body``
    output straight back to itself; an edge from a node its ``done`` output also reaches
    that way is not one (leaving the loop must not lead back into it).  The validator
    refuses any cycle left once these edges are removed; the engine counts an arrival on
    one as the loop's next iteration, not a fresh entry."""
    outgoing: dict[str, list[tuple[str, Handle, str]]] = {}
    incoming: dict[str, list[tuple[str, str]]] = {}
    for edge_id, source, handle, target in edges:
        outgoing.setdefault(source, []).append((edge_id, handle, target))
        incoming.setdefault(target, []).append((edge_id, source))

    def reached(loop: str, handle: str) -> set[str]:
        seen: set[str] = set()
        todo = [t for _, h, t in outgoing.get(loop, ()) if h == handle]
        while todo:
            current = todo.pop()
            if current in seen or current == loop:
                continue
            seen.add(current)
            todo.extend(t for _, _, t in outgoing.get(current, ()))
        return seen

    found: set[str] = set()
    for loop in loops:
        body, after = reached(loop, "body"), reached(loop, "done")
        found.update(e for e, h, t in outgoing.get(loop, ()) if h == "body" and t == loop)
        found.update(e for e, source in incoming.get(loop, ())
                     if source in body and source not in after)
    return found


def _reachable(start: str, successors: dict[str, list[str]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for nxt in successors[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of ``graph`` that holds one (Tarjan,
    iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = graph[node]
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(list(reversed(component)))
    return found


# --- versions: hashing and diffing ---------------------------------------------------------


def content_hash(nodes: Sequence[Any], edges: Sequence[Any], viewport: Any) -> str:
    """sha256 of the graph's canonical JSON (sorted keys): equal graphs, equal hashes."""
    canonical = json.dumps({"nodes": nodes, "edges": edges, "viewport": viewport},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _by_id(items: Iterable[Any]) -> dict[str, dict[str, Any]]:
    return {str(i["id"]): i for i in items if isinstance(i, dict) and "id" in i}


def diff_items(before: Iterable[Any], after: Iterable[Any]) -> dict[str, Any]:
    """Added, removed and changed ids (with the top-level keys that changed)."""
    old, new = _by_id(before), _by_id(after)
    changed = []
    for item_id in old.keys() & new.keys():
        a, b = old[item_id], new[item_id]
        if a != b:
            keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            changed.append({"id": item_id, "fields": keys})
    return {"added": sorted(new.keys() - old.keys()), "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(changed, key=lambda c: c["id"])}
