// Administration: LLM providers.  List with health, add (the API key goes in once and is
// never shown back: the API only says whether one is set), check health, sync models,
// delete.
import { api, el, formatTime, notify, showError } from "./console.js";

const tbody = document.getElementById("providers");
const empty = document.getElementById("providers-empty");
const status = document.getElementById("provider-status");

function say(message) { status.textContent = message; }

function healthCell(p) {
  const checked = p.last_health_check_at;
  return el("td", {},
    el("span", { class: `badge ${p.health_status}` }, p.health_status),
    checked ? el("span", { class: "sub" }, `${p.response_time} ms`) : null,
    el("span", { class: "sub" }, checked
      ? ["checked ", el("time", { datetime: checked }, formatTime(checked))]
      : "never checked"),
    p.health_error ? el("span", { class: "sub error-text" }, p.health_error) : null);
}

function modelsCell(p) {
  const names = Object.keys(p.models || {}).sort();
  return el("td", {},
    p.last_models_sync
      ? [`${p.enabled_models} of ${p.total_models} enabled`,
         el("span", { class: "sub" }, ["synced ", el("time", { datetime: p.last_models_sync }, formatTime(p.last_models_sync))])]
      : el("span", { class: "muted" }, "not synced"),
    names.length
      ? el("details", {}, el("summary", {}, `Model list (${names.length})`),
          el("ul", {}, names.map((n) => el("li", {}, n, p.models[n] ? "" : " (disabled)"))))
      : null);
}

function row(p) {
  const busy = (button, label, work) => async () => {
    button.disabled = true;
    say(`${label} ${p.name}…`);
    try { await work(); } catch (error) { say(""); showError(error); } finally { button.disabled = false; }
  };
  const check = el("button", { type: "button", class: "secondary", "aria-label": `Check health of ${p.name}` }, "Check health");
  const sync = el("button", { type: "button", class: "secondary", "aria-label": `Sync models of ${p.name}` }, "Sync models");
  const remove = el("button", { type: "button", class: "danger", "aria-label": `Delete ${p.name}` }, "Delete");
  check.addEventListener("click", busy(check, "Checking", async () => {
    const fresh = await api(`/api/v1/llm/providers/${p.id}/health`, { method: "POST" });
    replaceRow(fresh, `[aria-label="Check health of ${CSS.escape(fresh.name)}"]`);
    say(`${fresh.name}: ${fresh.health_status}` + (fresh.health_error ? ` (${fresh.health_error})` : `, ${fresh.response_time} ms`));
  }));
  sync.addEventListener("click", busy(sync, "Syncing the models of", async () => {
    const fresh = await api(`/api/v1/llm/providers/${p.id}/sync-models`, { method: "POST" });
    replaceRow(fresh, `[aria-label="Sync models of ${CSS.escape(fresh.name)}"]`);
    say(`${fresh.name}: ${fresh.total_models} ${fresh.total_models === 1 ? "model" : "models"}, ${fresh.enabled_models} enabled.`);
  }));
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete the provider ${p.name}? Requests stop going to it at once.`)) return;
    try {
      await api(`/api/v1/llm/providers/${p.id}`, { method: "DELETE" });
      say(`${p.name} deleted.`);
      await load();
    } catch (error) { showError(error); }
  });
  return el("tr", { dataset: { id: p.id } },
    el("td", {},
      el("strong", {}, p.name), p.enabled ? null : [" ", el("span", { class: "badge disabled" }, "disabled")],
      el("span", { class: "sub" }, p.type, p.base_url ? ` · ${p.base_url}` : ""),
      el("span", { class: "sub" }, p.has_api_key ? "API key set" : "no API key", ` · priority ${p.priority}`)),
    el("td", {}, p.model || el("span", { class: "muted" }, "—")),
    healthCell(p),
    modelsCell(p),
    el("td", {}, el("div", { class: "actions" }, check, sync, remove)));
}

// Swap a provider's row for its new state and keep focus on the button that was pressed.
function replaceRow(p, focusSelector) {
  const fresh = row(p);
  const old = tbody.querySelector(`tr[data-id="${CSS.escape(p.id)}"]`);
  if (old) old.replaceWith(fresh); else tbody.append(fresh);
  empty.hidden = true;
  if (focusSelector) fresh.querySelector(focusSelector)?.focus();
}

async function load() {
  try {
    const providers = await api("/api/v1/llm/providers");
    tbody.replaceChildren(...providers.map(row));
    empty.hidden = providers.length > 0;
  } catch (error) { showError(error); }
}

const form = document.getElementById("add-form");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = (id) => document.getElementById(id).value.trim();
  const body = { name: value("p-name"), type: value("p-type") };
  if (!body.name) { notify("Give the provider a name."); return; }
  if (value("p-base-url")) body.base_url = value("p-base-url");
  const key = document.getElementById("p-api-key").value;
  if (key) body.api_key = key;
  if (value("p-model")) body.model = value("p-model");
  if (value("p-priority")) body.priority = Number(value("p-priority"));
  try {
    const created = await api("/api/v1/llm/providers", { method: "POST", body });
    form.reset();  // the key leaves the page with the form
    say(`${created.name} added. Check its health to see whether it answers.`);
    await load();
  } catch (error) { showError(error); }
});

document.getElementById("refresh").addEventListener("click", load);
load();
