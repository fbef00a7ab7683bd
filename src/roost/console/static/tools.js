// Tools: the tools the user may call (cursor pages, semantic search) and their MCP servers
// (add, sync, health check, delete).
import { api, badge, el, formatTime, latestLoad, notify, pageData, showError, submitOnce } from "./console.js";

const { is_admin: isAdmin } = pageData();
const toolsBody = document.getElementById("tools-body");
const serverList = document.getElementById("servers");
const servers = new Map(); // id -> server, to name where a tool comes from
let toolsCursor = null;
let serversCursor = null;
// The tool list (pages, a search) and the server list each show the latest load only.
const loadingTools = latestLoad(document.getElementById("tools-more"));
const loadingServers = latestLoad(document.getElementById("servers-more"));

// --- tools --------------------------------------------------------------------------------

function availability(tool) {
  if (!tool.enabled) return badge("disabled", "muted");
  return tool.available ? badge("available", "ok") : badge("unavailable", "failed");
}

function source(tool) {
  if (tool.is_builtin) return el("span", { class: "muted" }, "built-in");
  if (!tool.mcp_server_id) return el("span", { class: "muted" }, tool.kind);
  const server = servers.get(tool.mcp_server_id);
  return server ? server.name : el("span", { class: "muted" }, "MCP server");
}

function toolRow(tool, score) {
  return el("tr", {},
    el("td", {}, el("a", { href: `/console/tools/${tool.id}` }, tool.name),
       tool.title && tool.title !== tool.name ? el("div", { class: "muted small" }, tool.title) : null),
    el("td", { class: "wide" }, tool.description || el("span", { class: "muted" }, "no description"),
       score === undefined ? null : el("div", { class: "muted small" }, `match ${score.toFixed(2)}`)),
    el("td", {}, source(tool)),
    el("td", {}, availability(tool)));
}

function showTools(any, caption) {
  document.getElementById("tools-table").hidden = !any;
  document.getElementById("tools-empty").hidden = any;
  document.getElementById("tools-caption").textContent = caption;
}

async function loadTools(more = false) {
  const query = new URLSearchParams({ limit: "50" });
  if (more && toolsCursor) query.set("cursor", toolsCursor);
  const page = await loadingTools((signal) => api(`/api/v1/tools?${query}`, { signal }));
  if (!page) return;
  if (!more) toolsBody.replaceChildren();
  for (const tool of page.items) toolsBody.append(toolRow(tool));
  toolsCursor = page.next_cursor;
  document.getElementById("tools-more").hidden = !toolsCursor;
  document.getElementById("show-all").hidden = true;
  showTools(toolsBody.children.length > 0, "");
}

async function search(q) {
  const found = await loadingTools((signal) => api(`/api/v1/tools/search?${new URLSearchParams({ q, k: "20" })}`,
                                                   { signal }));
  if (!found) return;
  toolsBody.replaceChildren(...found.items.map((hit) => toolRow(hit.tool, hit.score)));
  toolsCursor = null;
  document.getElementById("tools-more").hidden = true;
  document.getElementById("show-all").hidden = false;
  showTools(found.items.length > 0, found.items.length
    ? `${found.items.length} tool${found.items.length === 1 ? "" : "s"} for “${q}”, best match first.`
    : `No tool matches “${q}”.`);
}

function wireSearch() {
  const form = document.getElementById("search-form");
  const input = document.getElementById("tool-query");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = input.value.trim();
    try {
      if (q) await search(q);
      else await loadTools();
    } catch (error) { showError(error); }
  });
  document.getElementById("show-all").addEventListener("click", () => {
    input.value = "";
    loadTools().catch(showError);
  });
}

// --- servers ------------------------------------------------------------------------------

function fact(term, ...value) {
  return el("div", {}, el("dt", {}, term), el("dd", {}, ...value));
}

function healthBadge(server) {
  return badge(server.health_status, server.health_status === "unknown" ? "muted" : server.health_status);
}

function serverItem(server) {
  const endpoint = server.transport === "stdio"
    ? el("code", {}, [server.command, ...(server.args || [])].join(" "))
    : el("code", {}, server.url || "");
  const secrets = [...server.env_names, ...server.header_names];
  const label = (verb) => `${verb} ${server.name}`;
  const item = el("li", { class: "server", id: `server-${server.id}`, dataset: { id: server.id } },
    el("div", { class: "server-head" },
      el("h3", {}, server.name),
      badge(server.transport === "stdio" ? "stdio" : "HTTP", "muted"),
      server.is_global ? badge("global", "info") : null,
      server.enabled ? null : badge("disabled", "muted"),
      el("span", { class: "health" }, el("span", { class: "visually-hidden" }, "Health: "),
         healthBadge(server))),
    server.description ? el("p", { class: "muted" }, server.description) : null,
    el("dl", { class: "facts" },
      fact(server.transport === "stdio" ? "Command" : "URL", endpoint),
      secrets.length ? fact("Secrets set", secrets.join(", ")) : null,
      fact("Latency", server.latency_ms === null ? "–" : `${server.latency_ms} ms`),
      fact("Last seen", server.last_seen ? formatTime(server.last_seen) : "never"),
      fact("Last check", server.last_health_check_at ? formatTime(server.last_health_check_at) : "never"),
      fact("Last sync", server.last_synced_at ? formatTime(server.last_synced_at) : "never"),
      server.server_info?.name ? fact("Reports", `${server.server_info.name} ${server.server_info.version || ""}`) : null),
    server.health_error ? el("p", { class: "step-error" }, el("strong", {}, "Health error: "), server.health_error) : null,
    el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", "aria-label": label("Sync"), onclick: (e) => sync(server, e.currentTarget) }, "Sync"),
      el("button", { type: "button", class: "secondary", "aria-label": label("Check health of"), onclick: (e) => check(server, e.currentTarget) }, "Check health"),
      el("button", { type: "button", class: "danger", "aria-label": label("Delete"), onclick: () => remove(server) }, "Delete")));
  return item;
}

// Draw a server's entry, or redraw it in place.  `pressed` is the entry's button that led
// here: busy() disabled it, which took the focus off it, so the focus is put back on its
// match in the new entry (unless the user has moved on to somewhere else meanwhile).
function putServer(server, pressed = null) {
  servers.set(server.id, server);
  const fresh = serverItem(server);
  const old = document.getElementById(`server-${server.id}`);
  if (old) {
    const active = document.activeElement;
    const label = active && old.contains(active) ? active.getAttribute("aria-label")
      : pressed && (!active || active === document.body) ? pressed.getAttribute("aria-label") : null;
    old.replaceWith(fresh);
    if (label) fresh.querySelector(`button[aria-label="${CSS.escape(label)}"]`)?.focus();
  } else {
    serverList.append(fresh);
  }
  document.getElementById("servers-empty").hidden = servers.size > 0;
}

async function busy(button, work) {
  const focused = document.activeElement === button;
  button.disabled = true;  // which takes the focus off it
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    // Not redrawn (the request failed): give the focus back if nothing else has it.
    if (focused && button.isConnected && document.activeElement === document.body) button.focus();
  }
}

function sync(server, button) {
  return busy(button, async () => {
    const result = await api(`/api/v1/mcp-servers/${server.id}/sync`, { method: "POST" });
    putServer(result.server, button);
    const parts = [`${result.added.length} added`, `${result.updated.length} updated`];
    if (result.unavailable.length) parts.push(`${result.unavailable.length} no longer offered`);
    const skipped = Object.keys(result.skipped || {});
    if (skipped.length) parts.push(`${skipped.length} skipped (${skipped.join(", ")})`);
    notify(`Synced ${server.name}: ${parts.join(", ")}.`, "ok");
    await loadTools();
  });
}

function check(server, button) {
  return busy(button, async () => {
    const checked = await api(`/api/v1/mcp-servers/${server.id}/check`, { method: "POST" });
    putServer(checked, button);
    notify(`${checked.name} is ${checked.health_status}`
           + (checked.latency_ms !== null ? ` (${checked.latency_ms} ms)` : "") + ".",
           checked.health_status === "healthy" ? "ok" : "error");
  });
}

async function remove(server) {
  if (!window.confirm(`Delete the MCP server “${server.name}” and its tools? Their past runs stay.`)) return;
  try {
    await api(`/api/v1/mcp-servers/${server.id}`, { method: "DELETE" });
    servers.delete(server.id);
    document.getElementById(`server-${server.id}`)?.remove();
    document.getElementById("servers-empty").hidden = servers.size > 0;
    notify(`Deleted ${server.name}.`, "ok");
    await loadTools();
  } catch (error) { showError(error); }
}

async function loadServers(more = false) {
  const query = new URLSearchParams({ limit: "50" });
  if (more && serversCursor) query.set("cursor", serversCursor);
  const page = await loadingServers((signal) => api(`/api/v1/mcp-servers?${query}`, { signal }));
  if (!page) return;
  if (!more) {
    serverList.replaceChildren();
    servers.clear();
  }
  for (const server of page.items) putServer(server);
  serversCursor = page.next_cursor;
  document.getElementById("servers-more").hidden = !serversCursor;
  document.getElementById("servers-empty").hidden = servers.size > 0;
}

// --- adding a server ----------------------------------------------------------------------

function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean);
}

// "Name: value" (headers) or "NAME=value" (env) lines as an object; null on a bad line.
function pairs(text, separator, what) {
  const found = {};
  for (const line of lines(text)) {
    const at = line.indexOf(separator);
    if (at <= 0) {
      notify(`${what}: each line needs a name, “${separator}” and a value.`);
      return null;
    }
    found[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return found;
}

function wireAddServer() {
  const form = document.getElementById("server-form");
  const field = (name) => form.elements.namedItem(name);
  const transport = field("transport");
  const toggle = () => {
    const stdio = transport.value === "stdio";
    document.getElementById("stdio-fields").hidden = !stdio;
    document.getElementById("http-fields").hidden = stdio;
  };
  transport.addEventListener("change", toggle);
  toggle();
  submitOnce(form, async () => {
    const body = { name: field("name").value.trim(), transport: transport.value };
    if (field("description").value.trim()) body.description = field("description").value.trim();
    if (transport.value === "stdio") {
      body.command = field("command").value.trim();
      body.args = lines(field("args").value);
      const env = pairs(field("env").value, "=", "Environment");
      if (env === null) return;
      body.env = env;
    } else {
      body.url = field("url").value.trim();
      const headers = pairs(field("headers").value, ":", "Headers");
      if (headers === null) return;
      body.headers = headers;
    }
    if (isAdmin && field("is_global")?.checked) body.is_global = true;
    const server = await api("/api/v1/mcp-servers", { method: "POST", body });
    putServer(server);
    form.reset();
    toggle();
    notify(`Added ${server.name}: sync it to list its tools.`, "ok");
    document.querySelector(`#server-${server.id} button`)?.focus();
  });
}

document.getElementById("tools-more").addEventListener("click", () => loadTools(true).catch(showError));
document.getElementById("servers-more").addEventListener("click", () => loadServers(true).catch(showError));
wireSearch();
wireAddServer();
loadServers().then(() => loadTools()).catch(showError);
