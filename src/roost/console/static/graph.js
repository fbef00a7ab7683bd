// A workflow graph ({nodes, edges} as an XYFlow canvas saves them) drawn as SVG by the
// console's own code: nodes at their positions (laid out in columns when positions are
// missing or overlap), edges as curves with their handle or label.  Used by the workflow
// page (problems marked) and the workflow run page (each node's status, in colour and in
// words).
import { clip as clipText } from "./console.js";

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const finite = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);
export const plain = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

export function clip(text, chars) {
  const flat = String(text).replace(/\s+/g, " ").trim();
  return clipText(flat, Math.max(2, chars), "…");
}

function nodeBox(node, index, minHeight) {
  const position = plain(node.position) ? node.position : {};
  const measured = plain(node.measured) ? node.measured : {};
  const x = finite(position.x) ?? index * 200;
  const y = finite(position.y) ?? 0;
  const w = Math.max(120, finite(node.width) ?? finite(measured.width) ?? 160);
  const h = Math.max(minHeight, finite(node.height) ?? finite(measured.height) ?? 50);
  return { x, y, w, h };
}

function overlap(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

// Nodes without positions, or on top of each other (a hand-written graph), are laid out
// in columns by their distance from the start (or from the nodes nothing leads to).
// Positions farther out than the server accepts (graphs stored before it checked them)
// are laid out here: their extent overflowed to Infinity and nothing was drawn.
const FAR = 1e6;
const far = (v) => Math.abs(v) > FAR;

function needsLayout(nodes, boxes) {
  if (nodes.some((n) => !plain(n.position) || finite(n.position.x) === null || finite(n.position.y) === null
      || far(n.position.x) || far(n.position.y))) return true;
  const all = [...boxes.values()];
  if (all.length > 300) return new Set(all.map((b) => `${b.x},${b.y}`)).size < all.length;
  for (let i = 0; i < all.length; i += 1) {
    for (let j = i + 1; j < all.length; j += 1) if (overlap(all[i], all[j])) return true;
  }
  return false;
}

function layOut(boxes, edges, rowHeight) {
  const next = new Map([...boxes.keys()].map((id) => [id, []]));
  const incoming = new Map([...boxes.keys()].map((id) => [id, 0]));
  for (const edge of edges) {
    const source = String(edge.source);
    const target = String(edge.target);
    if (next.has(source) && next.has(target)) {
      next.get(source).push(target);
      incoming.set(target, incoming.get(target) + 1);
    }
  }
  const depth = new Map();
  const queue = [...boxes.keys()].filter((id) => incoming.get(id) === 0);
  for (const id of queue) depth.set(id, 0);
  for (let i = 0; i < queue.length; i += 1) {
    for (const target of next.get(queue[i])) {
      if (!depth.has(target)) { depth.set(target, depth.get(queue[i]) + 1); queue.push(target); }
    }
  }
  const last = depth.size ? Math.max(...depth.values()) + 1 : 0;
  const columns = new Map();
  for (const id of boxes.keys()) {
    const column = depth.has(id) ? depth.get(id) : last;  // in a cycle nothing leads into
    if (!columns.has(column)) columns.set(column, []);
    columns.get(column).push(id);
  }
  for (const [column, ids] of columns) {
    ids.forEach((id, row) => {
      const box = boxes.get(id);
      box.x = column * 230;
      box.y = row * rowHeight - ((ids.length - 1) * rowHeight) / 2;
    });
  }
}

const cssName = (text) => String(text).replace(/[^a-z0-9_-]/gi, "");

// Draws {nodes, edges} into `holder` (replacing what it held).  Options:
//   bad: {nodes: Set, edges: Set} of ids with a problem (marked, and said in the titles);
//   statuses: Map node id -> {status, text}: each node gets the class `status-<status>`
//     and `text` as a third line (so colour is never the only signal); nodes missing
//     from the map are "not reached".
// Returns {nodes, edges, arranged} (arranged: laid out here, the positions overlapped).
export function drawGraph(holder, graph, { bad = { nodes: new Set(), edges: new Set() }, statuses = null } = {}) {
  const nodes = (Array.isArray(graph?.nodes) ? graph.nodes : []).filter((n) => plain(n) && n.id !== undefined);
  const edges = (Array.isArray(graph?.edges) ? graph.edges : []).filter(plain);
  if (!nodes.length) {
    holder.replaceChildren();
    return { nodes: 0, edges: edges.length, arranged: false };
  }
  const minHeight = statuses ? 66 : 46;
  const boxes = new Map();
  nodes.forEach((node, i) => { if (!boxes.has(String(node.id))) boxes.set(String(node.id), nodeBox(node, i, minHeight)); });
  const arranged = needsLayout(nodes, boxes);
  if (arranged) layOut(boxes, edges, statuses ? 110 : 90);
  const all = [...boxes.values()];
  const pad = 40;
  const minX = Math.min(...all.map((b) => b.x)) - pad;
  const minY = Math.min(...all.map((b) => b.y)) - pad;
  const width = Math.max(...all.map((b) => b.x + b.w)) - minX + pad;
  const height = Math.max(...all.map((b) => b.y + b.h)) - minY + pad;
  const badNodes = nodes.filter((n) => bad.nodes.has(String(n.id))).map((n) => String(n.id));
  let summary = `Workflow graph: ${nodes.length} node${nodes.length === 1 ? "" : "s"}, `
    + `${edges.length} edge${edges.length === 1 ? "" : "s"}`
    + (badNodes.length ? `; problems at ${badNodes.join(", ")}` : "");
  if (statuses) {
    const byText = new Map();
    for (const node of nodes) {
      const text = statuses.get(String(node.id))?.text ?? "not reached";
      if (!byText.has(text)) byText.set(text, []);
      if (!byText.get(text).includes(String(node.id))) byText.get(text).push(String(node.id));
    }
    summary += `; ${[...byText].map(([text, ids]) => `${text}: ${ids.join(", ")}`).join("; ")}`;
  }
  const chart = svg("svg", { viewBox: `${minX} ${minY} ${width} ${height}`, role: "img",
                             "aria-label": summary, focusable: "false", class: "graph-svg",
                             width: Math.round(width), height: Math.round(height),
                             preserveAspectRatio: "xMidYMin meet" },
    svg("defs", {}, svg("marker", { id: "wf-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
  // Edges under the nodes.
  for (const edge of edges) {
    const from = boxes.get(String(edge.source));
    const to = boxes.get(String(edge.target));
    if (!from || !to) continue;  // a dangling edge: listed by the validator, not drawn
    const sx = from.x + from.w;
    const sy = from.y + from.h / 2;
    const tx = to.x;
    const ty = to.y + to.h / 2;
    const dx = Math.max(40, Math.abs(tx - sx) / 2);
    const marked = bad.edges.has(String(edge.id));
    const label = typeof edge.label === "string" && edge.label ? edge.label
      : (typeof edge.sourceHandle === "string" ? edge.sourceHandle : "");
    chart.append(svg("g", { class: `wf-edge${marked ? " invalid" : ""}`, "data-edge-id": String(edge.id) },
      svg("title", {}, `${edge.id}: ${edge.source} → ${edge.target}${label ? ` (${label})` : ""}`),
      svg("path", { d: `M${sx},${sy} C${sx + dx},${sy} ${tx - dx},${ty} ${tx},${ty}`,
                    "marker-end": "url(#wf-arrow)" }),
      label ? svg("text", { x: (sx + tx) / 2, y: (sy + ty) / 2 - 6, "text-anchor": "middle",
                            class: "edge-label" }, clip(label, 24)) : null));
  }
  const drawn = new Set();
  for (const node of nodes) {
    const id = String(node.id);
    if (drawn.has(id)) continue;  // a duplicate id: drawn once, listed by the validator
    drawn.add(id);
    const box = boxes.get(id);
    const type = typeof node.type === "string" ? node.type : "?";
    const data = plain(node.data) ? node.data : {};
    const label = typeof data.label === "string" && data.label ? data.label : id;
    const marked = bad.nodes.has(id);
    const chars = Math.floor((box.w - 16) / 7.5);
    const state = statuses ? (statuses.get(id) ?? { status: "none", text: "not reached" }) : null;
    const classes = ["wf-node", `type-${cssName(type)}`, marked ? "invalid" : "",
                     state ? `status-${cssName(state.status)}` : ""].filter(Boolean).join(" ");
    chart.append(svg("g", { class: classes, "data-node-id": id, "data-status": state?.status,
                            transform: `translate(${box.x},${box.y})` },
      svg("title", {}, `${type} node ${id}${label !== id ? ` (${label})` : ""}`
                       + `${marked ? ": has a problem" : ""}${state ? `: ${state.text}` : ""}`),
      svg("rect", { width: box.w, height: box.h, rx: 8, ry: 8 }),
      svg("text", { x: 10, y: 18, class: "node-type" }, clip(marked ? `⚠ ${type}` : type, chars)),
      svg("text", { x: 10, y: 37, class: "node-label" }, clip(label, chars)),
      state ? svg("text", { x: 10, y: 56, class: "node-status" }, clip(state.text, chars)) : null));
  }
  holder.replaceChildren(chart);
  return { nodes: nodes.length, edges: edges.length, arranged };
}
