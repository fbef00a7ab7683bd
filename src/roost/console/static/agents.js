// Agents: the user's agents (cursor pages), a create form, and recent runs.
import { api, badge, clip, el, formatTime, keepDraft, latestLoad, LEAVING, notify, showError, submitOnce } from "./console.js";

const agentsBody = document.getElementById("agents-body");
const runsBody = document.getElementById("runs-body");
const agentNames = new Map(); // id -> name, to name the agent of each run
let agentsCursor = null;
let runsCursor = null;
const loadingAgents = latestLoad(document.getElementById("agents-more"));
const loadingRuns = latestLoad(document.getElementById("runs-more"));

function agentRow(agent) {
  const state = [agent.is_active ? badge("active") : badge("inactive", "muted")];
  if (agent.is_public) state.push(" ", badge("public", "info"));
  const tools = agent.tool_permissions.length;
  return el("tr", {},
    el("td", {}, el("a", { href: `/console/agents/${agent.id}` }, agent.name),
       el("div", { class: "muted small" }, agent.slug)),
    el("td", {}, agent.preferred_model || el("span", { class: "muted" }, "default")),
    el("td", {}, tools ? `${tools} tool${tools === 1 ? "" : "s"}` : el("span", { class: "muted" }, "none")),
    el("td", {}, state));
}

async function loadAgents(more = false) {
  const query = new URLSearchParams({ limit: "25" });
  if (more && agentsCursor) query.set("cursor", agentsCursor);
  const page = await loadingAgents((signal) => api(`/api/v1/agents?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) agentsBody.replaceChildren();
  for (const agent of page.items) {
    agentNames.set(agent.id, agent.name);
    agentsBody.append(agentRow(agent));
  }
  agentsCursor = page.next_cursor;
  const any = agentsBody.children.length > 0;
  document.getElementById("agents-table").hidden = !any;
  document.getElementById("agents-empty").hidden = any;
  document.getElementById("agents-more").hidden = !agentsCursor;
}

// Runs of agents not on the loaded pages get their name when it arrives.
const pendingNames = new Map(); // agent id -> links waiting for its name

function nameLater(agentId, link) {
  if (pendingNames.has(agentId)) { pendingNames.get(agentId).push(link); return; }
  pendingNames.set(agentId, [link]);
  api(`/api/v1/agents/${agentId}`).then((agent) => {
    agentNames.set(agentId, agent.name);
    for (const waiting of pendingNames.get(agentId)) waiting.textContent = agent.name;
  }).catch(() => { /* not visible any more: it stays "agent" */ });
}

function runRow(run) {
  const agent = run.agent_id ? agentNames.get(run.agent_id) : null;
  const link = run.agent_id ? el("a", { href: `/console/agents/${run.agent_id}` }, agent || "agent") : null;
  if (link && !agent) nameLater(run.agent_id, link);
  return el("tr", {},
    el("td", {}, el("a", { href: `/console/runs/${run.id}` }, clip(run.input, 80) || run.id),
       el("div", { class: "muted small" }, `${run.source} · ${run.id.slice(0, 8)}`)),
    el("td", {}, badge(run.status)),
    el("td", {}, link || el("span", { class: "muted" }, "deleted agent")),
    el("td", {}, formatTime(run.created_at)));
}

async function loadRuns(more = false) {
  const query = new URLSearchParams({ limit: "20" });
  if (more && runsCursor) query.set("cursor", runsCursor);
  const page = await loadingRuns((signal) => api(`/api/v1/runs?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) runsBody.replaceChildren();
  for (const run of page.items) runsBody.append(runRow(run));
  runsCursor = page.next_cursor;
  const any = runsBody.children.length > 0;
  document.getElementById("runs-table").hidden = !any;
  document.getElementById("runs-empty").hidden = any;
  document.getElementById("runs-more").hidden = !runsCursor;
}

async function loadToolChoices() {
  const box = document.getElementById("tool-choices");
  try {
    const page = await api("/api/v1/tools?available=true&limit=200");
    const tools = page.items.filter((t) => t.enabled);
    if (!tools.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No tools available yet."));
      return;
    }
    box.replaceChildren(...tools.map((tool) => {
      const id = `tool-${tool.id}`;
      return el("div", { class: "choice" },
        el("input", { type: "checkbox", id, name: "tools", value: tool.id,
                      "aria-describedby": tool.description ? `${id}-help` : null }),
        el("label", { for: id }, tool.name),
        tool.description ? el("span", { id: `${id}-help`, class: "muted small" }, tool.description) : null);
    }));
  } catch (error) {
    box.replaceChildren(el("p", { class: "muted" }, `Tools could not be loaded: ${error.message}`));
  }
}

// Personas the user may bind an agent to: those they own or edit.
async function loadPersonas() {
  try {
    const page = await api("/api/v1/personas?is_active=true&limit=200");
    const choices = page.items.filter((p) => p.my_role === "owner" || p.my_role === "editor");
    document.getElementById("agent-persona").append(
      ...choices.map((p) => el("option", { value: p.id }, p.name)));
  } catch { /* the field keeps "None" */ }
}

async function loadModels() {
  try {
    const models = await api("/v1/models");
    document.getElementById("model-options").replaceChildren(
      ...(models.data || []).map((m) => el("option", { value: m.id })));
  } catch { /* no provider yet: the field stays free text */ }
}

// The slug follows the name until the user types one of their own.
function wireSlug() {
  const name = document.getElementById("agent-name");
  const slug = document.getElementById("agent-slug");
  let touched = false;
  slug.addEventListener("input", () => { touched = slug.value !== ""; });
  name.addEventListener("input", () => {
    if (touched) return;
    slug.value = name.value.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "").slice(0, 100);
  });
}

function wireCreate() {
  const form = document.getElementById("create-form");
  const prompt = document.getElementById("agent-prompt");
  const forget = keepDraft(prompt);
  submitOnce(form, async () => {
    const data = new FormData(form);
    const text = (key) => String(data.get(key) || "").trim();
    if (!text("name") || !text("slug")) {
      notify("An agent needs a name and a slug.");
      form.elements.namedItem(text("name") ? "slug" : "name").focus();
      return;
    }
    const body = { name: text("name"), slug: text("slug"), tool_permissions: data.getAll("tools") };
    for (const key of ["description", "preferred_model", "persona_id"]) if (text(key)) body[key] = text(key);
    if (String(data.get("system_prompt") || "").trim()) body.system_prompt = String(data.get("system_prompt"));
    const agent = await api("/api/v1/agents", { method: "POST", body });
    forget();
    location.assign(`/console/agents/${agent.id}`);
    return LEAVING;
  });
}

document.getElementById("agents-more").addEventListener("click", () => loadAgents(true).catch(showError));
document.getElementById("runs-more").addEventListener("click", () => loadRuns(true).catch(showError));
wireSlug();
wireCreate();
loadToolChoices();
loadModels();
loadPersonas();
loadAgents().then(() => loadRuns()).catch(showError);
