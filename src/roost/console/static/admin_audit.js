// Administration: the audit log.  Entries newest first with the API's filters, cursor
// pages, and a check of the hash chain.
import { api, el, formatTime, latestLoad, showError } from "./console.js";

const PAGE = 50;
const tbody = document.getElementById("entries");
const empty = document.getElementById("entries-empty");
const more = document.getElementById("more");
const form = document.getElementById("filters");
const userSelect = document.getElementById("f-user");
const knownActions = new Set();
const names = new Map();  // user id -> Promise of a display name
let cursor = null;
const loading = latestLoad(more);

// --- actors: user ids shown as usernames --------------------------------------------------

async function loadUsers() {
  // A few pages of accounts for the filter; anyone else is still named when they appear.
  let after = null;
  const users = [];
  for (let i = 0; i < 4; i += 1) {
    const params = new URLSearchParams({ limit: "500" });
    if (after) params.set("after", after);
    const page = await api(`/api/v1/users?${params}`);
    users.push(...page);
    if (page.length < 500) break;
    after = page[page.length - 1].id;
  }
  users.sort((a, b) => a.username.localeCompare(b.username));
  for (const u of users) names.set(u.id, Promise.resolve(u.username));
  userSelect.append(...users.map((u) => el("option", { value: u.id }, u.username)));
}

async function nameOf(userId) {
  await usersReady;  // most actors are in the list: no request of their own
  if (!names.has(userId)) {
    names.set(userId, api(`/api/v1/users/${userId}`).then((u) => u.username,
      () => `deleted account ${userId.slice(0, 8)}`));
  }
  return names.get(userId);
}

function actorCell(entry) {
  const cell = el("td", {});
  if (!entry.user_id) {
    cell.append(el("span", { class: "muted" }, "system"));
    return cell;
  }
  const name = el("span", {}, entry.user_id.slice(0, 8));
  cell.append(name);
  nameOf(entry.user_id).then((text) => { name.textContent = text; });
  return cell;
}

// --- entries ------------------------------------------------------------------------------

function detailsCell(entry) {
  const extra = {};
  for (const key of ["description", "changes", "metadata", "error_message", "user_agent", "correlation_id", "trace_id", "persona_id", "run_id"]) {
    if (entry[key] !== null && entry[key] !== undefined) extra[key] = entry[key];
  }
  if (!Object.keys(extra).length) return el("td", {}, el("span", { class: "muted" }, "—"));
  return el("td", {}, el("details", {},
    el("summary", { "aria-label": `Details of entry ${entry.seq}` }, "Show"),
    el("pre", {}, JSON.stringify(extra, null, 2))));
}

function row(entry) {
  return el("tr", { dataset: { seq: String(entry.seq) } },
    el("td", { class: "nowrap" }, el("time", { datetime: entry.created_at }, formatTime(entry.created_at)),
       el("span", { class: "sub" }, `#${entry.seq}`)),
    actorCell(entry),
    el("td", {}, el("code", {}, entry.action),
       entry.success ? null : [" ", el("span", { class: "badge failed" }, "failed")],
       el("span", { class: "sub" }, entry.event_category)),
    el("td", {}, entry.resource_type || el("span", { class: "muted" }, "—"),
       entry.resource_id ? el("span", { class: "sub mono" }, entry.resource_id) : null),
    el("td", { class: "mono" }, entry.ip_address || ""),
    detailsCell(entry));
}

function filterParams() {
  const params = new URLSearchParams({ limit: String(PAGE) });
  const text = (id) => document.getElementById(id).value.trim();
  if (text("f-action")) params.set("action", text("f-action"));
  if (userSelect.value) params.set("user_id", userSelect.value);
  if (text("f-resource")) params.set("resource_type", text("f-resource"));
  if (text("f-category")) params.set("category", text("f-category"));
  if (text("f-success")) params.set("success", text("f-success"));
  // datetime-local is the browser's local time without a zone: send it as UTC.
  for (const [id, key] of [["f-since", "since"], ["f-until", "until"]]) {
    const value = text(id);
    if (value) params.set(key, new Date(value).toISOString());
  }
  return params;
}

function rememberActions(entries) {
  const list = document.getElementById("known-actions");
  for (const e of entries) {
    if (knownActions.has(e.action)) continue;
    knownActions.add(e.action);
    list.append(el("option", { value: e.action }));
  }
}

async function load(reset) {
  const params = filterParams();
  if (!reset && cursor) params.set("cursor", cursor);
  try {
    const page = await loading((signal) => api(`/api/v1/audit/logs?${params}`, { signal }));
    if (!page) return;  // a newer load replaced this one
    if (reset) tbody.replaceChildren();
    tbody.append(...page.items.map(row));
    rememberActions(page.items);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    empty.hidden = tbody.children.length > 0;
  } catch (error) { showError(error); }
}

form.addEventListener("submit", (event) => { event.preventDefault(); load(true); });
// "reset" fires before the fields are cleared: load once they are.
form.addEventListener("reset", () => setTimeout(() => load(true), 0));
more.addEventListener("click", () => load(false));

// --- chain verification -------------------------------------------------------------------

const verifyButton = document.getElementById("verify");
const verifyResult = document.getElementById("verify-result");
verifyButton.addEventListener("click", async () => {
  verifyButton.disabled = true;
  verifyResult.className = "result";
  verifyResult.replaceChildren("Verifying the chain…");
  try {
    const report = await api("/api/v1/audit/verify");
    const count = `${report.rows_checked} ${report.rows_checked === 1 ? "entry" : "entries"}`;
    if (report.ok) {
      verifyResult.className = "result ok";
      // Entries are linked into the chain just after they commit; verify links any
      // still waiting before it checks (docs/architecture.md, "The audit log").
      const linked = report.linked_now
        ? ` ${report.linked_now} recent ${report.linked_now === 1 ? "entry was" : "entries were"} linked first.`
        : "";
      // The head (newest entry's place in the chain and hash): kept outside the database,
      // it shows a later cut of the newest entries, which no chain can show by itself.
      // Its chain position, not an entry "#": the list numbers entries by seq, which
      // differs from chain_seq once a transaction rolled back or commits overtook.
      const head = report.head_hash
        ? [" Head: chain position ", el("code", {}, String(report.head_chain_seq)), ", hash ",
          el("code", {}, report.head_hash), " (keep it elsewhere to detect removed newest entries)."]
        : [];
      verifyResult.replaceChildren(el("strong", {}, "Chain intact"),
        `${count} checked: every entry matches its hash and links to the one before.${linked}`,
        ...head);
    } else {
      verifyResult.className = "result broken";
      verifyResult.replaceChildren(el("strong", {}, `Chain broken at entry #${report.broken_seq}`),
        `${report.reason || "the chain does not verify"}. Entry id `, el("code", {}, report.broken_id || "?"),
        ` (${count} in the log).`);
    }
  } catch (error) {
    verifyResult.className = "";
    verifyResult.replaceChildren();
    showError(error);
  } finally {
    verifyButton.disabled = false;
  }
});

const usersReady = loadUsers().catch(showError);
load(true);
