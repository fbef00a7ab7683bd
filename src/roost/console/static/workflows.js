// Workflows: the user's workflows (cursor pages, a status filter) and a create form (a
// draft with an empty graph, opened on its page).
import { api, badge, clip, el, formatTime, latestLoad, LEAVING, notify, showError, submitOnce } from "./console.js";

const $ = (id) => document.getElementById(id);
const body = $("workflows-body");
let cursor = null;
const loading = latestLoad($("workflows-more"));

function workflowRow(workflow) {
  return el("tr", {},
    el("td", { class: "wide" }, el("a", { href: `/console/workflows/${workflow.id}` }, workflow.name),
       workflow.description ? el("div", { class: "muted small" }, clip(workflow.description, 140)) : null),
    el("td", {}, badge(workflow.status, workflow.status === "archived" ? "muted" : workflow.status)),
    el("td", {}, workflow.latest_version ? `version ${workflow.latest_version}`
                                         : el("span", { class: "muted" }, "not published")),
    el("td", {}, formatTime(workflow.updated_at)));
}

async function loadWorkflows(more = false) {
  const query = new URLSearchParams({ limit: "25" });
  const status = $("status-filter").value;
  if (status) query.set("status", status);
  if (more && cursor) query.set("cursor", cursor);
  const page = await loading((signal) => api(`/api/v1/workflows?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) body.replaceChildren();
  for (const workflow of page.items) body.append(workflowRow(workflow));
  cursor = page.next_cursor;
  const any = body.children.length > 0;
  $("workflows-table").hidden = !any;
  $("workflows-empty").hidden = any;
  $("workflows-empty").textContent = status ? "No workflows with this status."
                                            : "No workflows yet: create one with the form.";
  $("workflows-more").hidden = !cursor;
}

submitOnce($("create-form"), async () => {
  const name = $("workflow-name").value.trim();
  if (!name) {
    notify("A workflow needs a name.");
    $("workflow-name").focus();
    return;
  }
  const payload = { name };
  const description = $("workflow-description").value.trim();
  if (description) payload.description = description;
  const workflow = await api("/api/v1/workflows", { method: "POST", body: payload });
  location.assign(`/console/workflows/${workflow.id}`);
  return LEAVING;
});
$("workflows-more").addEventListener("click", () => loadWorkflows(true).catch(showError));
$("status-filter").addEventListener("change", () => loadWorkflows().catch(showError));
loadWorkflows().catch(showError);
