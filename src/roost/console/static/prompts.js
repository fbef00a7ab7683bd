// Prompts: the keys of the user's scopes (theirs, their groups', the factory's), a key's
// versions with their labels (move a label), a render preview with variable values, and
// the publish form.  Texts are shown as text, never markup.
import { api, el, notify, showError } from "./console.js";

const $ = (id) => document.getElementById(id);
let current = null; // {key, scope, group_id} whose versions are shown
let previewing = null; // the version previewed

function scopeName(row) {
  return row.scope === "group" ? `group ${String(row.group_id).slice(0, 8)}` : row.scope;
}

function sameScope(row, key) {
  return row.scope === key.scope && (row.group_id ?? null) === (key.group_id ?? null);
}

function parseJson(id, what, kind) {
  const raw = $(id).value.trim();
  if (!raw) return kind === "list" ? [] : {};
  let value;
  try { value = JSON.parse(raw); } catch {
    throw Object.assign(new Error(`${what} is not valid JSON`), { field: id });
  }
  const ok = kind === "list" ? Array.isArray(value) : value && typeof value === "object" && !Array.isArray(value);
  if (!ok) throw Object.assign(new Error(`${what} must be a JSON ${kind === "list" ? "list" : "object"}`), { field: id });
  return value;
}

// --- keys ------------------------------------------------------------------------------

function keyRow(key) {
  const show = el("button", { type: "button", class: "secondary small", "aria-label": `Versions of ${key.prompt_key} (${scopeName(key)})` }, "Versions");
  show.addEventListener("click", () => showVersions(key));
  const labels = Object.entries(key.labels).sort().map(([name, v]) => el("span", { class: "badge" }, `${name} → v${v}`));
  return el("tr", { dataset: { key: key.prompt_key, scope: key.scope } },
    el("td", { class: "wide" }, key.prompt_key, el("div", { class: "muted small" }, key.prompt_category)),
    el("td", {}, scopeName(key)),
    el("td", {}, String(key.versions)),
    el("td", {}, labels.length ? labels : "—"),
    el("td", {}, String(key.usage_count)),
    el("td", {}, show));
}

async function loadKeys() {
  let keys;
  try { keys = await api("/api/v1/prompts/keys"); } catch (error) { showError(error); return; }
  $("keys-body").replaceChildren(...keys.map(keyRow));
  $("keys-table").hidden = keys.length === 0;
  $("keys-empty").hidden = keys.length > 0;
  if (current) {
    const again = keys.find((k) => k.prompt_key === current.prompt_key && sameScope(k, current));
    if (again) await showVersions(again, { focus: false });
  }
}

// --- versions and labels ---------------------------------------------------------------

function versionRow(version) {
  const promote = el("button", { type: "button", class: "secondary small", "aria-label": `Move production to v${version.version}` }, "Make production");
  promote.disabled = version.labels.includes("production");
  promote.addEventListener("click", () => moveLabel(version.id, "production"));
  const preview = el("button", { type: "button", class: "secondary small", "aria-label": `Preview v${version.version}` }, "Preview");
  preview.addEventListener("click", () => showPreview(version));
  return el("tr", { dataset: { version: String(version.version) } },
    el("td", {}, `v${version.version}`, version.is_active ? null : el("span", { class: "badge" }, "inactive"),
       el("div", { class: "muted small" }, new Date(version.created_at).toLocaleString())),
    el("td", {}, scopeName(version)),
    el("td", { class: "labels" }, version.labels.length ? version.labels.map((l) => el("span", { class: "badge" }, l)) : "—"),
    el("td", {}, String(version.usage_count)),
    el("td", {}, version.success_rate === null ? "—" : `${Math.round(version.success_rate * 100)}%`),
    el("td", {}, promote, " ", preview));
}

async function showVersions(key, { focus = true } = {}) {
  current = key;
  // Every version, page after page (the label form may move a label to any of them).
  const query = new URLSearchParams({ key: key.prompt_key, scope: key.scope, limit: "100" });
  if (key.group_id) query.set("group_id", key.group_id);
  const versions = [];
  try {
    for (;;) {
      const page = await api(`/api/v1/prompts?${query}`);
      versions.push(...page.items);
      if (!page.next_cursor) break;
      query.set("cursor", page.next_cursor);
    }
  } catch (error) { showError(error); return; }
  if (current !== key) return;  // another key was chosen meanwhile
  $("versions-title").textContent = `Versions of “${key.prompt_key}” (${scopeName(key)})`;
  $("versions-body").replaceChildren(...versions.map(versionRow));
  $("label-version").replaceChildren(...versions.map((v) => el("option", { value: v.id }, `v${v.version}`)));
  $("versions-card").hidden = false;
  if (focus) $("versions-title").scrollIntoView({ block: "nearest" });
}

async function moveLabel(promptId, label) {
  try {
    const moved = await api("/api/v1/prompts/labels", { method: "PUT", body: { prompt_id: promptId, label } });
    notify(`${moved.label} → v${moved.version}`, "ok");
    await loadKeys();
  } catch (error) { showError(error); }
}

// --- preview ---------------------------------------------------------------------------

function showPreview(version) {
  previewing = version;
  $("preview-title").textContent = `Preview of ${version.prompt_key} v${version.version}`;
  $("preview-source").textContent = version.prompt_text;
  const example = {};
  for (const v of version.variables) if (v.required && v.default === null) example[v.name] = "";
  $("preview-values").value = JSON.stringify(example);
  $("preview-output").textContent = "";
  $("preview-card").hidden = false;
  $("preview-values").focus();
}

async function render() {
  if (!previewing) return;
  let values;
  try { values = parseJson("preview-values", "Values", "object"); } catch (error) {
    notify(error.message);
    $(error.field).focus();
    return;
  }
  try {
    const out = await api(`/api/v1/prompts/${previewing.id}/render`, { method: "POST", body: { values } });
    $("preview-output").textContent = out.text;
  } catch (error) {
    $("preview-output").textContent = "";
    showError(error);
  }
}

// --- publish ---------------------------------------------------------------------------

async function publish(event) {
  event.preventDefault();
  const key = $("publish-key").value.trim();
  const text = $("publish-text").value;
  if (!key) { notify("Give the prompt a key"); $("publish-key").focus(); return; }
  if (!text.trim()) { notify("The text is empty"); $("publish-text").focus(); return; }
  let variables;
  try { variables = parseJson("publish-variables", "Variables", "list"); } catch (error) {
    notify(error.message);
    $(error.field).focus();
    return;
  }
  const body = {
    prompt_key: key, prompt_text: text, variables,
    prompt_category: $("publish-category").value.trim() || "general",
    label: $("publish-label").value.trim() || null,
  };
  const button = event.submitter ?? $("publish-form").querySelector("button");
  button.disabled = true;
  try {
    const created = await api("/api/v1/prompts", { method: "POST", body });
    notify(`Published ${created.prompt_key} v${created.version}`, "ok");
    $("publish-text").value = "";
    current = { prompt_key: created.prompt_key, scope: created.scope, group_id: created.group_id };
    await loadKeys();
  } catch (error) { showError(error); } finally { button.disabled = false; }
}

$("publish-form").addEventListener("submit", publish);
$("preview-render").addEventListener("click", render);
$("label-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const label = $("label-name").value.trim();
  if (!label) { notify("Name the label"); $("label-name").focus(); return; }
  moveLabel($("label-version").value, label);
});
loadKeys();
