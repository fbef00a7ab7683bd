// One workflow run: its status, input, output or error; the pinned version's graph drawn
// with each node's latest step status (colour, and the status in words in the node, the
// legend and the drawing's label); the steps; Approve / Reject (with a comment) for each
// approval node it waits at, Resume when it failed, Cancel while it is unfinished.  The
// run is read again every second while it is running or pending.
import { api, badge, el, formatTime, notify, pageData, showError } from "./console.js";
import { drawGraph } from "./graph.js";

const { run_id: runId } = pageData();
const BASE = `/api/v1/workflow-runs/${runId}`;
const $ = (id) => document.getElementById(id);
const LIVE = new Set(["running", "pending"]);
const POLL_MS = 1000;
// Each step status: its words in the drawing (a sign first, so colour is never the only
// signal) and in the legend.
const STEP_TEXT = {
  completed: ["✓ completed", "completed"],
  running: ["▶ running", "running"],
  pending: ["… pending", "pending (queued for a worker)"],
  waiting: ["‖ awaiting approval", "waiting for approval"],
  failed: ["✗ failed", "failed"],
  interrupted: ["! interrupted", "interrupted (its worker stopped)"],
  cancelled: ["– cancelled", "cancelled"],
  none: ["not reached", "not reached"],
};
const RUN_TEXT = { pending: "waiting for a worker", running: "running", completed: "completed",
                   failed: "failed", cancelled: "cancelled" };

let run = null;
let version = null;          // the pinned version's graph (null until read, false if unreadable)
let timer = null;
let busy = false;            // an action or a read in flight
let shownSteps = "";         // what the steps table and the drawing show (a signature)
let shownWaiting = null;     // the approval forms shown (node ids)

function json(value) {
  return JSON.stringify(value, null, 2);
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// --- the header and the summary ------------------------------------------------------------------

function renderHead() {
  $("run-short").textContent = run.id.slice(0, 8);
  document.title = `Workflow run ${run.id.slice(0, 8)} · Roost`;
  const extra = [];
  if (RUN_TEXT[run.status] && RUN_TEXT[run.status] !== run.status) extra.push(RUN_TEXT[run.status]);
  if (run.waiting_for.length) extra.push(`waiting for approval at ${run.waiting_for.join(", ")}`);
  $("run-status").replaceChildren(el("span", { class: "visually-hidden" }, "Status: "),
    badge(run.status), extra.length ? ` ${extra.join(", ")}` : "");
  $("resume-run").hidden = run.status !== "failed";
  $("cancel-run").hidden = !LIVE.has(run.status);
  $("run-live").hidden = !LIVE.has(run.status);

  const totals = [["Version", `version ${run.version}`], ["Steps", String(run.steps_count)],
                  ["Source", run.source], ["Created", formatTime(run.created_at)]];
  if (run.started_at) totals.push(["Started", formatTime(run.started_at)]);
  if (run.completed_at) {
    totals.push(["Finished", formatTime(run.completed_at)]);
    if (run.started_at) totals.push(["Took", duration(Math.max(0, new Date(run.completed_at) - new Date(run.started_at)))]);
  }
  $("run-totals").replaceChildren(
    ...totals.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value))));
  $("run-input").textContent = Object.keys(run.input || {}).length ? json(run.input) : "(no inputs)";
  $("run-error").hidden = !run.error_message;
  $("run-error-text").textContent = run.error_message || "";
  const ends = Object.entries(run.outputs || {});
  $("run-output").hidden = (run.output === null || run.output === undefined) && !ends.length;
  $("run-output-text").textContent = run.output ?? "";
  $("run-output-text").hidden = run.output === null || run.output === undefined;
  $("run-outputs").replaceChildren(...(ends.length > 1 ? [
    el("h4", {}, "Each end node's output"),
    el("dl", { class: "details" }, ends.flatMap(([node, value]) => [
      el("dt", {}, node), el("dd", {}, typeof value === "string" ? value : json(value))]))] : []));
}

// --- approvals -----------------------------------------------------------------------------------

function approvalForm(nodeId, index) {
  const step = [...run.steps].reverse().find((s) => s.node_id === nodeId && s.status === "waiting");
  const input = step?.input || {};
  // By position, not by a cleaned-up node id: "x.y" and "x_y" would share one element id,
  // and deciding the second sent the first one's comment.
  const commentId = `approval-comment-${index}`;
  const textarea = el("textarea", { id: commentId, rows: 2, maxlength: 2000 });
  const decide = async (approved, buttons) => {
    const comment = textarea.value.trim();
    buttons.forEach((b) => { b.disabled = true; });
    busy = true;
    try {
      run = await api(`${BASE}/approvals/${encodeURIComponent(nodeId)}`, {
        method: "POST", body: comment ? { approved, comment } : { approved } });
      notify(approved ? `Approved ${nodeId}.` : `Rejected ${nodeId}.`, "ok");
      render();
    } catch (error) {
      showError(error);
      buttons.forEach((b) => { b.disabled = false; });
    } finally {
      busy = false;
      schedule();
    }
  };
  const approve = el("button", { type: "button", class: "approve" }, "Approve",
                     el("span", { class: "visually-hidden" }, ` ${nodeId}`));
  const reject = el("button", { type: "button", class: "danger reject" }, "Reject",
                    el("span", { class: "visually-hidden" }, ` ${nodeId}`));
  approve.addEventListener("click", () => decide(true, [approve, reject]));
  reject.addEventListener("click", () => decide(false, [approve, reject]));
  return el("div", { class: "approval", dataset: { nodeId } },
    el("h3", {}, "Node ", el("code", {}, nodeId)),
    input.message ? el("p", { class: "text approval-message" }, input.message) : null,
    Array.isArray(input.approvers) && input.approvers.length
      ? el("p", { class: "muted small" }, `Approvers: ${input.approvers.join(", ")}`) : null,
    el("label", { for: commentId }, "Comment (optional)",
       el("span", { class: "visually-hidden" }, ` for ${nodeId}`)),
    textarea,
    el("div", { class: "actions" }, approve, reject));
}

function renderApprovals() {
  const waiting = run.status === "running" ? run.waiting_for : [];
  const key = waiting.join("\n");
  if (key === shownWaiting) return;  // unchanged: keep what is typed in the comments
  shownWaiting = key;
  $("approvals").hidden = waiting.length === 0;
  $("approval-list").replaceChildren(...waiting.map(approvalForm));
}

// --- the graph and the steps ----------------------------------------------------------------------

// Each node's latest step: {status, text} for the drawing.
function nodeStatuses() {
  const latest = new Map();
  const count = new Map();
  for (const step of run.steps) {
    if (step.node_id === null) continue;
    count.set(step.node_id, (count.get(step.node_id) || 0) + 1);
    const seen = latest.get(step.node_id);
    if (!seen || step.step_number > seen.step_number) latest.set(step.node_id, step);
  }
  const found = new Map();
  for (const [node, step] of latest) {
    const words = STEP_TEXT[step.status]?.[0] ?? step.status;
    const times = count.get(node) > 1 ? ` (${count.get(node)} steps)` : "";
    found.set(node, { status: step.status, text: `${words}${times}` });
  }
  return found;
}

function renderLegend() {
  $("legend").replaceChildren(...Object.entries(STEP_TEXT).map(([status, [, words]]) =>
    el("li", { dataset: { status } }, el("span", { class: `swatch status-${status}`, "aria-hidden": "true" }), words)));
}

function renderGraph() {
  if (version === null) return;
  if (version === false) {
    $("graph").replaceChildren(el("p", { class: "muted" }, "The version's graph cannot be read."));
    return;
  }
  const drawn = drawGraph($("graph"), version, { statuses: nodeStatuses() });
  $("graph-source").textContent = [`(version ${run.version})`,
    drawn.arranged ? "laid out automatically: the positions overlap or lie too far apart" : ""].filter(Boolean).join(" · ");
}

function stepRow(step, open) {
  const words = STEP_TEXT[step.status]?.[1] ?? step.status;
  return el("tr", { class: `step status-${step.status}`, dataset: { stepId: step.id, nodeId: step.node_id ?? "" } },
    el("td", {}, String(step.step_number)),
    el("td", {}, el("code", {}, step.node_id ?? "—")),
    el("td", {}, step.node_type ?? el("span", { class: "muted" }, "unknown")),
    el("td", {}, step.iteration ?? ""),
    el("td", {}, badge(step.status), words !== step.status ? el("span", { class: "visually-hidden" }, ` (${words})`) : null),
    el("td", {}, step.duration_ms !== null ? duration(step.duration_ms)
                                           : el("span", { class: "muted" }, LIVE.has(step.status) ? "…" : "")),
    el("td", { class: "wrap" }, step.error ? el("span", { class: "step-error" }, step.error) : ""),
    el("td", { class: "wide" }, el("details", { open },
      el("summary", {}, "Show", el("span", { class: "visually-hidden" }, ` the input and output of step ${step.step_number}`)),
      el("h4", {}, "Input"), el("pre", { class: "step-json" }, step.input ? json(step.input) : "none"),
      el("h4", {}, "Output"), el("pre", { class: "step-json" }, step.output ? json(step.output) : "none"))));
}

function renderSteps() {
  const signature = JSON.stringify(run.steps.map((s) => [s.id, s.status, s.duration_ms, s.error]));
  if (signature === shownSteps) return;  // unchanged: keep the reader's open details
  shownSteps = signature;
  const open = new Set([...$("steps-body").querySelectorAll("tr")]
    .filter((row) => row.querySelector("details")?.open).map((row) => row.dataset.stepId));
  $("steps-body").replaceChildren(...run.steps.map((s) => stepRow(s, open.has(s.id))));
  $("steps-table").hidden = run.steps.length === 0;
  $("steps-empty").hidden = run.steps.length > 0;
  renderGraph();
}

function render() {
  renderHead();
  renderApprovals();
  renderSteps();
}

// --- loading, live refresh, actions ----------------------------------------------------------------

async function loadWorkflow() {
  const link = $("workflow-link");
  link.href = `/console/workflows/${run.workflow_id}`;
  try {
    const workflow = await api(`/api/v1/workflows/${run.workflow_id}`);
    link.textContent = workflow.name;
  } catch { /* the link stays "Workflow" */ }
  try {
    version = await api(`/api/v1/workflows/${run.workflow_id}/versions/${run.version}`);
  } catch (error) {
    version = false;
    showError(error);
  }
  renderGraph();
}

async function refresh() {
  run = await api(BASE);
  render();
}

function schedule() {
  if (timer !== null || !run || !LIVE.has(run.status)) return;
  timer = setTimeout(async () => {
    timer = null;
    if (busy) { schedule(); return; }
    try {
      await refresh();
    } catch (error) {
      showError(error);  // a failing API stops the refresh; a reload starts it again
      return;
    }
    schedule();
  }, POLL_MS);
}

async function act(button, path, done) {
  button.disabled = true;
  busy = true;
  try {
    run = await api(`${BASE}/${path}`, { method: "POST" });
    notify(done, "ok");
    render();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    busy = false;
    schedule();
  }
}

$("resume-run").addEventListener("click", (event) => act(event.currentTarget, "resume", "Resumed: the failed nodes run again."));
$("cancel-run").addEventListener("click", (event) => act(event.currentTarget, "cancel", "Cancelled."));
renderLegend();
refresh().then(() => { schedule(); return loadWorkflow(); }).catch(showError);
