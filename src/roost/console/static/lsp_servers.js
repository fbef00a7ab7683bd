// The tools page's language servers: the ones the user may use (own and global, cursor
// pages), a health check (the LSP initialize/shutdown handshake), and for administrators
// registering and deleting them.
import { api, badge, el, formatTime, latestLoad, notify, pageData, showError, submitOnce } from "./console.js";

const { is_admin: isAdmin } = pageData();
const list = document.getElementById("lsp-servers");
let cursor = null;
const loading = latestLoad(document.getElementById("lsp-more"));

function fact(term, ...value) {
  return el("div", {}, el("dt", {}, term), el("dd", {}, ...value));
}

function item(server) {
  const label = (verb) => `${verb} ${server.name}`;
  const info = server.server_info || {};
  return el("li", { class: "server", id: `lsp-${server.id}` },
    el("div", { class: "server-head" },
      el("h3", {}, server.name),
      badge(server.language, "muted"),
      server.is_global ? badge("global", "info") : null,
      server.enabled ? null : badge("disabled", "muted"),
      el("span", { class: "health" }, el("span", { class: "visually-hidden" }, "Health: "),
         badge(server.health_status, server.health_status === "unknown" ? "muted" : server.health_status))),
    el("dl", { class: "facts" },
      fact("Command", el("code", {}, [server.command, ...server.args].join(" "))),
      fact("Files", server.file_patterns.length ? server.file_patterns.join(", ") : "any"),
      fact("Start-up", server.latency_ms === null ? "–" : `${server.latency_ms} ms`),
      fact("Last check", server.last_checked_at ? formatTime(server.last_checked_at) : "never"),
      info.name ? fact("Reports", `${info.name} ${info.version || ""}`) : null),
    server.health_error ? el("p", { class: "step-error" }, el("strong", {}, "Health error: "), server.health_error) : null,
    el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", "aria-label": label("Check health of"),
                     onclick: (e) => check(server, e.currentTarget) }, "Check health"),
      isAdmin ? el("button", { type: "button", class: "danger", "aria-label": label("Delete"),
                               onclick: () => remove(server) }, "Delete") : null));
}

function put(server) {
  const fresh = item(server);
  const old = document.getElementById(`lsp-${server.id}`);
  if (old) old.replaceWith(fresh);
  else list.append(fresh);
  document.getElementById("lsp-empty").hidden = list.children.length > 0;
}

async function check(server, button) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const checked = await api(`/api/v1/lsp-servers/${server.id}/check`, { method: "POST" });
    put(checked);
    notify(`${checked.name} is healthy (${checked.latency_ms} ms).`, "ok");
  } catch (error) {
    // A failed check is recorded before the 502/504: show the server as it now is.
    showError(error);
    try { put(await api(`/api/v1/lsp-servers/${server.id}`)); } catch { /* gone */ }
  } finally {
    const again = document.querySelector(`#lsp-${server.id} button[aria-label^="Check"]`);
    if (again) { again.disabled = false; again.removeAttribute("aria-busy"); again.focus(); }
  }
}

async function remove(server) {
  if (!window.confirm(`Delete the language server “${server.name}”?`)) return;
  try {
    await api(`/api/v1/lsp-servers/${server.id}`, { method: "DELETE" });
    document.getElementById(`lsp-${server.id}`)?.remove();
    document.getElementById("lsp-empty").hidden = list.children.length > 0;
    notify(`Deleted ${server.name}.`, "ok");
  } catch (error) { showError(error); }
}

async function load(more = false) {
  const query = new URLSearchParams({ limit: "50" });
  if (more && cursor) query.set("cursor", cursor);
  const page = await loading((signal) => api(`/api/v1/lsp-servers?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) list.replaceChildren();
  for (const server of page.items) put(server);
  cursor = page.next_cursor;
  document.getElementById("lsp-empty").hidden = list.children.length > 0;
  document.getElementById("lsp-more").hidden = !cursor;
}

const lines = (value) => String(value || "").split("\n").map((l) => l.trim()).filter(Boolean);

function wireForm() {
  const form = document.getElementById("lsp-form");
  if (!form) return;
  submitOnce(form, async () => {
    const data = new FormData(form);
    const text = (key) => String(data.get(key) || "").trim();
    const missing = ["name", "language", "command"].find((key) => !text(key));
    if (missing) {
      notify(`A language server needs a ${missing}.`);
      form.elements.namedItem(missing).focus();
      return;
    }
    const body = { name: text("name"), language: text("language"), command: text("command"),
                   args: lines(data.get("args")), file_patterns: lines(data.get("file_patterns")),
                   is_global: data.get("is_global") === "on" };
    const created = await api("/api/v1/lsp-servers", { method: "POST", body });
    put(created);
    form.reset();
    notify(`Registered ${created.name}: check its health to start it once.`, "ok");
  });
}

document.getElementById("lsp-more").addEventListener("click", () => load(true).catch(showError));
wireForm();
load().catch(showError);
