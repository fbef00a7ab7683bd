// Administration: accounts.  List by status (keyset pages: ?after=<last id>), approve,
// suspend and reactivate (PATCH status), create.
import { api, el, formatTime, notify, pageData, showError, submitOnce } from "./console.js";

const PAGE = 50;
const STATUS_LABELS = { pending_approval: "Pending approval", active: "Active", suspended: "Suspended" };
const { me } = pageData();
const tbody = document.getElementById("users");
const empty = document.getElementById("users-empty");
const more = document.getElementById("more");
const filter = document.getElementById("status-filter");
let lastId = null;
let loading = null;

function statusBadge(status) {
  return el("span", { class: `badge ${status}` }, STATUS_LABELS[status] || status);
}

function actionButton(label, name, handler, kind = "secondary") {
  return el("button", { type: "button", class: kind, "aria-label": `${label} ${name}`, onclick: handler }, label);
}

function row(user) {
  const actions = el("div", { class: "actions" });
  // The root account cannot be suspended, and suspending yourself would lock you out.
  const mutable = !user.is_root && user.id !== me;
  if (user.status === "pending_approval") {
    actions.append(actionButton("Approve", user.username, () => approve(user)));
  }
  if (mutable && user.status === "active") {
    actions.append(actionButton("Suspend", user.username, () => setStatus(user, "suspended"), "danger"));
  }
  if (mutable && user.status === "suspended") {
    actions.append(actionButton("Reactivate", user.username, () => setStatus(user, "active")));
  }
  const tr = el("tr", { dataset: { id: user.id } },
    el("td", {}, el("strong", {}, user.username),
       user.full_name ? el("span", { class: "sub" }, user.full_name) : null,
       user.is_root ? el("span", { class: "sub" }, "root account") : null),
    el("td", {}, user.email),
    el("td", {}, user.role === "admin" ? "Administrator" : "User"),
    el("td", {}, statusBadge(user.status)),
    el("td", { class: "nowrap" }, el("time", { datetime: user.created_at }, formatTime(user.created_at))),
    el("td", {}, actions));
  return tr;
}

function replaceRow(user) {
  const old = tbody.querySelector(`tr[data-id="${CSS.escape(user.id)}"]`);
  const fresh = row(user);
  if (old) old.replaceWith(fresh); else tbody.prepend(fresh);
  empty.hidden = true;
  // Keep keyboard focus in the row that was just changed.
  (fresh.querySelector("button") || fresh.querySelector("strong"))?.focus?.();
}

async function approve(user) {
  try {
    const updated = await api(`/api/v1/users/${user.id}/approve`, { method: "POST" });
    replaceRow(updated);
    notify(`${updated.username} is approved and can sign in.`, "ok");
  } catch (error) { showError(error); }
}

async function setStatus(user, status) {
  if (status === "suspended" && !confirm(`Suspend ${user.username}? Their sessions end at once.`)) return;
  try {
    const updated = await api(`/api/v1/users/${user.id}`, { method: "PATCH", body: { status } });
    replaceRow(updated);
    notify(`${updated.username} is now ${STATUS_LABELS[updated.status].toLowerCase()}.`, "ok");
  } catch (error) { showError(error); }
}

async function load(reset) {
  if (loading) loading.abort();
  const controller = new AbortController();
  loading = controller;
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (filter.value) params.set("status", filter.value);
  if (!reset && lastId) params.set("after", lastId);
  more.disabled = true;
  try {
    const users = await api(`/api/v1/users?${params}`, { signal: controller.signal });
    if (reset) tbody.replaceChildren();
    // An account created on this page is shown at the top already; the list (oldest
    // first) reaches it again on its last page: replaced there, not listed twice.
    for (const user of users) {
      const shown = tbody.querySelector(`tr[data-id="${CSS.escape(user.id)}"]`);
      if (shown) shown.remove();
      tbody.append(row(user));
    }
    if (users.length) lastId = users[users.length - 1].id;
    else if (reset) lastId = null;
    empty.hidden = tbody.children.length > 0;
    more.hidden = users.length < PAGE;
  } catch (error) {
    if (error.name !== "AbortError") showError(error);
  } finally {
    more.disabled = false;
    if (loading === controller) loading = null;
  }
}

filter.addEventListener("change", () => { lastId = null; load(true); });
document.getElementById("filter-form").addEventListener("submit", (event) => event.preventDefault());
document.getElementById("refresh").addEventListener("click", () => { lastId = null; load(true); });
more.addEventListener("click", () => load(false));

const form = document.getElementById("create-form");
submitOnce(form, async () => {
  const value = (id) => document.getElementById(id).value;
  const body = { username: value("new-username").trim(), email: value("new-email").trim(), role: value("new-role") };
  if (!body.username || !body.email) { notify("Fill in a username and an email."); return; }
  if (value("new-full-name").trim()) body.full_name = value("new-full-name").trim();
  if (value("new-password")) body.password = value("new-password");
  const user = await api("/api/v1/users", { method: "POST", body });
  form.reset();
  if (!filter.value || filter.value === user.status) replaceRow(user);
  notify(`Account ${user.username} created.`, "ok");
});

load(true);
