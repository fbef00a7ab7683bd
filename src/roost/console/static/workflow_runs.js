// The runs part of a workflow's page: a run form (one text field per input the chosen
// published version's start node declares, and the version to run; disabled, saying why,
// while nothing is published or the workflow is archived) and the workflow's runs, newest
// first, with "Load more".  workflow.js sends the workflow in a "roost:workflow" event
// each time it loads or saves it (a new version published: the form follows).
import { api, badge, clip, el, formatTime, latestLoad, pageData, showError } from "./console.js";

const { workflow_id: workflowId } = pageData();
const BASE = `/api/v1/workflows/${workflowId}`;
const $ = (id) => document.getElementById(id);
const STATUS_TEXT = { running: "running", pending: "waiting for a worker", completed: "completed",
                      failed: "failed", cancelled: "cancelled" };

let workflow = null;          // as the last event gave it
let shownVersion = null;      // the latest version the form was built for
const graphs = new Map();     // version number -> its published graph
let runsCursor = null;

function snippet(text, chars = 120) {
  const flat = String(text).replace(/\s+/g, " ").trim();
  return clip(flat, chars, "…");
}

// --- the run form -------------------------------------------------------------------------------

async function versionGraph(number) {
  if (!graphs.has(number)) graphs.set(number, await api(`${BASE}/versions/${number}`));
  return graphs.get(number);
}

// The names the version's start node takes (data.inputs), in order.
function declaredInputs(version) {
  const start = (version.nodes || []).find((n) => n && n.type === "start");
  const inputs = start && start.data && Array.isArray(start.data.inputs) ? start.data.inputs : [];
  // A version saved before inputs had to be unique may name one twice: one field per name.
  return [...new Set(inputs.map(String))];
}

function setHelp(text) {
  $("run-help").textContent = text;
}

async function buildInputs() {
  const chosen = Number($("run-version").value);
  const holder = $("run-inputs");
  const typed = new Map([...holder.querySelectorAll("input")].map((i) => [i.name, i.value]));
  const names = declaredInputs(await versionGraph(chosen));
  if (!names.length) {
    holder.replaceChildren(el("p", { class: "muted" }, `Version ${chosen} takes no inputs.`));
    return;
  }
  holder.replaceChildren(...names.map((name) => {
    const id = `run-input-${name}`;
    return el("div", { class: "run-input" },
      el("label", { for: id }, el("span", { class: "visually-hidden" }, "Input "), el("code", {}, name)),
      el("input", { id, name, autocomplete: "off", value: typed.get(name) ?? "",
                    "aria-describedby": "run-help" }));
  }));
}

async function renderForm() {
  const latest = workflow.latest_version;
  const fields = $("run-fields");
  if (!latest) {
    fields.disabled = true;
    $("run-version").replaceChildren();
    $("run-inputs").replaceChildren();
    setHelp("Not published yet: a run runs a published version. Publish the saved draft above to run it.");
    return;
  }
  if (workflow.status === "archived") {
    fields.disabled = true;
    setHelp("The workflow is archived: make it draft or active (Settings) to run it.");
    return;
  }
  if (shownVersion !== latest) {
    const picked = $("run-version").value;
    const options = [el("option", { value: String(latest) }, `the newest (version ${latest})`)];
    for (let v = latest - 1; v >= 1; v -= 1) options.push(el("option", { value: String(v) }, `version ${v}`));
    $("run-version").replaceChildren(...options);
    if (shownVersion !== null && picked && Number(picked) !== shownVersion) $("run-version").value = picked;
    shownVersion = latest;
  }
  await buildInputs();
  fields.disabled = false;
  setHelp("Each field is a text input of the start node; the run starts at once (nodes that call "
          + "nothing run in this request) and its page follows it.");
}

async function startRun(event) {
  event.preventDefault();
  const inputs = {};
  for (const field of $("run-inputs").querySelectorAll("input")) inputs[field.name] = field.value;
  const version = Number($("run-version").value);
  const button = $("start-run");
  button.disabled = true;
  try {
    const body = { inputs };
    if (version !== workflow.latest_version) body.version = version;
    const run = await api(`${BASE}/runs`, { method: "POST", body });
    location.assign(`/console/workflow-runs/${run.id}`);
  } catch (error) {
    showError(error);
    button.disabled = false;
  }
}

// --- the runs ------------------------------------------------------------------------------------

function runRow(run) {
  const status = [badge(run.status), STATUS_TEXT[run.status] && STATUS_TEXT[run.status] !== run.status
    ? el("span", { class: "muted small" }, ` ${STATUS_TEXT[run.status]}`) : null];
  if (run.waiting_for.length) {
    status.push(" ", badge("waiting for approval", "info"),
                el("span", { class: "muted small" }, ` at ${run.waiting_for.join(", ")}`));
  }
  let result;
  if (run.error_message) result = el("span", { class: "step-error" }, snippet(run.error_message));
  else if (run.output !== null && run.output !== undefined) result = snippet(run.output);
  else result = el("span", { class: "muted" }, "none yet");
  return el("tr", { dataset: { runId: run.id, status: run.status } },
    el("td", {}, el("a", { href: `/console/workflow-runs/${run.id}` }, el("code", {}, run.id.slice(0, 8)))),
    el("td", {}, status),
    el("td", {}, `version ${run.version}`),
    el("td", {}, formatTime(run.started_at || run.created_at)),
    el("td", { class: "wide wrap" }, result));
}

const loadingRuns = latestLoad($("runs-more"));

async function loadRuns(more = false) {
  const query = new URLSearchParams({ limit: "20" });
  const status = $("runs-status").value;
  if (status) query.set("status", status);
  if (more && runsCursor) query.set("cursor", runsCursor);
  const page = await loadingRuns((signal) => api(`${BASE}/runs?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  const body = $("runs-body");
  if (!more) body.replaceChildren();
  for (const run of page.items) body.append(runRow(run));
  runsCursor = page.next_cursor;
  const any = body.children.length > 0;
  $("runs-table").hidden = !any;
  $("runs-empty").hidden = any;
  $("runs-empty").textContent = status ? `No ${status} runs.` : "No runs yet.";
  $("runs-more").hidden = !runsCursor;
}

document.addEventListener("roost:workflow", (event) => {
  const first = workflow === null;
  workflow = event.detail;
  renderForm().catch(showError);
  if (first) loadRuns().catch(showError);
});
$("run-form").addEventListener("submit", startRun);
$("run-version").addEventListener("change", () => buildInputs().catch(showError));
$("runs-status").addEventListener("change", () => loadRuns().catch(showError));
$("runs-more").addEventListener("click", () => loadRuns(true).catch(showError));
