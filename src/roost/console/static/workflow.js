// One workflow: its graph drawn as SVG from the nodes' positions and the edges (graph.js,
// no canvas library), a JSON editor for {nodes, edges, viewport} with Validate (nothing saved; the
// problems listed by node and edge, the nodes at fault marked in the drawing) and Save,
// publishing, the versions with rollback, the diff of two versions (or a version and the
// draft), its name, description and status, and deleting it.  Its runs: workflow_runs.js.
import { api, ApiError, badge, el, formatTime, notify, pageData, problemMessage, showError } from "./console.js";
import { drawGraph as drawShared, plain } from "./graph.js";

const { workflow_id: workflowId } = pageData();
const BASE = `/api/v1/workflows/${workflowId}`;
const $ = (id) => document.getElementById(id);
const editor = $("graph-json");

let saved = null;       // the workflow as the API last returned it
let versions = [];      // newest first
let dirty = false;      // the editor differs from the saved draft
let diffPicked = false; // the reader chose what to compare

// --- the drawing (graph.js) ------------------------------------------------------------------

// Draws {nodes, edges} in the page's graph card; `bad` holds the node and edge ids with a
// problem (marked).
function drawGraph(graph, bad = { nodes: new Set(), edges: new Set() }, source = "") {
  const drawn = drawShared($("graph"), graph, { bad });
  $("graph-empty").hidden = drawn.nodes > 0;
  $("graph-source").textContent = [source, drawn.arranged ? "laid out automatically: the positions overlap or lie too far apart" : ""]
    .filter(Boolean).join(" · ");
}

// --- the editor -------------------------------------------------------------------------------

function graphOf(workflow) {
  return { nodes: workflow.nodes, edges: workflow.edges, viewport: workflow.viewport };
}

function setEditor(workflow) {
  editor.value = JSON.stringify(graphOf(workflow), null, 2);
  setDirty(false);
}

function setDirty(value) {
  dirty = value;
  $("editor-state").textContent = value ? "Unsaved changes" : "";
}

// The editor's graph, or null (the reason shown) when it is not JSON of the right shape.
function readEditor() {
  let parsed;
  try {
    parsed = JSON.parse(editor.value);
  } catch (error) {
    showProblems({ message: `The graph is not valid JSON: ${error.message}` });
    editor.focus();
    return null;
  }
  if (!plain(parsed)) {
    showProblems({ message: "The graph must be a JSON object with nodes, edges and viewport." });
    return null;
  }
  const graph = { nodes: parsed.nodes ?? [], edges: parsed.edges ?? [] };
  if (!Array.isArray(graph.nodes) || !Array.isArray(graph.edges)) {
    showProblems({ message: "nodes and edges must be JSON arrays." });
    return null;
  }
  if (parsed.viewport !== undefined && parsed.viewport !== null) {
    if (!plain(parsed.viewport)) {
      showProblems({ message: "viewport must be an object {x, y, zoom}." });
      return null;
    }
    graph.viewport = parsed.viewport;
  }
  return graph;
}

function issueText(issue) {
  const where = [issue.node_id != null ? `node ${issue.node_id}` : null,
                 issue.edge_id != null ? `edge ${issue.edge_id}` : null].filter(Boolean).join(", ");
  return [where ? el("strong", {}, `${where[0].toUpperCase()}${where.slice(1)}: `) : null,
          issue.message, " ", el("span", { class: "muted small" }, `(${issue.code})`)];
}

// The validation area: a message, or the list of problems (and the drawing marks them).
function showProblems({ message = "", issues = [], ok = false, graph = null, source = "" }) {
  const box = $("validation");
  const children = [];
  if (message) children.push(el("p", { class: ok ? "valid" : "invalid" }, message));
  if (issues.length) {
    children.push(el("ul", { id: "validation-errors", class: "issues" },
      issues.map((issue) => el("li", { "data-code": issue.code, "data-node-id": issue.node_id,
                                       "data-edge-id": issue.edge_id }, issueText(issue)))));
  }
  box.dataset.state = ok ? "valid" : (message || issues.length ? "invalid" : "");
  box.replaceChildren(...children);
  if (graph) {
    const bad = { nodes: new Set(issues.filter((i) => i.node_id != null).map((i) => String(i.node_id))),
                  edges: new Set(issues.filter((i) => i.edge_id != null).map((i) => String(i.edge_id))) };
    drawGraph(graph, bad, source);
  }
}

function counted(n, what) {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

async function validate() {
  const graph = readEditor();
  if (!graph) return;
  try {
    const answer = await api("/api/v1/workflows/validate", { method: "POST", body: graph });
    const shape = `${counted(answer.node_count, "node")}, ${counted(answer.edge_count, "edge")}`;
    showProblems(answer.valid
      ? { message: `The graph is valid: ${shape}.`, ok: true, graph, source: "(the editor's graph, not saved)" }
      : { message: `${counted(answer.errors.length, "problem")} in the graph (${shape}):`,
          issues: answer.errors, graph, source: "(the editor's graph, not saved)" });
  } catch (error) {
    showProblems({ message: problemMessage(error) });
  }
}

async function save() {
  const graph = readEditor();
  if (!graph) return;
  const button = $("save-graph");
  button.disabled = true;
  try {
    const updated = await api(BASE, { method: "PATCH", body: graph });
    setSaved(updated);
    setDirty(false);
    showProblems({ message: `Saved: ${counted(updated.nodes.length, "node")}, ${counted(updated.edges.length, "edge")}.`,
                   ok: true });
    notify("Saved.", "ok");
  } catch (error) {
    const issues = error instanceof ApiError && Array.isArray(error.problem?.errors)
      && error.problem.errors.every((e) => e && e.code) ? error.problem.errors : [];
    showProblems(issues.length
      ? { message: `Not saved: ${counted(issues.length, "problem")} in the graph:`, issues, graph,
          source: "(the editor's graph, not saved)" }
      : { message: `Not saved: ${problemMessage(error)}` });
  } finally {
    button.disabled = false;
  }
}

// --- the workflow -----------------------------------------------------------------------------

function renderHead() {
  document.title = `${saved.name} · Workflow · Roost`;
  $("workflow-title").textContent = saved.name;
  const description = $("workflow-description");
  description.textContent = saved.description || "";
  description.hidden = !saved.description;
  $("workflow-status").replaceChildren(el("span", { class: "visually-hidden" }, "Status: "),
    badge(saved.status, saved.status === "archived" ? "muted" : saved.status),
    saved.latest_version ? ` latest version ${saved.latest_version}` : " not published yet");
  $("edit-name").value = saved.name;
  $("edit-description").value = saved.description || "";
  $("edit-status").value = saved.status;
}

function setSaved(workflow) {
  saved = workflow;
  renderHead();
  drawGraph(graphOf(saved), undefined, "(the saved draft)");
  document.dispatchEvent(new CustomEvent("roost:workflow", { detail: saved }));
}

async function load() {
  const workflow = await api(BASE);
  setSaved(workflow);
  setEditor(workflow);
  // The forms stay disabled until they hold the workflow: what is typed earlier would be
  // overwritten (or, mid-keystroke, mixed with the loaded value).
  for (const fieldset of document.querySelectorAll("fieldset.loads")) fieldset.disabled = false;
  $("edit-status").disabled = false;
}

// --- versions, publish, rollback, diff ----------------------------------------------------------

function versionRow(version) {
  return el("tr", { dataset: { version: String(version.version) } },
    el("td", {}, el("strong", {}, `Version ${version.version}`),
       el("div", { class: "muted small" }, el("code", { title: version.content_hash }, version.content_hash.slice(0, 12)))),
    el("td", { class: "wrap" }, version.note || el("span", { class: "muted" }, "no note")),
    el("td", {}, formatTime(version.created_at)),
    el("td", {}, el("button", { type: "button", class: "secondary small-button",
                                onclick: () => rollback(version.version) },
                    `Roll back to version ${version.version}`)));
}

function refOptions(select, withDraft, chosen) {
  const options = [];
  if (withDraft) options.push(el("option", { value: "draft" }, "the saved draft"));
  for (const v of versions) options.push(el("option", { value: String(v.version) }, `version ${v.version}`));
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

async function loadVersions() {
  versions = await api(`${BASE}/versions`);
  $("versions-body").replaceChildren(...versions.map(versionRow));
  $("versions-table").hidden = versions.length === 0;
  $("versions-empty").hidden = versions.length > 0;
  // The newest version against the draft, until the reader picks something else.
  const newest = versions[0] ? String(versions[0].version) : "draft";
  refOptions($("diff-from"), true, diffPicked ? $("diff-from").value : newest);
  refOptions($("diff-to"), true, diffPicked ? $("diff-to").value : "draft");
  $("diff-form").querySelector("button[type=submit]").disabled = versions.length === 0;
  if (!versions.length) {
    $("diff-result").replaceChildren(el("p", { class: "muted" }, "Publish a version to compare it with the draft."));
  } else if ($("diff-result").dataset.shown !== "true") {
    $("diff-result").replaceChildren();
  }
}

async function publish(event) {
  event.preventDefault();
  if (dirty) {
    notify("The editor has unsaved changes: save them first (publishing takes the saved draft).");
    return;
  }
  const note = $("publish-note").value.trim();
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const version = await api(`${BASE}/publish`, { method: "POST", body: note ? { note } : {} });
    $("publish-note").value = "";
    notify(`Published version ${version.version}.`, "ok");
    setSaved(await api(BASE));
    await loadVersions();
  } catch (error) {
    const issues = error instanceof ApiError && Array.isArray(error.problem?.errors)
      && error.problem.errors.every((e) => e && e.code) ? error.problem.errors : [];
    if (issues.length) {
      showProblems({ message: `Not published: ${counted(issues.length, "problem")} in the saved draft:`,
                     issues, graph: graphOf(saved), source: "(the saved draft)" });
    }
    showError(error);
  } finally {
    button.disabled = false;
  }
}

async function rollback(number) {
  const lost = dirty ? " The editor's unsaved changes are lost." : "";
  if (!window.confirm(`Make version ${number}'s graph the draft? The versions stay as they are.${lost}`)) return;
  try {
    const workflow = await api(`${BASE}/rollback`, { method: "POST", body: { version: number } });
    setSaved(workflow);
    setEditor(workflow);
    showProblems({ message: `The draft is now version ${number}'s graph: publish to release it.`, ok: true });
    notify(`Rolled back to version ${number}.`, "ok");
    if ($("diff-result").dataset.shown === "true") await showDiff();
  } catch (error) { showError(error); }
}

function refName(ref) {
  return ref === "draft" ? "the draft" : `version ${ref}`;
}

function changeList(title, part) {
  const rows = [];
  if (part.added.length) rows.push(el("li", {}, "Added: ", part.added.map((id, i) => [i ? ", " : "", el("code", {}, id)]).flat()));
  if (part.removed.length) rows.push(el("li", {}, "Removed: ", part.removed.map((id, i) => [i ? ", " : "", el("code", {}, id)]).flat()));
  if (part.changed.length) {
    rows.push(el("li", {}, "Changed: ", part.changed.map((c, i) => [i ? ", " : "", el("code", {}, c.id),
                                                                   ` (${c.fields.join(", ")})`]).flat()));
  }
  return [el("h3", {}, title), rows.length ? el("ul", { class: "changes" }, rows)
                                           : el("p", { class: "muted" }, "No changes.")];
}

async function showDiff(event) {
  event?.preventDefault();
  const from = $("diff-from").value;
  const to = $("diff-to").value;
  const holder = $("diff-result");
  try {
    const diff = await api(`${BASE}/diff?${new URLSearchParams({ from, to })}`);
    const same = !diff.viewport_changed && ["nodes", "edges"].every((k) =>
      !diff[k].added.length && !diff[k].removed.length && !diff[k].changed.length);
    holder.dataset.shown = "true";
    holder.replaceChildren(
      el("p", { class: "diff-title" }, el("strong", {}, `${refName(diff.from_version)} → ${refName(diff.to_version)}`),
         same ? ": no differences." : ""),
      ...(same ? [] : [...changeList("Nodes", diff.nodes), ...changeList("Edges", diff.edges),
                       el("p", {}, diff.viewport_changed ? "The viewport changed." : "The viewport is the same.")]));
  } catch (error) { showError(error); }
}

// --- settings ---------------------------------------------------------------------------------

async function saveDetails(event) {
  event.preventDefault();
  const name = $("edit-name").value.trim();
  if (!name) {
    notify("A workflow needs a name.");
    $("edit-name").focus();
    return;
  }
  const description = $("edit-description").value.trim() || null;
  const body = {};
  if (name !== saved.name) body.name = name;
  if (description !== (saved.description || null)) body.description = description;
  if (!Object.keys(body).length) {
    notify("Nothing has changed.", "info");
    return;
  }
  try {
    setSaved(await api(BASE, { method: "PATCH", body }));
    notify("Saved.", "ok");
  } catch (error) { showError(error); }
}

async function changeStatus(event) {
  event.preventDefault();
  const status = $("edit-status").value;
  if (status === saved.status) {
    notify(`The workflow is already ${status}.`, "info");
    return;
  }
  try {
    setSaved(await api(BASE, { method: "PATCH", body: { status } }));
    notify(`The workflow is now ${status}.`, "ok");
  } catch (error) {
    $("edit-status").value = saved.status;
    showError(error);
  }
}

async function remove() {
  if (!window.confirm(`Delete the workflow “${saved?.name ?? ""}” and all its versions?`)) return;
  try {
    await api(BASE, { method: "DELETE" });
    location.assign("/console/workflows");
  } catch (error) { showError(error); }
}

editor.addEventListener("input", () => setDirty(true));
$("validate-graph").addEventListener("click", () => validate());
$("editor-form").addEventListener("submit", (event) => { event.preventDefault(); save(); });
$("reset-graph").addEventListener("click", () => {
  if (!saved) return;
  setEditor(saved);
  showProblems({});
  drawGraph(graphOf(saved), undefined, "(the saved draft)");
});
$("publish-form").addEventListener("submit", publish);
$("diff-form").addEventListener("submit", showDiff);
for (const id of ["diff-from", "diff-to"]) $(id).addEventListener("change", () => { diffPicked = true; });
$("details-form").addEventListener("submit", saveDetails);
$("status-form").addEventListener("submit", changeStatus);
$("delete-workflow").addEventListener("click", remove);
load().then(loadVersions).catch(showError);
