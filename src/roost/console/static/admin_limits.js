// Administration: rate limits.  The defaults (settings), every override (users and API
// keys) with Edit and Reset, and a form that sets a user's (by username, e-mail or id)
// or an API key's (by id) requests per minute and concurrent streams: empty = default,
// 0 = unlimited.  A value the API refuses (422) or an unknown target shows under the form.
import { ApiError, api, el, showError } from "./console.js";

const tbody = document.getElementById("overrides");
const empty = document.getElementById("overrides-empty");
const form = document.getElementById("set-form");
const kind = document.getElementById("limit-kind");
const target = document.getElementById("limit-target");
const rpm = document.getElementById("limit-rpm");
const streams = document.getElementById("limit-streams");
const error = document.getElementById("set-error");
const status = document.getElementById("limits-status");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function say(message) { status.textContent = message; }
function shown(n) { return n === 0 ? "unlimited" : String(n); }
function cell(override, effective) {
  return override === null ? [shown(effective), el("span", { class: "sub" }, "default")]
                           : [shown(effective)];
}

function row(o) {
  const label = `${o.kind === "user" ? "user" : "API key"} ${o.name}`;
  const path = `/api/v1/admin/limits/${o.kind === "user" ? "users" : "api-keys"}/${o.id}`;
  const edit = el("button", { type: "button", class: "secondary", "aria-label": `Edit ${label}`,
                              onclick: () => fill(o) }, "Edit");
  const reset = el("button", { type: "button", class: "danger", "aria-label": `Reset ${label}`,
    onclick: async () => {
      try {
        await api(path, { method: "PUT", body: {} });
        say(`${label} is back to the defaults.`);
        await load();
      } catch (err) { showError(err); }
    } }, "Reset");
  return el("tr", { dataset: { id: o.id } },
    el("th", { scope: "row" }, el("strong", {}, o.name),
       el("span", { class: "sub" }, o.kind === "user" ? "user" : "API key"),
       el("span", { class: "sub mono" }, o.id)),
    el("td", { class: "num" }, ...cell(o.requests_per_minute, o.effective_requests_per_minute)),
    el("td", { class: "num" }, ...cell(o.streams, o.effective_streams)),
    el("td", {}, el("div", { class: "actions" }, edit, reset)));
}

function fill(o) {
  kind.value = o.kind === "user" ? "users" : "api-keys";
  target.value = o.id;
  rpm.value = o.requests_per_minute ?? "";
  streams.value = o.streams ?? "";
  rpm.focus();
}

function number(field) {
  const raw = field.value.trim();
  if (raw === "") return field.validity.badInput ? "not a number" : null;
  // Sent as typed when it is not a whole number: the API's 422 says what is expected.
  return /^-?\d+$/.test(raw) ? Number(raw) : raw;
}

async function resolveTarget() {
  const text = target.value.trim();
  if (UUID.test(text) || kind.value === "api-keys") return text;
  // Looked up by the server as sign-in reads a name (any case, an address typed with a
  // decomposed accent), among every account: the first 500 listed missed later ones.
  const found = await api(`/api/v1/users/${encodeURIComponent(text)}`);
  return found.id;
}

function problem(message) {
  error.textContent = message;
  error.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  if (!target.value.trim()) { problem("Give a user or an API key."); target.focus(); return; }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const id = await resolveTarget();
    if (kind.value === "api-keys" && !UUID.test(id)) throw new Error("an API key is named by its id");
    const saved = await api(`/api/v1/admin/limits/${kind.value}/${encodeURIComponent(id)}`, {
      method: "PUT", body: { requests_per_minute: number(rpm), streams: number(streams) } });
    say(`${saved.name}: ${shown(saved.effective_requests_per_minute)} requests per minute, `
        + `${shown(saved.effective_streams)} concurrent streams.`);
    form.reset();
    await load();
  } catch (err) {
    if (err instanceof ApiError && err.status === 422 && err.problem?.errors?.length) {
      problem(err.problem.errors.map((e) => `${e.loc[e.loc.length - 1]}: ${e.msg}`).join("; "));
    } else if (err instanceof ApiError && err.status !== 422 && err.status !== 404) {
      showError(err);
    } else { problem(err.message); }
  } finally { button.disabled = false; }
});

async function load() {
  try {
    const data = await api("/api/v1/admin/limits");
    document.getElementById("default-rpm").textContent = shown(data.defaults.requests_per_minute);
    document.getElementById("default-streams").textContent = shown(data.defaults.streams);
    document.getElementById("default-lease").textContent = `${data.defaults.lease_s} s`;
    tbody.replaceChildren(...data.overrides.map(row));
    empty.hidden = data.overrides.length > 0;
  } catch (err) { showError(err); }
}

document.getElementById("refresh").addEventListener("click", load);
load();
