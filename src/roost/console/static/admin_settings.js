// Administration: runtime settings.  One row per known setting: its description, a form
// with the value in effect (a checkbox for booleans, a number or text field otherwise),
// Save and Reset; the default, the source and the JSON Schema beside it.  A value the
// schema refuses answers 422 with the schema's message, shown under the field.
import { ApiError, api, el, formatTime, showError } from "./console.js";

const tbody = document.getElementById("settings");
const status = document.getElementById("settings-status");

function say(message) { status.textContent = message; }

function kind(schema) {
  const types = schema.anyOf ? schema.anyOf.map((s) => s.type) : [schema.type];
  if (types.includes("boolean")) return "boolean";
  if (types.includes("integer")) return "integer";
  if (types.includes("number")) return "number";
  return "text";
}

function input(s, id) {
  const k = kind(s.schema);
  if (k === "boolean") {
    return el("input", { id, type: "checkbox", checked: s.value === true });
  }
  if (k === "integer" || k === "number") {
    return el("input", { id, type: "number", step: k === "integer" ? "1" : "any",
                         value: s.value ?? "", inputmode: k === "integer" ? "numeric" : "decimal" });
  }
  return el("input", { id, type: "text", value: s.value ?? "", autocomplete: "off" });
}

function read(field, k) {
  if (k === "boolean") return field.checked;
  const raw = field.value.trim();
  if (k === "text") return raw === "" ? null : raw;
  // A number field with text the browser cannot parse reads as "": send it as text so
  // the schema's own message explains what is expected.
  if (raw === "" || Number.isNaN(Number(raw))) return raw;
  return Number(raw);
}

function row(s) {
  const id = `v-${s.key}`;
  const k = kind(s.schema);
  const field = input(s, id);
  const error = el("p", { class: "error-text", id: `${id}-error`, role: "alert", hidden: true });
  field.setAttribute("aria-describedby", `${id}-error`);
  const save = el("button", { type: "submit", "aria-label": `Save ${s.key}` }, "Save");
  const reset = el("button", { type: "button", class: "secondary", "aria-label": `Reset ${s.key}`,
                               disabled: s.source === "default" }, "Reset");
  const form = el("form", { class: "actions setting-form", novalidate: true },
    el("label", { for: id, class: "visually-hidden" }, `Value of ${s.key}`), field, save, reset);
  const showProblem = (err) => {
    if (err instanceof ApiError && err.status === 422) {
      error.textContent = err.message;
      error.hidden = false;
      field.setAttribute("aria-invalid", "true");
      field.focus();
    } else { showError(err); }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const focused = focusedControl(form);
    error.hidden = true;
    field.removeAttribute("aria-invalid");
    save.disabled = true;
    try {
      const fresh = await api(`/api/v1/admin/settings/${encodeURIComponent(s.key)}`,
                              { method: "PUT", body: { value: read(field, k) } });
      replaceRow(fresh, focused);
      say(`${fresh.key} is now ${JSON.stringify(fresh.value)}.`);
    } catch (err) { showProblem(err); } finally { save.disabled = false; }
  });
  reset.addEventListener("click", async () => {
    const focused = focusedControl(form);
    try {
      const fresh = await api(`/api/v1/admin/settings/${encodeURIComponent(s.key)}`,
                              { method: "DELETE" });
      replaceRow(fresh, focused);
      say(`${fresh.key} is back to its default, ${JSON.stringify(fresh.value)}.`);
    } catch (err) { showProblem(err); }
  });
  return el("tr", { dataset: { key: s.key } },
    el("th", { scope: "row" },
      el("span", { class: "mono" }, s.key), " ",
      el("span", { class: `badge ${s.source === "override" ? "" : "disabled"}` }, s.source),
      el("span", { class: "sub" }, s.description),
      s.updated_at ? el("span", { class: "sub" }, ["changed ",
        el("time", { datetime: s.updated_at }, formatTime(s.updated_at))]) : null),
    el("td", {}, form, error),
    el("td", {},
      el("span", {}, "default ", el("code", {}, JSON.stringify(s.default))),
      el("details", {}, el("summary", {}, "Schema"),
        el("pre", { class: "mono" }, JSON.stringify(s.schema, null, 2)))));
}

// The form's control that has the focus (field, Save or Reset), as a selector for its
// match in the row that replaceRow() draws; null when the focus is elsewhere.
function focusedControl(form) {
  const active = document.activeElement;
  if (!active || !form.contains(active)) return null;
  return active.id ? `#${CSS.escape(active.id)}`
    : `[aria-label="${CSS.escape(active.getAttribute("aria-label") || "")}"]`;
}

// Swap a setting's row for its new state and keep focus on the control that was used:
// the old row leaves the page (and Save was disabled meanwhile), which would drop the
// focus to the top.  A Reset that is now disabled hands it to the field.
function replaceRow(s, focusSelector = null) {
  const old = tbody.querySelector(`tr[data-key="${CSS.escape(s.key)}"]`);
  const fresh = row(s);
  const active = document.activeElement;
  const lost = !active || active === document.body || Boolean(old?.contains(active));
  if (old) old.replaceWith(fresh); else tbody.append(fresh);
  if (!focusSelector || !lost) return;
  const target = fresh.querySelector(`form ${focusSelector}`);
  (target && !target.disabled ? target : fresh.querySelector("form input"))?.focus();
}

async function load() {
  try {
    const settings = await api("/api/v1/admin/settings");
    tbody.replaceChildren(...settings.map(row));
  } catch (err) { showError(err); }
}

document.getElementById("refresh").addEventListener("click", load);
load();
