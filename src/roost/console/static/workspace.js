// Projects and tasks: the tasks board (highest calculated score first, inline importance
// and urgency that re-sort it, done, delete, add), the projects list (create, archive,
// details with counts of what each groups).
import { api, el, latestLoad, notify, showError, submitOnce } from "./console.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
let projects = [];
let nextCursor = null;
// The board's loads, first pages and "Load more" alike: a filter change drops a page still
// loading, and a double click on "Load more" loads one page.
const loadingBoard = latestLoad($("board-more"));

function projectName(id) {
  return projects.find((p) => p.id === id)?.name ?? "";
}

// --- the board -------------------------------------------------------------------------

async function patchTask(task, body, message) {
  try {
    await api(`/api/v1/tasks-board/${task.id}`, { method: "PATCH", body });
    notify(message, "ok");
    await loadBoard();
  } catch (error) { showError(error); await loadBoard(); }
}

function weightInput(task, field, label) {
  const input = el("input", { type: "number", class: "weight", min: "0", max: "10", step: "0.5",
    value: task[field], "aria-label": `${label} of ${task.title}` });
  input.addEventListener("change", () => {
    const value = Number(input.value);
    if (input.value === "" || Number.isNaN(value)) { notify(`${label}: a number from 0 to 10`); return; }
    patchTask(task, { [field]: value }, `${label} of “${task.title}” set to ${value}`);
  });
  return input;
}

function taskRow(task) {
  const done = el("button", { type: "button", class: "secondary small", "aria-label": `Mark ${task.title} done` }, "Done");
  done.addEventListener("click", () => patchTask(task, { status: "done", completion_percentage: 100 }, `“${task.title}” is done`));
  const remove = el("button", { type: "button", class: "secondary small", "aria-label": `Delete ${task.title}` }, "Delete");
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete the task “${task.title}”?`)) return;
    try {
      await api(`/api/v1/tasks-board/${task.id}`, { method: "DELETE" });
      await loadBoard();
    } catch (error) { showError(error); }
  });
  const project = task.project_id ? projectName(task.project_id) : "";
  return el("tr", { dataset: { taskId: task.id } },
    el("td", { class: "score" }, task.calculated_score.toFixed(2)),
    el("td", { class: "wide" }, el("span", { class: "title" }, task.title),
      project ? el("div", { class: "muted small" }, project) : null),
    el("td", {}, task.status.replace("_", " ")),
    el("td", {}, task.priority),
    el("td", {}, task.due_date ? new Date(task.due_date).toLocaleString() : "—"),
    el("td", {}, weightInput(task, "importance_weight", "Importance")),
    el("td", {}, weightInput(task, "urgency_weight", "Urgency")),
    el("td", {}, task.status === "done" ? null : done, remove));
}

function boardQuery(cursor) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if ($("board-project").value) params.set("project_id", $("board-project").value);
  if ($("board-status").value) params.set("status", $("board-status").value);
  if (cursor) params.set("cursor", cursor);
  return `/api/v1/tasks-board?${params}`;
}

async function loadBoard() {
  try {
    const page = await loadingBoard((signal) => api(boardQuery(null), { signal }));
    if (!page) return;  // a newer load replaced this one
    $("board-body").replaceChildren(...page.items.map(taskRow));
    nextCursor = page.next_cursor;
    $("board-more").hidden = !nextCursor;
    $("board-table").hidden = page.items.length === 0;
    $("board-empty").hidden = page.items.length > 0;
  } catch (error) { showError(error); }
}

async function loadMore() {
  if (!nextCursor) return;
  try {
    const page = await loadingBoard((signal) => api(boardQuery(nextCursor), { signal }));
    if (!page) return;  // a newer load replaced this one
    $("board-body").append(...page.items.map(taskRow));
    nextCursor = page.next_cursor;
    $("board-more").hidden = !nextCursor;
  } catch (error) { showError(error); }
}

function wireTaskForm() {
  submitOnce($("task-form"), async () => {
    const title = $("task-title").value.trim();
    if (!title) { notify("Give the task a title"); $("task-title").focus(); return; }
    const body = { title, priority: $("task-priority").value };
    if ($("task-due").value) body.due_date = new Date($("task-due").value).toISOString();
    if ($("task-project").value) body.project_id = $("task-project").value;
    await api("/api/v1/tasks-board", { method: "POST", body });
    $("task-title").value = "";
    notify("Task added", "ok");
    await loadBoard();
  });
}

// --- projects --------------------------------------------------------------------------

async function showProject(project) {
  try {
    const detail = await api(`/api/v1/projects/${project.id}`);
    $("detail-title").textContent = detail.name;
    $("detail-description").textContent = detail.description ?? "";
    const labels = { tasks: "Tasks", open_tasks: "Open tasks", agents: "Agents", workflows: "Workflows",
      documents: "Documents", chat_sessions: "Chat sessions" };
    $("detail-counts").replaceChildren(...Object.entries(labels).flatMap(([key, label]) =>
      [el("dt", {}, label), el("dd", { dataset: { count: key } }, String(detail.counts[key]))]));
    $("project-detail").hidden = false;
  } catch (error) { showError(error); }
}

function projectRow(project) {
  const open = el("button", { type: "button", class: "secondary small", "aria-label": `Show ${project.name}` }, "Show");
  open.addEventListener("click", () => showProject(project));
  const archive = el("button", { type: "button", class: "secondary small", "aria-label": `Archive ${project.name}` }, "Archive");
  archive.addEventListener("click", async () => {
    try {
      await api(`/api/v1/projects/${project.id}`, { method: "PATCH", body: { status: "archived" } });
      notify(`Archived ${project.name}`, "ok");
      await loadProjects();
    } catch (error) { showError(error); }
  });
  return el("tr", {},
    el("td", { class: "wide" }, project.name),
    el("td", {}, project.status),
    el("td", {}, project.programming_language ?? "—"),
    el("td", {}, open, project.status === "archived" ? null : archive));
}

function fillProjects(select, first) {
  const current = select.value;
  select.replaceChildren(el("option", { value: "" }, first),
    ...projects.map((p) => el("option", { value: p.id }, p.name)));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

async function loadProjects() {
  try {
    projects = (await api("/api/v1/projects?limit=500")).items;
  } catch (error) { showError(error); return; }
  $("projects-body").replaceChildren(...projects.map(projectRow));
  $("projects-table").hidden = projects.length === 0;
  $("projects-empty").hidden = projects.length > 0;
  fillProjects($("board-project"), "All projects");
  fillProjects($("task-project"), "None");
}

function wireProjectForm() {
  submitOnce($("project-form"), async () => {
    const name = $("project-name").value.trim();
    if (!name) { notify("Give the project a name"); $("project-name").focus(); return; }
    const body = { name };
    if ($("project-language").value.trim()) body.programming_language = $("project-language").value.trim();
    if ($("project-repository").value.trim()) body.repository_url = $("project-repository").value.trim();
    await api("/api/v1/projects", { method: "POST", body });
    $("project-name").value = "";
    notify(`Created ${name}`, "ok");
    await loadProjects();
  });
}

for (const id of ["board-project", "board-status"]) $(id).addEventListener("change", loadBoard);
$("board-more").addEventListener("click", loadMore);
wireTaskForm();
wireProjectForm();
await loadProjects();
await loadBoard();
