// Documents: upload with a progress bar (XMLHttpRequest: fetch() cannot report upload
// progress), the ingestion runs (polled while any is pending or running), the documents
// list with pages and delete, and hybrid search with every score the API returns.

import { api, ApiError, csrf, el, formatTime, latestLoad, notify, showError, signInAgain } from "./console.js";

const BASE = "/api/v1/knowledge";
const POLL_MS = 2000;
const PAGE_SIZE = 20;
const ACTIVE = new Set(["pending", "running"]);

const $ = (id) => document.getElementById(id);

function badge(status) {
  return el("span", { class: `badge ${status}` }, status);
}

function formatBytes(size) {
  if (size === null || size === undefined) return "";
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

// Headers starting with "~" are columns that phones leave out (class "opt").
function table(caption, headers, rows) {
  return el("table", {},
    el("caption", { class: "visually-hidden" }, caption),
    el("thead", {}, el("tr", {}, headers.map((h) => h.startsWith("~")
      ? el("th", { scope: "col", class: "opt" }, h.slice(1))
      : el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows));
}

const opt = (text) => el("td", { class: "opt" }, text);

// --- upload ------------------------------------------------------------------------------

function problemFrom(xhr) {
  const type = xhr.getResponseHeader("content-type") || "";
  if (type.includes("json")) {
    try { return JSON.parse(xhr.responseText); } catch { /* not JSON after all */ }
  }
  return { title: xhr.statusText || "upload failed", status: xhr.status };
}

function upload(form) {
  const input = $("upload-file");
  const file = input.files?.[0];
  if (!file) {
    notify("Choose a file to upload.");
    input.focus();
    return;
  }
  const box = $("upload-progress-box");
  const bar = $("upload-progress");
  const status = $("upload-status");
  const button = $("upload-button");
  const body = new FormData();
  body.append("file", file);
  const collection = $("upload-collection").value.trim();
  if (collection) body.append("collection", collection);

  box.hidden = false;
  bar.value = 0;
  delete bar.dataset.state;
  status.textContent = `Uploading ${file.name}…`;
  button.disabled = true;

  const xhr = new XMLHttpRequest();
  xhr.open("POST", `${BASE}/documents`);
  xhr.setRequestHeader("X-CSRF-Token", csrf());
  xhr.setRequestHeader("Accept", "application/json");
  xhr.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.round((event.loaded / event.total) * 100);
    // The last percent waits for the server's answer: sent is not yet accepted.
    bar.value = Math.min(percent, 99);
    status.textContent = `Uploading ${file.name}: ${percent}%`;
  };
  const finish = (state, message) => {
    button.disabled = false;
    bar.dataset.state = state;
    status.textContent = message;
  };
  xhr.onload = () => {
    if (xhr.status === 401) {
      finish("failed", "Your session has ended: sign in again.");
      signInAgain();
      return;
    }
    if (xhr.status < 200 || xhr.status >= 300) {
      const error = new ApiError(xhr.status, problemFrom(xhr));
      bar.value = 0;
      finish("failed", `Upload failed: ${error.message}`);
      showError(error);
      return;
    }
    bar.value = 100;
    finish("done", `Done: ${file.name} was uploaded and is queued for ingestion.`);
    form.reset();
    notify(`${file.name} uploaded.`, "ok");
    refreshAll();
  };
  xhr.onerror = () => {
    bar.value = 0;
    const message = "Upload failed: the connection was closed (the file may be larger than the server accepts).";
    finish("failed", message);
    notify(message);
  };
  xhr.send(body);
}

// --- ingestion runs (polled while any is active) ------------------------------------------

let pollTimer = null;

function runErrors(run) {
  if (!run.errors?.length) return "";
  return el("ul", { class: "run-errors" }, run.errors.slice(0, 5).map((e) =>
    el("li", {}, e?.path ? `${e.path}: ${e.error ?? ""}` : String(e?.error ?? JSON.stringify(e)))));
}

async function loadRuns() {
  const page = await api(`${BASE}/ingestion-runs?limit=10`);
  const holder = $("runs");
  const active = page.items.filter((run) => ACTIVE.has(run.status)).length;
  $("runs-summary").textContent = active
    ? `${active} ${active === 1 ? "run is" : "runs are"} in progress; this list refreshes every 2 seconds.`
    : page.items.length ? "The 10 most recent runs." : "";
  if (!page.items.length) {
    holder.replaceChildren(el("p", { class: "empty" }, "No ingestion runs yet."));
    return active;
  }
  holder.replaceChildren(table("Ingestion runs, newest first",
    ["Source", "Status", "~Files", "Chunks", "~Started", "~Finished"],
    page.items.map((run) => el("tr", { dataset: { runId: run.id } },
      el("td", { class: "wrap" }, run.target, runErrors(run)),
      el("td", {}, badge(run.status)),
      opt(String(run.totals_files)),
      el("td", {}, String(run.totals_chunks)),
      opt(formatTime(run.started_at || run.created_at)),
      opt(formatTime(run.finished_at))))));
  return active;
}

function schedulePoll() {
  if (pollTimer !== null) return;  // one loop at a time
  pollTimer = setTimeout(async () => {
    pollTimer = null;
    let active = 0;
    try {
      active = await loadRuns();
      await loadDocuments();  // statuses move with the runs
    } catch (error) {
      showError(error);
      return;  // a failing API stops the polling; a reload starts it again
    }
    if (active) schedulePoll();
  }, POLL_MS);
}

// --- documents (paginated) ----------------------------------------------------------------

const cursors = [null];  // the cursor of every page seen so far; the last is this page's
let nextCursor = null;
// Previous and Next are disabled while a page loads (a double click moves one page), and a
// page overtaken by a newer load (a poll, a delete) is dropped.
const loading = latestLoad($("docs-prev"), $("docs-next"));

async function loadDocuments() {
  const cursor = cursors[cursors.length - 1];
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  const page = await loading((signal) => api(`${BASE}/documents?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  nextCursor = page.next_cursor;
  $("docs-prev").disabled = cursors.length <= 1;
  $("docs-next").disabled = !nextCursor;
  const holder = $("documents");
  if (!page.items.length) {
    holder.replaceChildren(el("p", { class: "empty" },
      cursors.length > 1 ? "No more documents." : "No documents yet: upload one above."));
    return;
  }
  holder.replaceChildren(table("Your documents, newest first",
    ["Name", "Status", "~Size", "~Chunks", "~Updated", "Actions"],
    page.items.map((doc) => el("tr", { dataset: { documentId: doc.id } },
      el("td", { class: "wrap" }, el("span", { class: "doc-name" }, doc.name),
        doc.collection ? el("span", { class: "muted" }, ` · ${doc.collection}`) : null,
        doc.error_message ? el("p", { class: "doc-error" }, doc.error_message) : null),
      el("td", {}, badge(doc.status)),
      opt(formatBytes(doc.bytes_size)),
      opt(String(doc.chunk_count)),
      opt(formatTime(doc.updated_at)),
      el("td", {}, el("button", {
        type: "button", class: "danger", "aria-label": `Delete ${doc.name}`,
        onclick: () => deleteDocument(doc),
      }, "Delete"))))));
}

async function deleteDocument(doc) {
  if (!window.confirm(`Delete "${doc.name}" and all its chunks? This cannot be undone.`)) return;
  try {
    await api(`${BASE}/documents/${doc.id}`, { method: "DELETE" });
    notify(`${doc.name} deleted.`, "ok");
    await loadDocuments();
    if ($("documents").querySelector("tbody") === null && cursors.length > 1) {
      cursors.pop();  // the page emptied: show the one before
      await loadDocuments();
    }
  } catch (error) { showError(error); }
}

async function refreshAll() {
  try {
    const active = await loadRuns();
    await loadDocuments();
    if (active) schedulePoll();
  } catch (error) { showError(error); }
}

// --- search -------------------------------------------------------------------------------

function score(label, value) {
  if (value === null || value === undefined) return null;
  return el("span", { class: "score" }, `${label} `, el("strong", {}, Number(value).toFixed(4)));
}

function position(hit) {
  const parts = [hit.is_curated ? "curated summary" : `chunk ${hit.chunk_index + 1}`];
  if (hit.page !== null && hit.page !== undefined) parts.push(`page ${hit.page}`);
  if (hit.section) parts.push(`section “${hit.section}”`);
  if (hit.char_start !== null && hit.char_start !== undefined && hit.char_end !== null) {
    parts.push(`characters ${hit.char_start}–${hit.char_end}`);
  }
  return parts.join(" · ");
}

async function search(form) {
  const query = $("search-query").value.trim();
  const holder = $("search-results");
  if (!query) {
    notify("Type something to search for.");
    $("search-query").focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const answer = await api(`${BASE}/search`, {
      method: "POST", body: { query, mode: $("search-mode").value, k: 10 },
    });
    if (!answer.results.length) {
      holder.replaceChildren(el("p", { class: "empty" }, `Nothing found for “${query}”.`));
      return;
    }
    holder.replaceChildren(
      el("p", { class: "muted" }, `${answer.results.length} results (${answer.mode}, ${answer.embedding_model})`),
      el("ol", { class: "results" }, answer.results.map((hit) => el("li", { class: "result" },
        el("h3", { class: "result-title" }, hit.document.name),
        el("p", { class: "muted result-source" }, position(hit),
          hit.document.collection ? ` · ${hit.document.collection}` : ""),
        el("p", { class: "scores" }, score("score", hit.score),
          score("vector similarity", hit.vector_similarity), score("text rank", hit.text_rank)),
        el("p", { class: "snippet" }, hit.content)))));
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

// --- wiring -------------------------------------------------------------------------------

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  upload(event.currentTarget);
});
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search(event.currentTarget);
});
$("docs-next").addEventListener("click", async () => {
  if (!nextCursor) return;
  cursors.push(nextCursor);
  try { await loadDocuments(); } catch (error) { cursors.pop(); showError(error); }
});
$("docs-prev").addEventListener("click", async () => {
  if (cursors.length <= 1) return;
  const left = cursors.pop();
  try { await loadDocuments(); } catch (error) { cursors.push(left); showError(error); }
});

refreshAll();
