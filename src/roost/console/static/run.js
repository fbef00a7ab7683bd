// One run: its header and totals, and its steps live.  The steps are read once, then the
// run's server-sent events (step started/finished, the model's text as it streams, end)
// update them in place; the stream is closed when the run ends.
import { ApiError, api, badge, el, formatTime, pageData, showError, viewerId, viewerIsAdmin }
  from "./console.js";

const { run_id: runId } = pageData();
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const STEP_KINDS = { llm_call: "Model call", tool_call: "Tool call", rag_retrieval: "Document search" };

const timeline = document.getElementById("timeline");
const live = document.getElementById("live");
const cancelButton = document.getElementById("cancel-run");
const steps = new Map(); // step_number -> { data, node, stream }
let run = null;
let source = null;
let retryTimer = null;
let retryDelay = 3000;  // grows while the server refuses the stream (429), up to a minute

function setLive(state, text) {
  live.dataset.state = state;
  live.textContent = text;
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function seconds(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function runDuration(r) {
  if (!r.started_at) return null;
  const end = r.completed_at ? new Date(r.completed_at) : new Date();
  return Math.max(0, end - new Date(r.started_at));
}

// --- the header ---------------------------------------------------------------------------

function renderRun() {
  document.getElementById("run-short").textContent = run.id.slice(0, 8);
  document.title = `Run ${run.id.slice(0, 8)} · Roost`;
  const status = document.getElementById("run-status");
  const stop = run.stop_reason && run.stop_reason !== "final" && run.stop_reason !== run.status
    ? ` (${run.stop_reason.replace(/_/g, " ")})` : "";
  status.replaceChildren(el("span", { class: "visually-hidden" }, "Status: "),
                         badge(run.status), stop);
  // Only the run's own user and administrators may cancel it (a persona member reading
  // it got a button that could only answer 403).
  cancelButton.hidden = TERMINAL.has(run.status)
    || (run.user_id !== viewerId() && !viewerIsAdmin());
  const took = TERMINAL.has(run.status) ? runDuration(run) : null;
  const totals = [
    ["Steps", String(run.steps_count)],
    ["Tokens", `${run.tokens_in} in · ${run.tokens_out} out`],
    ["Cost", `${Number(run.cost)} credits`],
    ["Source", run.source],
    ["Created", formatTime(run.created_at)],
  ];
  if (run.started_at) totals.push(["Started", formatTime(run.started_at)]);
  if (took !== null) totals.push(["Took", seconds(took)]);
  document.getElementById("run-totals").replaceChildren(
    ...totals.flatMap(([term, value]) => [el("div", {}, el("dt", {}, term), el("dd", {}, value))]));
  document.getElementById("run-input").textContent = run.input;
  const error = document.getElementById("run-error");
  error.hidden = !run.error_message;
  document.getElementById("run-error-text").textContent = run.error_message || "";
  const output = document.getElementById("run-output");
  output.hidden = run.output === null || run.output === undefined;
  document.getElementById("run-output-text").textContent = run.output ?? "";
}

async function loadAgent() {
  const link = document.getElementById("agent-link");
  if (!run.agent_id) {
    link.replaceWith(el("span", { class: "muted" }, "deleted agent"));
    return;
  }
  link.href = `/console/agents/${run.agent_id}`;
  try {
    link.textContent = (await api(`/api/v1/agents/${run.agent_id}`)).name;
  } catch { /* no longer visible: the link keeps its generic name */ }
}

// --- the steps ----------------------------------------------------------------------------

function stepTitle(step) {
  const kind = STEP_KINDS[step.step_type] || step.step_type;
  return step.tool_name ? `${kind}: ${step.tool_name}` : kind;
}

function toolCallsOf(step) {
  const calls = step.output?.tool_calls || [];
  if (!calls.length) return null;
  return el("div", { class: "asks" }, el("span", { class: "muted" }, "Asks for "),
    calls.flatMap((call, i) => [i ? ", " : "", el("code", {}, call.name || call.function?.name || "a tool")]));
}

function details(summary, body) {
  return el("details", {}, el("summary", {}, summary), el("pre", {}, body));
}

function stepBody(step, entry) {
  const parts = [];
  if (step.step_type === "llm_call") {
    const content = step.output?.content;
    if (content) parts.push(el("div", { class: "text model-text" }, content));
    else if (step.status === "running") parts.push(entry.stream); // the text as it streams
    parts.push(toolCallsOf(step));
  } else if (step.step_type === "tool_call") {
    if (step.tool_id) {
      parts.push(el("p", { class: "small" }, el("a", { href: `/console/tools/${step.tool_id}` }, "Open the tool")));
    }
    if (step.input) parts.push(details("Arguments", json(step.input)));
    if (step.output) parts.push(details("Result", json(step.output)));
  } else if (step.output) {
    parts.push(details("Result", json(step.output)));
  }
  if (step.error) parts.push(el("p", { class: "step-error" }, el("strong", {}, "Error: "), step.error));
  return parts;
}

function stepMeta(step) {
  const meta = [];
  if (step.duration_ms !== null && step.duration_ms !== undefined) meta.push(seconds(step.duration_ms));
  if (step.tokens_in || step.tokens_out) meta.push(`${step.tokens_in} in · ${step.tokens_out} out tokens`);
  if (step.step_type === "llm_call" && step.input?.model) meta.push(step.input.model);
  return meta.join(" · ");
}

function renderStep(entry) {
  const step = entry.data;
  entry.node.className = `step ${step.status}`;
  entry.node.dataset.step = String(step.step_number);
  entry.node.dataset.type = step.step_type;
  entry.node.replaceChildren(
    el("div", { class: "step-head" },
      el("h3", {}, el("span", { class: "muted" }, `${step.step_number}. `), stepTitle(step)),
      badge(step.status), el("span", { class: "muted small" }, stepMeta(step))),
    ...stepBody(step, entry).filter(Boolean));
}

function upsertStep(step) {
  let entry = steps.get(step.step_number);
  if (!entry) {
    entry = { data: step, node: el("li"),
              stream: el("div", { class: "text model-text streaming", "aria-busy": "true" }) };
    steps.set(step.step_number, entry);
    // In step order, whatever order the events come in.
    const after = [...timeline.children].find((n) => Number(n.dataset.step) > step.step_number);
    timeline.insertBefore(entry.node, after || null);
  } else {
    entry.data = step;
  }
  renderStep(entry);
  document.getElementById("steps-empty").hidden = true;
}

function appendDelta({ step_number: number, text }) {
  const entry = steps.get(number);
  if (!entry || entry.data.status !== "running") return;
  entry.stream.append(text);
}

// --- live ---------------------------------------------------------------------------------

function closeLive(text) {
  if (source) source.close();
  source = null;
  clearTimeout(retryTimer);
  setLive("closed", text);
}

function subscribe() {
  if (source) return;
  setLive("connecting", "Connecting…");
  source = new EventSource(`/api/v1/runs/${runId}/events`);
  source.addEventListener("open", () => { retryDelay = 3000; setLive("open", "Live"); });
  source.addEventListener("step", (event) => upsertStep(JSON.parse(event.data)));
  source.addEventListener("delta", (event) => appendDelta(JSON.parse(event.data)));
  source.addEventListener("end", (event) => {
    run = JSON.parse(event.data);
    renderRun();
    closeLive("");
    refreshSteps(); // the final totals of every step
  });
  source.addEventListener("error", () => {
    // The browser reconnects by itself (with Last-Event-ID) unless the server refused.
    if (source?.readyState !== EventSource.CLOSED) {
      setLive("connecting", "Reconnecting…");
      return;
    }
    source = null;
    setLive("connecting", "Reconnecting…");
    // The browser gave up: an EventSource cannot read why, so ask once (a 429 over the
    // user's streams was retried every 3 s for ever, saying only "Reconnecting…").
    whyRefused().then((refusal) => {
      if (refusal && refusal.status !== 429) {
        showError(refusal);
        closeLive("Live updates stopped: reload the page.");
        return;
      }
      if (refusal) {
        showError(refusal);
        setLive("connecting", "Too many live streams are open: trying again shortly…");
      }
      retryDelay = refusal ? Math.min(retryDelay * 2, 60_000) : 3000;
      const wait = Math.max(retryDelay, (refusal?.problem?.retry_after_s ?? 0) * 1000);
      retryTimer = setTimeout(async () => {
        try {
          await refresh();
        } catch (error) {
          showError(error);
          setLive("closed", "Live updates stopped: reload the page.");
        }
      }, wait);
    });
  });
}

// What the events endpoint answers now, when it refuses (an ApiError), else null.
async function whyRefused() {
  const controller = new AbortController();
  try {
    const response = await fetch(`/api/v1/runs/${runId}/events`, {
      headers: { Accept: "text/event-stream" }, signal: controller.signal });
    if (response.ok) return null;
    const problem = await response.json().catch(() => null);
    const retryAfter = Number(response.headers.get("Retry-After"));
    return new ApiError(response.status, {
      ...problem, retry_after_s: Number.isFinite(retryAfter) ? retryAfter : undefined });
  } catch {
    return null;  // the network: the usual retry
  } finally {
    controller.abort();  // an accepted stream is not read here
  }
}

async function refreshSteps() {
  for (const step of await api(`/api/v1/runs/${runId}/steps`)) upsertStep(step);
}

async function refresh() {
  run = await api(`/api/v1/runs/${runId}`);
  renderRun();
  await refreshSteps();
  if (TERMINAL.has(run.status)) closeLive("");
  else subscribe();
}

cancelButton.addEventListener("click", async () => {
  cancelButton.disabled = true;
  try {
    run = await api(`/api/v1/runs/${runId}/cancel`, { method: "POST" });
    renderRun();
    await refreshSteps();
  } catch (error) {
    showError(error);
  } finally {
    cancelButton.disabled = false;
  }
});

refresh().then(loadAgent).catch(showError);
