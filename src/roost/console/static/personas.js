// Personas: the ones the user owns or is a member of (cursor pages) and a create form.
import { api, badge, clip, el, keepDraft, latestLoad, LEAVING, notify, showError, submitOnce } from "./console.js";

const body = document.getElementById("personas-body");
let cursor = null;
const loading = latestLoad(document.getElementById("personas-more"));

function personaRow(persona) {
  return el("tr", {},
    el("td", {}, el("a", { href: `/console/personas/${persona.id}` }, persona.name),
       persona.description ? el("div", { class: "muted small" }, clip(persona.description, 120)) : null),
    el("td", {}, persona.my_role || el("span", { class: "muted" }, "administrator")),
    el("td", {}, persona.email_address || el("span", { class: "muted" }, "none")),
    el("td", {}, persona.is_active ? badge("active") : badge("inactive", "muted")));
}

async function load(more = false) {
  const query = new URLSearchParams({ limit: "25" });
  if (more && cursor) query.set("cursor", cursor);
  const page = await loading((signal) => api(`/api/v1/personas?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) body.replaceChildren();
  for (const persona of page.items) body.append(personaRow(persona));
  cursor = page.next_cursor;
  const any = body.children.length > 0;
  document.getElementById("personas-table").hidden = !any;
  document.getElementById("personas-empty").hidden = any;
  document.getElementById("personas-more").hidden = !cursor;
}

async function loadModels() {
  try {
    const models = await api("/v1/models");
    document.getElementById("model-options").replaceChildren(
      ...(models.data || []).filter((m) => !m.id.startsWith("agent:"))
        .map((m) => el("option", { value: m.id })));
  } catch { /* no provider yet: the field stays free text */ }
}

function wireCreate() {
  const form = document.getElementById("create-form");
  const forget = keepDraft(document.getElementById("persona-prompt"));
  submitOnce(form, async () => {
    const data = new FormData(form);
    const text = (key) => String(data.get(key) || "").trim();
    if (!text("name")) {
      notify("A persona needs a name.");
      form.elements.namedItem("name").focus();
      return;
    }
    const payload = { name: text("name") };
    for (const key of ["description", "default_model", "email_address"]) if (text(key)) payload[key] = text(key);
    if (text("system_prompt")) payload.system_prompt = String(data.get("system_prompt"));
    const persona = await api("/api/v1/personas", { method: "POST", body: payload });
    forget();
    location.assign(`/console/personas/${persona.id}`);
    return LEAVING;
  });
}

document.getElementById("personas-more").addEventListener("click", () => load(true).catch(showError));
wireCreate();
loadModels();
load().catch(showError);
