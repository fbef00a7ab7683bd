// One agent: its details, a run form (to the run's page), editing, deleting, its runs.
import { api, badge, clip, edited, el, fill, formatTime, keepDraft, latestLoad, notify, pageData, saveChanges, showError } from "./console.js";

const { agent_id: agentId } = pageData();
let agent = null;
let runsCursor = null;
const loadingRuns = latestLoad(document.getElementById("runs-more"));

function detail(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const toolNames = new Map(); // tool id -> name

// A tool the agent may call, named by id or name: by id, a link named once it is read.
function toolRef(ref) {
  if (!UUID.test(ref)) return el("code", {}, ref);
  const link = el("a", { href: `/console/tools/${ref}` }, el("code", {}, toolNames.get(ref) || ref));
  if (!toolNames.has(ref)) {
    api(`/api/v1/tools/${ref}`).then((tool) => {
      toolNames.set(ref, tool.name);
      link.firstChild.textContent = tool.name;
    }).catch(() => { /* granted through a persona, or gone: the id stays */ });
  }
  return link;
}

// The persona the agent acts as: a link, named once it is read.
function personaLink(personaId) {
  const link = el("a", { href: `/console/personas/${personaId}` }, "persona");
  api(`/api/v1/personas/${personaId}`).then((persona) => { link.textContent = persona.name; })
    .catch(() => { /* not visible to this viewer: the link stays "persona" */ });
  return link;
}

function render() {
  document.title = `${agent.name} · Agent · Roost`;
  document.getElementById("agent-title").textContent = agent.name;
  const description = document.getElementById("agent-description");
  description.textContent = agent.description || "";
  description.hidden = !agent.description;
  const limits = agent.config || {};
  const tools = agent.tool_permissions;
  document.getElementById("agent-details").replaceChildren(
    ...detail("Slug", el("code", {}, agent.slug)),
    ...detail("State", agent.is_active ? badge("active") : badge("inactive", "muted"),
              agent.is_public ? [" ", badge("public", "info")] : null),
    ...detail("Persona", agent.persona_id ? personaLink(agent.persona_id)
                                          : el("span", { class: "muted" }, "none")),
    ...detail("Model", agent.preferred_model || el("span", { class: "muted" }, "default"),
              agent.preferred_provider ? ` (provider ${agent.preferred_provider})` : null),
    ...detail("Tools", tools.length ? el("ul", { class: "plain" }, tools.map((t) => el("li", {}, toolRef(t))))
                                    : el("span", { class: "muted" }, "none")),
    ...detail("Limits", `${limits.max_steps ?? "?"} steps, ${limits.timeout_s ?? "?"} s`
              + (limits.max_tokens ? `, ${limits.max_tokens} tokens` : "")),
    ...detail("System prompt", agent.system_prompt
      ? el("pre", { class: "prompt" }, agent.system_prompt) : el("span", { class: "muted" }, "none")),
    ...detail("Updated", formatTime(agent.updated_at)),
  );
  const form = document.getElementById("edit-form");
  const field = (name) => form.elements.namedItem(name);
  fill(field("name"), agent.name);
  fill(field("slug"), agent.slug);
  fill(field("preferred_model"), agent.preferred_model || "");
  fill(field("description"), agent.description || "");
  fill(field("system_prompt"), agent.system_prompt || "");
  field("is_active").checked = agent.is_active;
  field("is_public").checked = agent.is_public;
}

async function load() {
  agent = await api(`/api/v1/agents/${agentId}`);
  render();
  // Disabled until it holds the agent: what is typed earlier would be overwritten
  // (or, mid-keystroke, mixed with the loaded name).
  document.getElementById("edit-fields").disabled = false;
}

function runRow(run) {
  return el("tr", {},
    el("td", {}, el("a", { href: `/console/runs/${run.id}` }, clip(run.input, 80) || run.id)),
    el("td", {}, badge(run.status)),
    el("td", {}, formatTime(run.created_at)));
}

async function loadRuns(more = false) {
  const query = new URLSearchParams({ agent_id: agentId, limit: "20" });
  if (more && runsCursor) query.set("cursor", runsCursor);
  const page = await loadingRuns((signal) => api(`/api/v1/runs?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  const body = document.getElementById("runs-body");
  if (!more) body.replaceChildren();
  for (const run of page.items) body.append(runRow(run));
  runsCursor = page.next_cursor;
  const any = body.children.length > 0;
  document.getElementById("runs-table").hidden = !any;
  document.getElementById("runs-empty").hidden = any;
  document.getElementById("runs-more").hidden = !runsCursor;
}

function wireRun() {
  const form = document.getElementById("run-form");
  const input = document.getElementById("run-input");
  const forget = keepDraft(input);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!input.value.trim()) {
      notify("Write an input for the run first.");
      input.focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const run = await api(`/api/v1/agents/${agentId}/runs`, { method: "POST", body: { input: input.value } });
      forget();
      location.assign(`/console/runs/${run.id}`);
    } catch (error) {
      showError(error);
      button.disabled = false;
    }
  });
}

// Only what changed is sent (a PATCH changes only the fields it names).
function changes(form) {
  const body = {};
  const field = (name) => form.elements.namedItem(name);
  const text = (name) => field(name).value.trim();
  if (edited(field("name")) && text("name") !== agent.name) body.name = text("name");
  if (edited(field("slug")) && text("slug") !== agent.slug) body.slug = text("slug");
  for (const key of ["preferred_model", "description"]) {
    const value = text(key) || null;
    if (edited(field(key)) && value !== (agent[key] || null)) body[key] = value;
  }
  const prompt = text("system_prompt") ? field("system_prompt").value : null;
  if (edited(field("system_prompt")) && prompt !== (agent.system_prompt || null)) {
    body.system_prompt = prompt;
  }
  for (const key of ["is_active", "is_public"]) {
    if (field(key).checked !== agent[key]) body[key] = field(key).checked;
  }
  return body;
}

function wireEdit() {
  const form = document.getElementById("edit-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const saved = await saveChanges(`/api/v1/agents/${agentId}`, changes(form));
    if (saved) {
      agent = saved;
      render();
    }
  });
  document.getElementById("delete-agent").addEventListener("click", async () => {
    if (!window.confirm(`Delete the agent “${agent?.name ?? ""}”? Its runs stay.`)) return;
    try {
      await api(`/api/v1/agents/${agentId}`, { method: "DELETE" });
      location.assign("/console/agents");
    } catch (error) { showError(error); }
  });
}

document.getElementById("runs-more").addEventListener("click", () => loadRuns(true).catch(showError));
wireRun();
wireEdit();
load().then(() => loadRuns()).catch(showError);
