// Administration: the job queue.  Counts by status and priority, dead letters waiting
// (details with the error as text, retry), recent jobs by status; cursor pages.
import { api, clip, el, formatTime, notify, pagedList, showError } from "./console.js";

const PRIORITIES = ["critical", "high", "normal", "low", "background"];
const STATUSES = ["pending", "queued", "running", "paused", "completed", "failed", "stuck", "cancelled", "dead_letter"];
const label = (value) => value.replaceAll("_", " ");

// --- statistics ---------------------------------------------------------------------------

function ageText(seconds) {
  if (seconds === null || seconds === undefined) return "none waiting";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function loadStats() {
  try {
    const s = await api("/api/v1/tasks/stats");
    const recent = s.throughput.find((t) => t.minutes === 15) || s.throughput[s.throughput.length - 1];
    const running = Object.values(s.running_by_worker).reduce((a, b) => a + b, 0);
    const items = [
      ["Dead letters waiting", String(s.dead_letters_waiting)],
      ["Oldest waiting job", ageText(s.oldest_ready_age_s)],
      ["Running now", String(running)],
    ];
    if (recent) {
      items.push([`Completed, last ${recent.minutes} min`, String(recent.completed)]);
      items.push([`Dead-lettered, last ${recent.minutes} min`, String(recent.dead_lettered)]);
    }
    document.getElementById("summary").replaceChildren(
      ...items.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value))));
    document.getElementById("stats-head").replaceChildren(el("tr", {},
      el("th", { scope: "col" }, "Status"),
      PRIORITIES.map((p) => el("th", { scope: "col", class: "num" }, p)),
      el("th", { scope: "col", class: "num" }, "Total")));
    const cell = (n) => el("td", { class: "num" }, String(n || 0));
    document.getElementById("stats-body").replaceChildren(
      ...STATUSES.map((st) => {
        const byPriority = s.by_status_and_priority[st] || {};
        return el("tr", {}, el("th", { scope: "row" }, label(st)),
                  PRIORITIES.map((p) => cell(byPriority[p])), cell(s.by_status[st]));
      }),
      el("tr", {}, el("th", { scope: "row" }, "all"), PRIORITIES.map((p) => cell(s.by_priority[p])),
         cell(Object.values(s.by_status).reduce((a, b) => a + b, 0))));
  } catch (error) { showError(error); }
}

// --- dead letters -------------------------------------------------------------------------

const deadBody = document.getElementById("dead");
const deadEmpty = document.getElementById("dead-empty");
const deadMore = document.getElementById("dead-more");

function firstLine(text) {
  const line = (text || "").split("\n", 1)[0];
  return clip(line, 161, "…");
}

// Details load when first opened: the stack and history are in the single-letter answer.
function letterDetails(letter) {
  const details = el("details", {}, el("summary", { "aria-label": `Details of dead letter ${letter.task_type}` }, "Details"));
  let loaded = false;
  details.addEventListener("toggle", async () => {
    if (!details.open || loaded) return;
    loaded = true;
    try {
      const d = await api(`/api/v1/tasks/dead-letters/${letter.id}`);
      // Built with el() so absent parts are skipped and every value stays text.
      details.append(el("div", {},
        el("p", { class: "sub" }, "Letter ", el("code", {}, d.id),
           d.original_task_id ? [" · job ", el("code", {}, d.original_task_id)] : null),
        el("strong", {}, "Error"), el("pre", {}, d.error_message),
        d.error_stack ? [el("strong", {}, "Stack"), el("pre", {}, d.error_stack)] : null,
        el("strong", {}, "Payload"), el("pre", {}, JSON.stringify(d.payload, null, 2)),
        d.retry_history.length
          ? [el("strong", {}, "History"), el("pre", {}, JSON.stringify(d.retry_history, null, 2))]
          : null));
    } catch (error) { loaded = false; showError(error); }
  });
  return details;
}

function letterRow(letter) {
  const retry = el("button", { type: "button", "aria-label": `Retry ${letter.task_type} (${letter.id})` }, "Retry");
  const tr = el("tr", { dataset: { id: letter.id } },
    el("td", {}, el("strong", {}, letter.task_type), el("span", { class: "sub" }, letter.priority)),
    el("td", { class: "nowrap" }, letter.queue),
    el("td", { class: "nowrap" }, el("time", { datetime: letter.moved_at }, formatTime(letter.moved_at))),
    el("td", {}, el("span", { class: "error-text" }, firstLine(letter.error_message)), letterDetails(letter)),
    el("td", {}, el("div", { class: "actions" }, retry)));
  retry.addEventListener("click", async () => {
    retry.disabled = true;
    try {
      const task = await api(`/api/v1/tasks/dead-letters/${letter.id}/retry`, { method: "POST" });
      tr.remove();
      deadEmpty.hidden = deadBody.children.length > 0;
      notify(`${task.task_type} is queued again (job ${task.id}).`, "ok");
      loadStats();
      loadTasks(true);
    } catch (error) {
      retry.disabled = false;
      showError(error);
    }
  });
  return tr;
}

const loadDead = pagedList({
  body: deadBody, empty: deadEmpty, more: deadMore, row: letterRow,
  path: () => ["/api/v1/tasks/dead-letters", new URLSearchParams({ retried: "false", limit: "25" })],
});

// --- recent jobs --------------------------------------------------------------------------

const tasksBody = document.getElementById("tasks");
const tasksEmpty = document.getElementById("tasks-empty");
const tasksMore = document.getElementById("tasks-more");
const taskStatus = document.getElementById("task-status");

function taskRow(t) {
  return el("tr", {},
    el("td", {}, el("strong", {}, t.task_type), el("span", { class: "sub mono" }, t.id)),
    el("td", {}, el("span", { class: `badge ${t.status}` }, label(t.status))),
    el("td", {}, `${t.queue} · ${t.priority}`),
    el("td", { class: "num" }, String(t.attempts)),
    el("td", { class: "nowrap" }, el("time", { datetime: t.created_at }, formatTime(t.created_at))),
    el("td", {}, t.error_message ? el("span", { class: "error-text" }, firstLine(t.error_message)) : ""));
}

const loadTasks = pagedList({
  body: tasksBody, empty: tasksEmpty, more: tasksMore, row: taskRow,
  path: () => {
    const params = new URLSearchParams({ limit: "25" });
    if (taskStatus.value) params.set("status", taskStatus.value);
    return ["/api/v1/tasks", params];
  },
});

function refreshAll() {
  loadStats();
  loadDead(true);
  loadTasks(true);
}

taskStatus.addEventListener("change", () => loadTasks(true));
document.getElementById("tasks-filter").addEventListener("submit", (event) => event.preventDefault());
document.getElementById("refresh").addEventListener("click", refreshAll);
refreshAll();
