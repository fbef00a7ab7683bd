"""The workflow scheduler, pure (no database): which nodes a finished node activates.

A run's progress is the state of its edges.  When a node finishes it *delivers* on each
outgoing edge: **live** when the edge leaves a handle the node chose (a condition's
``true``, an approval's ``rejected``; nodes with one output choose it), **dead**
otherwise.  What a node does with what arrives (:meth:`Scheduler.deliver`):

* most nodes run once per live arrival (several incoming edges merge: the first branch to
  arrive runs the node, as does each later one); when every incoming edge has delivered
  and none was live, the node is dead and delivers dead on all its outgoing edges (so a
  join downstream of an untaken branch stops waiting for it);
* ``join`` ``all`` runs once every incoming edge has delivered and one at least was live;
  ``join`` ``any`` runs on the first live arrival, and absorbs the rest of that round;
* ``loop`` runs once per round of its return edges (the edges back from its body: once
  each has delivered, live or dead, the body is over either way: a condition whose two
  outcomes both return makes one iteration, not two) and on each live arrival from
  outside; a loop never reached delivers dead on its ``done`` edges only.  Its body's
  edges stay untouched when it exits.

"Round": a node's arrivals are counted until every incoming edge delivered once, then
the count starts again (a node inside a loop body sees one round per iteration).  The
counts live in :class:`State` (stored with the run, in ``workflow_runs.state``), so a
scheduler rebuilt after a crash goes on exactly where the committed state left it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from roost.workflows.graph import Handle, loop_return_edges

# Nodes the engine computes itself, in the transaction that finished their predecessor
# (no input or output: nothing to retry).  The others (model, agent, tool and knowledge
# calls) run in a queue job.
INLINE_TYPES: Final = frozenset({"start", "end", "parallel", "join", "condition", "loop",
                                 "template", "approval"})


@dataclass(frozen=True)
class Edge:
    id: str
    source: str
    handle: Handle
    target: str


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """A validated graph, indexed for the scheduler."""

    nodes: dict[str, Node]
    start: str
    outgoing: dict[str, tuple[Edge, ...]]
    incoming: dict[str, tuple[Edge, ...]]
    back_edges: frozenset[str]  # edges into a loop node from its own body (or itself)

    def entries(self, node_id: str) -> int:
        """How many incoming edges make up one round (a loop's body edges do not)."""
        return sum(1 for e in self.incoming[node_id] if e.id not in self.back_edges)


def _handle(value: Any) -> Handle:
    return value if isinstance(value, str) and value else None


def make_plan(nodes: list[Any], edges: list[Any]) -> Plan:
    """Index a graph that passed :func:`roost.workflows.graph.validate_graph`."""
    by_id = {str(n["id"]): Node(str(n["id"]), str(n["type"]), dict(n.get("data") or {}))
             for n in nodes}
    outgoing: dict[str, list[Edge]] = {n: [] for n in by_id}
    incoming: dict[str, list[Edge]] = {n: [] for n in by_id}
    for raw in edges:
        edge = Edge(str(raw["id"]), str(raw["source"]), _handle(raw.get("sourceHandle")),
                    str(raw["target"]))
        outgoing[edge.source].append(edge)
        incoming[edge.target].append(edge)
    start = next(n.id for n in by_id.values() if n.type == "start")
    back = loop_return_edges((n.id for n in by_id.values() if n.type == "loop"),
                             [(e.id, e.source, e.handle, e.target)
                              for out in outgoing.values() for e in out])
    return Plan(nodes=by_id, start=start,
                outgoing={k: tuple(v) for k, v in outgoing.items()},
                incoming={k: tuple(v) for k, v in incoming.items()},
                back_edges=frozenset(back))


@dataclass(frozen=True)
class Activation:
    """A node to run: its ``iteration`` (0, 1, ... each time it runs in this run) and
    whether a loop's body brought it there (the loop goes on rather than starts over)."""

    node_id: str
    iteration: int
    from_body: bool = False
    arrived: tuple[str, ...] | None = field(default=None, compare=False)
    """A join's: the nodes whose branches arrived live this round (None: not a join)."""


@dataclass
class State:
    """The scheduler's counters, as stored with the run (JSON)."""

    rounds: dict[str, list[int]] = field(default_factory=dict)  # node: [seen, live, fired]
    iterations: dict[str, int] = field(default_factory=dict)  # node: activations so far
    loops: dict[str, int] = field(default_factory=dict)  # loop: body iterations this time
    returns: dict[str, int] = field(default_factory=dict)  # loop: return edges delivered
    arrived: dict[str, list[str]] = field(default_factory=dict)  # join: live sources this round

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> State:
        raw = raw or {}
        return cls(rounds={k: list(v) for k, v in (raw.get("rounds") or {}).items()},
                   iterations=dict(raw.get("iterations") or {}),
                   loops=dict(raw.get("loops") or {}),
                   returns=dict(raw.get("returns") or {}),
                   arrived={k: list(v) for k, v in (raw.get("arrived") or {}).items()})

    def dump(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "iterations": self.iterations, "loops": self.loops,
                "returns": self.returns, "arrived": self.arrived}


class Scheduler:
    def __init__(self, plan: Plan, state: State) -> None:
        self.plan, self.state = plan, state

    def begin(self) -> Activation:
        return self._activate(self.plan.start)

    def _activate(self, node_id: str, *, from_body: bool = False,
                  arrived: tuple[str, ...] | None = None) -> Activation:
        iteration = self.state.iterations.get(node_id, 0)
        self.state.iterations[node_id] = iteration + 1
        return Activation(node_id, iteration, from_body, arrived)

    def finish(self, node_id: str, chosen: Handle | None = None, *,
               all_handles: bool = True) -> list[Activation]:
        """``node_id`` finished choosing ``chosen`` (or, with ``all_handles``, every
        output): deliver on its edges; returns the nodes that must run now."""
        node = self.plan.nodes[node_id]
        arrivals: deque[tuple[Edge, bool]] = deque()
        for edge in self.plan.outgoing[node_id]:
            live = all_handles or edge.handle == chosen
            if not live and node.type == "loop" and edge.handle == "body":
                continue  # an exiting loop leaves its body alone
            if not live and node.type == "loop" and chosen == "body":
                continue  # an iterating loop tells nothing yet to what follows it
            arrivals.append((edge, live))
        return self._deliver_all(arrivals)

    def _deliver_all(self, arrivals: deque[tuple[Edge, bool]]) -> list[Activation]:
        ready: list[Activation] = []
        while arrivals:
            edge, live = arrivals.popleft()
            activation, dead = self.deliver(edge, live)
            if activation is not None:
                ready.append(activation)
            for out in dead:
                arrivals.append((out, False))
        return ready

    def deliver(self, edge: Edge, live: bool) -> tuple[Activation | None, list[Edge]]:
        """One arrival at ``edge.target``: the activation it causes, if any, and the
        edges on which the target now delivers dead (it will never run this round)."""
        target = self.plan.nodes[edge.target]
        outgoing = self.plan.outgoing[target.id]
        if target.type == "loop" and edge.id in self.plan.back_edges:
            return self._returned(target.id), []
        round_ = self.state.rounds.setdefault(target.id, [0, 0, 0])
        round_[0] += 1
        round_[1] += int(live)
        expected = self.plan.entries(target.id)
        complete = round_[0] >= expected
        activation: Activation | None = None
        mode = target.data.get("mode", "all") if target.type == "join" else None
        if mode is not None and live:  # what the join's output lists: this round's only
            sources = self.state.arrived.setdefault(target.id, [])
            if edge.source not in sources:
                sources.append(edge.source)
        if mode == "all":
            if complete and round_[1] > 0:
                activation = self._activate(target.id,
                                            arrived=tuple(self.state.arrived[target.id]))
        elif mode == "any":
            if live and not round_[2]:
                round_[2] = 1
                activation = self._activate(target.id, arrived=(edge.source,))
        elif live:
            activation = self._activate(target.id)
        dead: list[Edge] = []
        if complete:
            if round_[1] == 0:  # nothing live came: the node is dead this round
                dead = [e for e in outgoing
                        if target.type != "loop" or e.handle == "done"]
            del self.state.rounds[target.id]
            self.state.arrived.pop(target.id, None)
        return activation, dead

    def _returned(self, loop_id: str) -> Activation | None:
        """One return edge of ``loop_id`` delivered: the loop goes on once all of them
        did (one body round), however many they are and whichever were live."""
        expected = sum(1 for e in self.plan.incoming[loop_id] if e.id in self.plan.back_edges)
        seen = self.state.returns.get(loop_id, 0) + 1
        if seen < expected:
            self.state.returns[loop_id] = seen
            return None
        self.state.returns.pop(loop_id, None)
        return self._activate(loop_id, from_body=True)

    def loop_step(self, node_id: str, *, from_body: bool, go_on: bool) -> Handle:
        """A loop node ran: ``body`` while ``go_on`` and under its ``max_iterations``,
        else ``done`` (and the count starts again for its next entry)."""
        done_so_far = self.state.loops.get(node_id, 0) if from_body else 0
        limit = int(self.plan.nodes[node_id].data.get("max_iterations", 1))
        if go_on and done_so_far < limit:
            self.state.loops[node_id] = done_so_far + 1
            return "body"
        self.state.loops.pop(node_id, None)
        return "done"

    def loop_count(self, node_id: str, *, from_body: bool) -> int:
        """Body iterations already done by this loop in its current entry."""
        return self.state.loops.get(node_id, 0) if from_body else 0
