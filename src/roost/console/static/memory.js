// Memory: what is remembered (now, as of a moment, or every version; paged; each with its
// history and a delete), add a memory, learn from text (the queued job polled until it
// ends), recall with each signal's score, the entity graph (an entity's relations over
// time and its neighbours), and forgetting a whole scope.

import { api, ApiError, clip, el, formatTime, keepDraft, latestLoad, notify, showError, submitOnce } from "./console.js";

const BASE = "/api/v1/memories";
const PAGE_SIZE = 20;
const POLL_MS = 1500;
const FINISHED = new Set(["completed", "failed", "dead_letter", "cancelled"]);
const TYPE_LABELS = {
  fact: "fact", preference: "preference", event: "event", relationship: "relationship",
  skill: "skill", goal: "goal", other: "other",
};

const $ = (id) => document.getElementById(id);

function badge(text, kind = "") {
  return el("span", { class: `badge ${kind}`.trim() }, text);
}

// Names in aria-labels: long memories are cut, the visible text stays whole.
function short(text, size = 60) {
  const flat = String(text).replace(/\s+/g, " ").trim();
  return clip(flat, size, "…");
}

const number = (value, digits = 2) => Number(value).toFixed(digits);

function time(value) {
  return el("time", { datetime: value }, formatTime(value));
}

function scopeNote(memory) {
  if (memory.session_id) return "kept by a chat session";
  if (memory.agent_id) return "kept by an agent";
  if (memory.persona_id) return "kept by a persona";
  return null;
}

function memoryMeta(memory) {
  const closed = memory.valid_to !== null && memory.valid_to !== undefined;
  const scope = scopeNote(memory);
  return el("p", { class: "memory-meta" },
    badge(TYPE_LABELS[memory.memory_type] ?? memory.memory_type, `type-${memory.memory_type}`),
    closed ? badge("no longer true", "failed") : null,
    scope ? badge(scope) : null,
    el("span", {}, `confidence ${number(memory.confidence)}`),
    el("span", {}, "valid from ", time(memory.valid_from)),
    closed ? el("span", {}, "until ", time(memory.valid_to))
      : el("span", { class: "muted" }, "still true"),
    memory.source_type && memory.source_type !== "manual"
      ? el("span", { class: "muted" }, `learned from ${memory.source_type.replace("_", " ")}`) : null);
}

// --- what I remember ------------------------------------------------------------------------

const cursors = [null];  // the cursor of every page seen so far; the last is this page's
let nextCursor = null;
const loading = latestLoad($("memories-prev"), $("memories-next"));

function viewOptions() {
  const value = $("as-of").value;
  const asOf = value ? new Date(value) : null;  // datetime-local: the browser's time zone
  return {
    asOf: asOf && !Number.isNaN(asOf.getTime()) ? asOf : null,
    includeInvalid: $("include-invalid").checked,
  };
}

function describeView({ asOf, includeInvalid }) {
  if (asOf) return `What was true on ${asOf.toLocaleString()}.`;
  if (includeInvalid) return "Everything remembered, including facts that stopped being true.";
  return "What is true now.";
}

async function loadMemories() {
  const options = viewOptions();
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const cursor = cursors[cursors.length - 1];
  if (cursor) query.set("cursor", cursor);
  if (options.asOf) query.set("as_of", options.asOf.toISOString());
  if (options.includeInvalid) query.set("include_invalid", "true");
  const page = await loading((signal) => api(`${BASE}?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  nextCursor = page.next_cursor;
  $("memories-prev").disabled = cursors.length <= 1;
  $("memories-next").disabled = !nextCursor;
  const pageNote = cursors.length > 1 ? ` Page ${cursors.length}.` : "";
  $("view-summary").textContent = describeView(options) + pageNote;
  const list = $("memories");
  if (!page.items.length) {
    const empty = cursors.length > 1 ? "No more memories."
      : options.asOf ? "Nothing remembered was true then."
        : "Nothing remembered yet: add something below, or learn it from text.";
    list.replaceChildren(el("li", { class: "empty" }, empty));
    return;
  }
  list.replaceChildren(...page.items.map(memoryItem));
}

function memoryItem(memory) {
  const historyId = `history-${memory.id}`;
  const history = el("div", { class: "memory-history", id: historyId, hidden: true });
  const toggle = el("button", {
    type: "button", class: "ghost", "aria-expanded": "false", "aria-controls": historyId,
    "aria-label": `History of “${short(memory.content)}”`,
  }, "History");
  toggle.addEventListener("click", () => toggleHistory(memory, toggle, history));
  return el("li", { class: "memory", dataset: { memoryId: memory.id } },
    el("p", { class: "memory-content" }, memory.content),
    memoryMeta(memory),
    el("div", { class: "memory-actions" },
      toggle,
      el("button", {
        type: "button", class: "danger", "aria-label": `Delete “${short(memory.content)}”`,
        onclick: () => deleteMemory(memory),
      }, "Delete")),
    history);
}

// Histories (a memory's, an entity's) are paged, at most 500 a page: the oldest 500 are shown.
const HISTORY_LIMIT = 500;

async function toggleHistory(memory, toggle, holder) {
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  holder.hidden = !open;
  if (!open) return;
  holder.replaceChildren(el("p", { class: "muted" }, "Loading the history…"));
  try {
    // A page (at most 500 events an answer): a memory changed more often shows its oldest 500.
    const page = await api(`${BASE}/${memory.id}/history?limit=${HISTORY_LIMIT}`);
    holder.replaceChildren(await historyList(page.items));
    if (page.next_cursor !== null) {
      holder.append(el("p", { class: "muted" }, `The oldest ${HISTORY_LIMIT} events are shown; it has more.`));
    }
  } catch (error) {
    holder.replaceChildren(el("p", { class: "muted" }, "The history could not be loaded."));
    showError(error);
  }
}

// The newer memory that closed this one, by its content (or a note if it is gone).
async function replacedBy(id) {
  try {
    const newer = await api(`${BASE}/${id}`);
    return el("p", { class: "history-line" }, "Replaced by: ",
      el("span", { class: "history-new" }, newer.content));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      return el("p", { class: "history-line muted" }, "Replaced by a memory since deleted.");
    }
    throw error;
  }
}

function confidenceChange(event) {
  const before = event.old_confidence;
  const after = event.new_confidence;
  if (before === null || after === null || before === undefined || after === undefined
      || Number(before) === Number(after)) return null;
  return el("p", { class: "history-line muted" },
    `confidence ${number(before)} → ${number(after)}`);
}

async function historyList(events) {
  if (!events.length) return el("p", { class: "empty" }, "No history recorded.");
  const items = [];
  for (const event of events) {
    const lines = [];
    if (event.event === "add") {
      lines.push(el("p", { class: "history-line" }, "Remembered: ",
        el("span", { class: "history-new" }, event.new_content ?? "")));
    } else if (event.event === "update") {
      lines.push(el("p", { class: "history-line" }, "Was: ",
        el("span", { class: "history-old" }, event.old_content ?? "")));
      lines.push(el("p", { class: "history-line" }, "Now: ",
        el("span", { class: "history-new" }, event.new_content ?? "")));
      lines.push(confidenceChange(event));
    } else if (event.event === "invalidate") {
      lines.push(el("p", { class: "history-line" }, "Stopped being true: ",
        el("span", { class: "history-old" }, event.old_content ?? "")));
      if (event.related_memory_id) lines.push(await replacedBy(event.related_memory_id));
    } else {
      if (event.old_content) lines.push(el("p", { class: "history-line" }, "Was: ", event.old_content));
      if (event.new_content) lines.push(el("p", { class: "history-line" }, "Now: ", event.new_content));
    }
    if (event.reason) lines.push(el("p", { class: "history-line muted" }, `Reason: ${event.reason}`));
    const label = { add: "Added", update: "Updated", invalidate: "No longer true" }[event.event]
      ?? event.event;
    items.push(el("li", { class: `history-event ${event.event}` },
      el("p", { class: "history-head" }, el("strong", {}, label), " · ", time(event.created_at)),
      lines));
  }
  return el("ol", { class: "timeline" }, items);
}

async function deleteMemory(memory) {
  if (!window.confirm(`Delete this memory? “${short(memory.content, 120)}” and its history will be gone for good.`)) return;
  try {
    await api(`${BASE}/${memory.id}`, { method: "DELETE" });
    notify("Memory deleted.", "ok");
    await loadMemories();
    if ($("memories").querySelector(".memory") === null && cursors.length > 1) {
      cursors.pop();  // the page emptied: show the one before
      await loadMemories();
    }
  } catch (error) { showError(error); }
}

async function firstPage() {
  cursors.length = 1;
  await loadMemories();
}

function wireList() {
  const reload = async () => {
    try { await firstPage(); } catch (error) { showError(error); }
  };
  $("view-form").addEventListener("submit", (event) => { event.preventDefault(); reload(); });
  $("include-invalid").addEventListener("change", reload);
  $("as-of").addEventListener("change", reload);
  $("view-now").addEventListener("click", () => {
    $("as-of").value = "";
    $("include-invalid").checked = false;
    reload();
  });
  $("memories-next").addEventListener("click", async () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    try { await loadMemories(); } catch (error) { cursors.pop(); showError(error); }
  });
  $("memories-prev").addEventListener("click", async () => {
    if (cursors.length <= 1) return;
    const left = cursors.pop();
    try { await loadMemories(); } catch (error) { cursors.push(left); showError(error); }
  });
}

// --- remember something ---------------------------------------------------------------------

function wireAdd() {
  const form = $("add-form");
  const content = $("add-content");
  const forgetDraft = keepDraft(content);
  submitOnce(form, async () => {
    const text = content.value.trim();
    if (!text) {
      notify("Write what to remember.");
      content.focus();
      return;
    }
    const confidence = Number.parseFloat($("add-confidence").value);
    if (Number.isNaN(confidence) || confidence < 0 || confidence > 1) {
      notify("Confidence is a number from 0 to 1.");
      $("add-confidence").focus();
      return;
    }
    await api(BASE, { method: "POST", body: {
      content: text, memory_type: $("add-type").value, confidence,
    } });
    form.reset();
    forgetDraft();
    notify("Remembered.", "ok");
    await firstPage();
  });
}

// --- learn from text ------------------------------------------------------------------------

let learning = 0;  // the poll that is current; an older one stops when a new learn starts

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function contents(ids) {
  const shown = ids.slice(0, 20);
  const found = await Promise.all(shown.map((id) => api(`${BASE}/${id}`).catch(() => null)));
  return found.filter(Boolean).map((memory) => el("li", {}, memory.content));
}

async function learnReport(result) {
  const added = result?.added ?? [];
  const updated = result?.updated ?? [];
  const invalidated = result?.invalidated ?? [];
  const unchanged = result?.unchanged ?? [];
  const parts = [el("p", {}, el("strong", {}, "Done. "),
    `${result?.facts ?? 0} fact${result?.facts === 1 ? "" : "s"} found: ${added.length} added, `
    + `${updated.length} updated, ${invalidated.length} no longer true, ${unchanged.length} already known.`)];
  for (const [title, ids] of [["Added", added], ["Updated", updated], ["No longer true", invalidated]]) {
    if (!ids.length) continue;
    parts.push(el("p", { class: "learn-group" }, title), el("ul", {}, await contents(ids)));
  }
  return parts;
}

async function pollLearn(taskId, token) {
  const status = $("learn-status");
  for (;;) {
    if (token !== learning) return;
    const job = await api(`${BASE}/learn/${taskId}`);
    if (token !== learning) return;
    if (!FINISHED.has(job.status)) {
      status.replaceChildren(el("p", {}, badge(job.status, job.status), " Learning from your text…"));
      await sleep(POLL_MS);
      continue;
    }
    if (job.status === "completed") {
      status.replaceChildren(...await learnReport(job.result));
      await firstPage();
    } else {
      const why = job.error || `the job ended as ${job.status.replace("_", " ")}`;
      status.replaceChildren(el("p", {}, badge(job.status, "failed"), ` Learning failed: ${why}`));
      notify(`Learning failed: ${why}`);
    }
    return;
  }
}

function wireLearn() {
  const form = $("learn-form");
  const field = $("learn-text");
  const forgetDraft = keepDraft(field);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = field.value.trim();
    if (!text) {
      notify("Paste or write the text to learn from.");
      field.focus();
      return;
    }
    const button = $("learn-button");
    button.disabled = true;
    const token = ++learning;
    $("learn-status").replaceChildren(el("p", {}, "Sending…"));
    try {
      const queued = await api(`${BASE}/learn`, { method: "POST", body: { text } });
      form.reset();
      forgetDraft();
      button.disabled = false;
      await pollLearn(queued.task_id, token);
    } catch (error) {
      if (token === learning) $("learn-status").replaceChildren();
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
}

// --- recall ---------------------------------------------------------------------------------

function signal(label, value) {
  const shown = value === null || value === undefined ? "none" : number(value, 4);
  return el("span", { class: "score" }, `${label} ${shown}`);
}

function wireRecall() {
  const form = $("recall-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = $("recall-query").value.trim();
    const list = $("recall-results");
    if (!q) {
      notify("Type what to recall.");
      $("recall-query").focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const found = await api(`${BASE}/search?${new URLSearchParams({ q, k: "10" })}`);
      const how = found.model ? `Meaning compared with ${found.model}.`
        : "No embedding model: matched by words and the graph only.";
      $("recall-summary").textContent = found.items.length
        ? `${found.items.length} ${found.items.length === 1 ? "memory" : "memories"} for “${q}”, best first. ${how}`
        : `Nothing remembered matches “${q}”.`;
      list.replaceChildren(...found.items.map((hit) => el("li", { class: "memory" },
        el("p", { class: "memory-content" }, hit.memory.content),
        memoryMeta(hit.memory),
        el("p", { class: "scores" },
          el("span", { class: "score" }, el("strong", {}, `score ${number(hit.score, 4)}`)),
          signal("vector", hit.vector), signal("text", hit.text), signal("graph", hit.graph)))));
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
}

// --- entities -------------------------------------------------------------------------------

let entityToken = 0;

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

async function findEntities(q) {
  const query = new URLSearchParams({ limit: "50" });
  if (q) query.set("q", q);
  const found = await api(`${BASE}/graph/entities?${query}`);
  $("entity-summary").textContent = found.length
    ? `${plural(found.length, "entity")}${q ? ` named like “${q}”` : ""}, most connected first. Pick one to see its relations.`
    : q ? `No entity named like “${q}”.` : "No entities yet: they come from memories that name people, places and things.";
  $("entity-results").replaceChildren(...found.map((entity) => el("li", {},
    el("button", { type: "button", class: "secondary", onclick: () => showEntity(entity.id) },
      entity.name),
    el("span", { class: "muted" },
      ` ${entity.entity_type} · ${plural(entity.current_relations, "current relation")}, ${entity.all_relations} in all`))));
}

function relationText(edge) {
  return `${edge.source_name} — ${edge.relation} → ${edge.target_name}`;
}

function historyTable(entity, items, more) {
  if (!items.length) return el("p", { class: "empty" }, "No relations recorded.");
  const table = el("table", {},
    el("caption", { class: "visually-hidden" }, `Relations of ${entity.name} over time, oldest first`),
    el("thead", {}, el("tr", {},
      ["Relation", "From", "Until", "Now", "Asserted by"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, items.map((edge) => el("tr", { class: edge.current ? "current" : "past" },
      el("td", { class: "wrap" }, relationText(edge)),
      el("td", {}, time(edge.valid_from)),
      el("td", {}, edge.valid_to ? time(edge.valid_to) : el("span", { class: "muted" }, "still true")),
      el("td", {}, edge.current ? badge("current", "ok") : badge("past")),
      el("td", { class: "wrap" }, edge.memory_content
        ?? el("span", { class: "muted" }, "memory deleted"))))));
  if (!more) return table;
  return el("div", {}, table,
    el("p", { class: "muted" }, `The oldest ${HISTORY_LIMIT} relations are shown; it has more.`));
}

async function showEntity(entityId) {
  const token = ++entityToken;
  try {
    const [history, near] = await Promise.all([
      api(`${BASE}/graph/entities/${entityId}/history?limit=${HISTORY_LIMIT}`),
      api(`${BASE}/graph/entities/${entityId}/neighbours?depth=1`),
    ]);
    if (token !== entityToken) return;
    const entity = history.entity;
    $("entity-detail").hidden = false;
    $("entity-name").textContent = `${entity.name} (${entity.entity_type})`;
    $("entity-history").replaceChildren(historyTable(entity, history.items, history.next_cursor !== null));
    $("entity-neighbours").replaceChildren(...(near.items.length ? near.items.map((n) => el("li", {},
      el("button", { type: "button", class: "secondary", onclick: () => showEntity(n.entity.id) },
        n.entity.name),
      el("span", { class: "muted" }, ` ${n.entity.entity_type}`),
      n.edges.length ? el("span", {}, ` · ${n.edges.map(relationText).join("; ")}`) : null))
      : [el("li", { class: "empty" }, "No entity is related to it now.")]));
    $("entity-name").focus();
  } catch (error) { showError(error); }
}

function wireEntities() {
  $("entity-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await findEntities($("entity-query").value.trim()); } catch (error) { showError(error); }
  });
}

// --- forget everything ----------------------------------------------------------------------

function wireForget() {
  $("forget-button").addEventListener("click", async () => {
    const narrower = $("forget-narrower").checked;
    const what = narrower
      ? "every memory you have, including those your personas, agents and chat sessions keep,"
      : "every memory in your own memory (not those your personas, agents or chat sessions keep),";
    if (!window.confirm(`Forget everything? This deletes ${what} with its history. It cannot be undone.`)) return;
    const button = $("forget-button");
    button.disabled = true;
    try {
      const answer = await api(`${BASE}/forget`, { method: "POST",
                                                   body: narrower ? { include_narrower: true } : {} });
      const message = `Forgot ${answer.deleted} ${answer.deleted === 1 ? "memory" : "memories"}.`;
      $("forget-status").textContent = message;
      notify(message, "ok");
      $("recall-results").replaceChildren();
      $("recall-summary").textContent = "";
      $("entity-detail").hidden = true;
      await firstPage();
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
}

wireList();
wireAdd();
wireLearn();
wireRecall();
wireEntities();
wireForget();
firstPage().catch(showError);
