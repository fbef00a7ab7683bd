// Code versions: the commits the user can see, newest first (cursor pages), narrowed by
// chat session, run and branch.  The filters live in the URL (?chat_session_id=, ?run_id=,
// ?branch=; ?session_id= is read as the chat session), so other pages can link here.
import { api, el, formatTime, latestLoad, notify, showError } from "./console.js";
import { shortHash, statusBadge } from "./code_status.js";

const $ = (id) => document.getElementById(id);
const body = $("versions-body");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const FIELDS = [["chat_session_id", "filter-chat", "chat session"], ["run_id", "filter-run", "run"],
                ["branch", "filter-branch", "branch"]];
let cursor = null;
const loading = latestLoad($("versions-more"));

function filtersFromUrl() {
  const params = new URLSearchParams(location.search);
  const found = {};
  const chat = params.get("chat_session_id") || params.get("session_id");
  if (chat) found.chat_session_id = chat.trim();
  for (const name of ["run_id", "branch"]) if (params.get(name)) found[name] = params.get(name).trim();
  return found;
}

const filters = filtersFromUrl();

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function filesCell(version) {
  const files = version.files_changed || [];
  const added = files.reduce((sum, f) => sum + f.additions, 0);
  const removed = files.reduce((sum, f) => sum + f.deletions, 0);
  return [plural(files.length, "file"),
          el("div", { class: "muted small" }, `+${added} −${removed} lines`)];
}

function repository(version) {
  return version.chat_session_id
    ? el("a", { href: `/console/chat/${version.chat_session_id}` }, "chat")
    : el("a", { href: `/console/runs/${version.run_id}` }, "run");
}

function versionRow(version) {
  const message = (version.commit_message || "").split("\n")[0];
  return el("tr", {},
    el("td", {}, el("a", { href: `/console/code/${version.id}`, class: "hash" },
                    el("code", {}, shortHash(version.version_hash)))),
    el("td", {}, el("code", {}, version.branch)),
    el("td", { class: "wide" }, el("span", { class: "commit-subject" }, message || "(no message)"),
       el("div", { class: "muted small" }, "in a ", repository(version))),
    el("td", {}, filesCell(version)),
    el("td", {}, statusBadge(version)),
    el("td", {}, el("time", { datetime: version.created_at }, formatTime(version.created_at))));
}

async function loadVersions(more = false) {
  const query = new URLSearchParams({ limit: "25", ...filters });
  if (more && cursor) query.set("cursor", cursor);
  const page = await loading((signal) => api(`/api/v1/code-versions?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) body.replaceChildren();
  for (const version of page.items) body.append(versionRow(version));
  cursor = page.next_cursor;
  const any = body.children.length > 0;
  $("versions-table").hidden = !any;
  $("versions-empty").hidden = any;
  if (!any && Object.keys(filters).length) $("versions-empty").textContent = "No code versions match these filters.";
  $("versions-more").hidden = !cursor;
}

function showFilters() {
  for (const [name, id] of FIELDS) $(id).value = filters[name] || "";
  const summary = $("filter-summary");
  const parts = [];
  if (filters.chat_session_id) {
    parts.push("of ", el("a", { href: `/console/chat/${filters.chat_session_id}` }, "this chat"));
  }
  if (filters.run_id) {
    parts.push(parts.length ? ", " : "of ", el("a", { href: `/console/runs/${filters.run_id}` }, "this run"));
  }
  if (filters.branch) parts.push(" on branch ", el("code", {}, filters.branch));
  summary.hidden = parts.length === 0;
  summary.replaceChildren("Showing the versions ", ...parts, ".");
}

$("filter-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const [name, id, label] of FIELDS) {
    const value = $(id).value.trim();
    if (!value) continue;
    if (name !== "branch" && !UUID.test(value)) {
      notify(`The ${label} id is not an id (like 0b9c1e6e-…-…): copy it from the ${label}'s address.`);
      $(id).focus();
      return;
    }
    query.set(name, value);
  }
  location.assign(query.toString() ? `/console/code?${query}` : "/console/code");
});
$("filter-clear").addEventListener("click", () => location.assign("/console/code"));
$("versions-more").addEventListener("click", () => loadVersions(true).catch(showError));
showFilters();
loadVersions().catch(showError);
