// One tool: what it is, a call form generated from its input JSON Schema (or raw JSON), the
// result of a call, and its recent calls.
import { api, ApiError, badge, el, formatTime, latestLoad, notify, pageData, showError } from "./console.js";

const { tool_id: toolId } = pageData();
const form = document.getElementById("call-form");
const fieldsBox = document.getElementById("call-fields");
const asJson = document.getElementById("as-json");
const jsonArea = document.getElementById("arguments-json");
let tool = null;
let fields = []; // { name, kind, control, schema, required }
let runsCursor = null;
const loadingRuns = latestLoad(document.getElementById("runs-more"));

const pretty = (value) => JSON.stringify(value, null, 2);

// --- the form, from the schema ------------------------------------------------------------

// A property's schema with the "or null" of optional values taken off (anyOf [X, null],
// type [X, "null"]): what is left decides the control.
function simplify(schema) {
  let s = schema && typeof schema === "object" ? { ...schema } : {};
  const variants = s.anyOf || s.oneOf;
  if (Array.isArray(variants)) {
    const real = variants.filter((v) => v?.type !== "null");
    if (real.length === 1) {
      const { anyOf: _a, oneOf: _o, ...rest } = s;
      s = { ...real[0], ...rest, title: rest.title ?? real[0].title, description: rest.description ?? real[0].description };
    }
  }
  if (Array.isArray(s.type)) {
    const real = s.type.filter((t) => t !== "null");
    if (real.length === 1) s = { ...s, type: real[0] };
  }
  return s;
}

function kindOf(s) {
  const primitive = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
  if (Array.isArray(s.enum) && s.enum.length && s.enum.every(primitive)) return "enum";
  if (s.const !== undefined && primitive(s.const)) return "enum";
  if (s.anyOf || s.oneOf || s.allOf || s.$ref) return "json";
  switch (s.type) {
    case "string": return s.maxLength !== undefined || s.format ? "line" : "text";
    case "integer": return "integer";
    case "number": return "number";
    case "boolean": return "boolean";
    default: return "json";
  }
}

function hints(s, kind) {
  const out = [];
  const range = (lo, hi, unit) => {
    if (lo !== undefined && hi !== undefined) out.push(`${lo} to ${hi}${unit}.`);
    else if (lo !== undefined) out.push(`At least ${lo}${unit}.`);
    else if (hi !== undefined) out.push(`At most ${hi}${unit}.`);
  };
  if (kind === "integer" || kind === "number") range(s.minimum ?? s.exclusiveMinimum, s.maximum ?? s.exclusiveMaximum, "");
  if (kind === "integer") out.push("A whole number.");
  if (kind === "line" || kind === "text") range(s.minLength, s.maxLength, " characters");
  if (kind === "json") out.push(s.type === "array" ? "A JSON array." : s.type === "object" ? "A JSON object." : "A JSON value.");
  if (s.format) out.push(`Format: ${s.format}.`);
  return out.join(" ");
}

function enumValues(s) {
  return Array.isArray(s.enum) ? s.enum : [s.const];
}

function control(id, s, kind, required) {
  const common = { id, name: id, required: required || null };
  const initial = s.default;
  switch (kind) {
    case "enum": {
      const values = enumValues(s);
      const select = el("select", common,
        required && values.length ? null : el("option", { value: "" }, "(not set)"),
        values.map((v, i) => el("option", { value: String(i) }, v === null ? "null" : String(v))));
      const at = values.findIndex((v) => v === initial);
      if (at >= 0) select.value = String(at);
      return select;
    }
    case "integer":
    case "number":
      return el("input", { ...common, type: "number", inputmode: kind === "integer" ? "numeric" : "decimal",
                           step: kind === "integer" ? "1" : "any", min: s.minimum, max: s.maximum,
                           value: typeof initial === "number" ? String(initial) : null });
    case "boolean":
      return el("input", { ...common, type: "checkbox", checked: initial === true });
    case "line":
      return el("input", { ...common, type: s.format === "email" ? "email" : s.format === "uri" ? "url" : "text",
                           maxlength: s.maxLength, minlength: s.minLength, autocomplete: "off",
                           value: typeof initial === "string" ? initial : null });
    case "text": {
      const area = el("textarea", { ...common, rows: "3", minlength: s.minLength });
      if (typeof initial === "string") area.value = initial;
      return area;
    }
    default: {
      const area = el("textarea", { ...common, rows: "4", class: "code", spellcheck: "false" });
      if (initial !== undefined) area.value = pretty(initial);
      return area;
    }
  }
}

function buildForm(schema) {
  const properties = schema && typeof schema.properties === "object" ? schema.properties : {};
  const required = new Set(Array.isArray(schema?.required) ? schema.required : []);
  const names = Object.keys(properties);
  fields = names.map((name, index) => {
    const s = simplify(properties[name]);
    const kind = kindOf(s);
    const id = `arg-${index}`;
    const isRequired = required.has(name);
    const title = s.title || name;
    const help = [s.description, hints(s, kind)].filter(Boolean).join(" ");
    const input = control(id, s, kind, isRequired);
    if (help) input.setAttribute("aria-describedby", `${id}-help`);
    const label = el("label", { for: id }, title,
      title.toLowerCase() !== name.toLowerCase() ? el("span", { class: "prop-name" }, ` (${name})`) : null,
      isRequired ? el("span", { class: "req", "aria-hidden": "true" }, " *") : null);
    const helpText = help ? el("p", { id: `${id}-help`, class: "help" }, help) : null;
    fieldsBox.append(kind === "boolean"
      ? el("div", { class: "field check", dataset: { name } }, input, label, helpText)
      : el("div", { class: "field", dataset: { name } }, label, input, helpText));
    return { name, kind, control: input, schema: s, required: isRequired };
  });
  if (!names.length) {
    fieldsBox.append(el("p", { class: "muted" }, "This tool takes no arguments."));
  } else if (required.size) {
    fieldsBox.prepend(el("p", { class: "help" }, "Fields marked * are required."));
  }
  // A schema that is not an object of properties is edited as JSON.
  const formable = schema?.type === "object" || (!schema?.type && names.length);
  if (!formable) setJsonMode(true);
}

// The arguments the fields hold; a field whose JSON does not parse is a local problem.
function readFields() {
  const args = {};
  for (const f of fields) {
    const c = f.control;
    if (f.kind === "boolean") {
      // An optional box left as it was is not sent; unticking a default of true is.
      if (f.required || c.checked || f.schema.default === true) args[f.name] = c.checked;
      continue;
    }
    const raw = c.value;
    if (raw === "") continue;
    if (f.kind === "enum") args[f.name] = enumValues(f.schema)[Number(raw)];
    else if (f.kind === "integer" || f.kind === "number") args[f.name] = Number(raw);
    else if (f.kind === "json") {
      try {
        args[f.name] = JSON.parse(raw);
      } catch {
        throw Object.assign(new Error(`${f.schema.title || f.name}: not valid JSON`), { field: f });
      }
    } else args[f.name] = raw;
  }
  return args;
}

// Best effort: fill the fields from a JSON object (switching back from the JSON mode).
function fillFields(args) {
  for (const f of fields) {
    const value = args[f.name];
    const c = f.control;
    if (f.kind === "boolean") c.checked = value === true;
    else if (value === undefined) c.value = "";
    else if (f.kind === "enum") c.value = String(Math.max(0, enumValues(f.schema).indexOf(value)));
    else if (f.kind === "json") c.value = pretty(value);
    else c.value = String(value);
  }
}

function setJsonMode(on) {
  asJson.checked = on;
  document.getElementById("json-fields").hidden = !on;
  fieldsBox.hidden = on;
}

asJson.addEventListener("change", () => {
  if (asJson.checked) {
    try {
      jsonArea.value = pretty(readFields());
    } catch (error) {
      // A field's JSON does not parse: stay in the fields (switching wrote "{}" and the
      // other fields' values were lost) and say which one.
      asJson.checked = false;
      if (error.field) error.field.control.setAttribute("aria-invalid", "true");
      notify(error.message);
      (error.field?.control || fieldsBox).focus();
      return;
    }
  } else {
    try {
      const parsed = JSON.parse(jsonArea.value || "{}");
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) fillFields(parsed);
    } catch { /* the fields keep what they had */ }
  }
  setJsonMode(asJson.checked);
  (asJson.checked ? jsonArea : fieldsBox.querySelector("input, select, textarea"))?.focus();
});

// --- calling ------------------------------------------------------------------------------

function clearInvalid() {
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

function markInvalid(name) {
  const f = fields.find((x) => x.name === name);
  f?.control.setAttribute("aria-invalid", "true");
  return f;
}

function textOf(output) {
  if (!output) return "";
  if (Array.isArray(output.content)) {
    const texts = output.content.filter((c) => c?.type === "text").map((c) => c.text);
    if (texts.length) return texts.join("\n");
  }
  return pretty(output);
}

function showResult({ status, meta, text, problems = [], raw }) {
  document.getElementById("result").hidden = false;
  document.getElementById("result-meta").replaceChildren(badge(status, status === "success" ? "ok" : "failed"),
                                                         meta ? ` ${meta}` : "");
  const pre = document.getElementById("result-text");
  pre.textContent = text;
  pre.classList.toggle("error-text", status !== "success");
  const list = document.getElementById("result-problems");
  list.replaceChildren(...problems.map((p) => el("li", {}, p)));
  list.hidden = !problems.length;
  document.getElementById("result-raw").hidden = raw === undefined;
  document.getElementById("result-json").textContent = raw === undefined ? "" : pretty(raw);
}

function readArguments() {
  if (!asJson.checked) return readFields();
  let parsed;
  try {
    parsed = JSON.parse(jsonArea.value || "{}");
  } catch {
    jsonArea.setAttribute("aria-invalid", "true");
    throw new Error("The arguments are not valid JSON.");
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    jsonArea.setAttribute("aria-invalid", "true");
    throw new Error("The arguments must be a JSON object.");
  }
  return parsed;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearInvalid();
  let args;
  try {
    args = readArguments();
  } catch (error) {
    if (error.field) error.field.control.setAttribute("aria-invalid", "true");
    notify(error.message);
    (error.field?.control || jsonArea).focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const run = await api(`/api/v1/tools/${toolId}/call`, { method: "POST", body: { arguments: args } });
    showResult({ status: run.status, meta: run.duration_ms !== null ? `${run.duration_ms} ms` : "",
                 text: textOf(run.output) || run.result_preview || "(no output)", raw: run.output });
  } catch (error) {
    showError(error);
    const problem = error instanceof ApiError ? error.problem || {} : {};
    const problems = (Array.isArray(problem.errors) ? problem.errors : []).map((p) => {
      const loc = Array.isArray(p.loc) ? p.loc.slice(p.loc[1] === "arguments" ? 2 : 1) : [];
      if (loc.length) markInvalid(String(loc[0]));
      else if (p.type === "json_schema.required") {  // at the top: the required fields left empty
        for (const f of fields) if (f.required && f.kind !== "boolean" && f.control.value === "") markInvalid(f.name);
      }
      return `${loc.join("/") || "arguments"}: ${p.msg}`;
    });
    showResult({ status: "error", meta: error instanceof ApiError ? `HTTP ${error.status}` : "",
                 text: error.message, problems });
    const invalid = form.querySelector("[aria-invalid=true]");
    if (invalid && !invalid.closest("[hidden]")) invalid.focus();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    loadRuns().catch(showError);
  }
});

// --- the tool and its calls ---------------------------------------------------------------

function fact(term, ...value) {
  return el("div", {}, el("dt", {}, term), el("dd", {}, ...value));
}

const HINTS = { readOnlyHint: "read-only", idempotentHint: "idempotent", destructiveHint: "destructive",
                openWorldHint: "open world" };

async function renderTool() {
  document.title = `${tool.name} · Tools · Roost`;
  document.getElementById("tool-title").textContent = tool.title && tool.title !== tool.name
    ? `${tool.title} (${tool.name})` : tool.name;
  document.getElementById("tool-description").textContent = tool.description || "No description.";
  const marks = Object.entries(tool.annotations || {})
    .filter(([key, value]) => HINTS[key] && value === true).map(([key]) => badge(HINTS[key], "muted"));
  const availability = !tool.enabled ? badge("disabled", "muted")
    : tool.available ? badge("available", "ok") : badge("unavailable", "failed");
  const from = el("span", {}, tool.is_builtin ? "built-in" : tool.kind);
  document.getElementById("tool-facts").replaceChildren(...[
    fact("Availability", availability),
    fact("From", from),
    tool.category ? fact("Category", tool.category) : null,
    marks.length ? fact("Hints", marks.flatMap((m, i) => (i ? [" ", m] : [m]))) : null,
    tool.last_discovered_at ? fact("Discovered", formatTime(tool.last_discovered_at)) : null,
  ].filter(Boolean));
  document.getElementById("input-schema").textContent = pretty(tool.input_schema);
  if (tool.output_schema) {
    document.getElementById("output-schema-box").hidden = false;
    document.getElementById("output-schema").textContent = pretty(tool.output_schema);
  }
  if (tool.mcp_server_id) {
    try {
      const server = await api(`/api/v1/mcp-servers/${tool.mcp_server_id}`);
      from.textContent = `MCP server ${server.name}`;
    } catch { /* the kind stays */ }
  }
}

function runRow(run) {
  const ok = run.status === "success";
  return el("tr", {},
    el("td", {}, formatTime(run.started_at)),
    el("td", {}, badge(run.status, ok ? "ok" : run.status === "running" ? "running" : "failed")),
    el("td", {}, run.duration_ms === null ? "–" : `${run.duration_ms} ms`),
    el("td", { class: ok ? "wide" : "wide error-text" }, (ok ? run.result_preview : run.error) || ""));
}

async function loadRuns(more = false) {
  const query = new URLSearchParams({ tool_id: toolId, limit: "10" });
  if (more && runsCursor) query.set("cursor", runsCursor);
  const page = await loadingRuns((signal) => api(`/api/v1/tool-runs?${query}`, { signal }));
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

document.getElementById("runs-more").addEventListener("click", () => loadRuns(true).catch(showError));

async function start() {
  tool = await api(`/api/v1/tools/${toolId}`);
  buildForm(tool.input_schema || {});
  await renderTool();
  await loadRuns();
}

start().catch(showError);
