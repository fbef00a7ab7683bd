// The chat page.  The session list is virtualised (pages of 100 load as the list nears its
// end; only the rows near the viewport are in the DOM, so 10,000 sessions cost what 40 do);
// the conversation shows the newest page first and loads older pages on scrolling up; the
// composer streams the answer (server-sent events over fetch) into the assistant's bubble.
import { api, ApiError, clip, el, formatTime, keepDraft, notify, pageData, showError } from "./console.js";

const SESSION_PAGE = 100;
const MESSAGE_PAGE = 50;
const OVERSCAN_ROWS = 10;   // rows rendered above and below the visible ones
const LOAD_AHEAD_PX = 600;  // start loading the next page this far before the end

const data = pageData();
const sessionId = data.session_id || null;
const userId = data.user_id;

const chatUrl = (id) => `/console/chat/${encodeURIComponent(id)}`;
const sessionApi = (id) => `/api/v1/chat/sessions/${encodeURIComponent(id)}`;
const titleOf = (session) => (session?.title || "").trim() || "Untitled chat";
const $ = (id) => document.getElementById(id);

// --- the session list ------------------------------------------------------------------

const list = {
  scroller: $("session-list"),
  canvas: $("session-canvas"),
  rows: $("session-rows"),
  sentinel: $("session-sentinel"),
  empty: $("session-empty"),
  items: [],
  ids: new Set(),
  nodes: new Map(),   // session id -> rendered <li>, reused while the row stays near view
  cursor: null,
  done: false,
  loading: null,
  rowHeight: 40,      // measured from the first rendered row
  measured: false,
  frame: 0,
  revealed: false,
};

function sessionRow(item) {
  const link = el("a", { href: chatUrl(item.id), title: titleOf(item),
                         "aria-current": item.id === sessionId ? "page" : null },
                  titleOf(item));
  const row = el("li", {}, link);
  row.dataset.title = titleOf(item);
  return row;
}

function updateRow(row, item) {
  const title = titleOf(item);
  if (row.dataset.title === title) return;
  row.dataset.title = title;
  const link = row.firstElementChild;
  link.textContent = title;
  link.title = title;
}

// Render the rows in and near the viewport; keep nodes that stay (focus survives scrolling).
function renderSessions() {
  list.frame = 0;
  const { items, scroller, rows, rowHeight } = list;
  const count = items.length;
  list.canvas.style.height = `${count * rowHeight}px`;
  list.empty.hidden = count > 0 || !list.done;
  scroller.dataset.loaded = String(count);
  const top = scroller.scrollTop;
  const height = scroller.clientHeight || 800;
  const first = Math.max(0, Math.floor(top / rowHeight) - OVERSCAN_ROWS);
  const last = Math.min(count, Math.ceil((top + height) / rowHeight) + OVERSCAN_ROWS);
  rows.style.transform = `translateY(${first * rowHeight}px)`;
  const wanted = [];
  const nodes = new Map();
  for (let i = first; i < last; i++) {
    const item = items[i];
    let row = list.nodes.get(item.id);
    if (row) updateRow(row, item);
    else row = sessionRow(item);
    row.setAttribute("aria-posinset", String(i + 1));
    row.setAttribute("aria-setsize", list.done ? String(count) : "-1");
    nodes.set(item.id, row);
    wanted.push(row);
  }
  list.nodes = nodes;
  const keep = new Set(wanted);
  for (const child of [...rows.children]) if (!keep.has(child)) child.remove();
  // What is left is in list order already: only insert the new rows at their places.
  let next = rows.firstElementChild;
  for (const row of wanted) {
    if (row === next) next = next.nextElementSibling;
    else rows.insertBefore(row, next);
  }
  if (!list.measured && rows.firstElementChild) {
    list.measured = true;
    const measured = rows.firstElementChild.getBoundingClientRect().height;
    if (measured > 0 && Math.abs(measured - rowHeight) > 0.5) {
      list.rowHeight = measured;
      renderSessions();
    }
  }
}

function scheduleRender() {
  if (!list.frame) list.frame = requestAnimationFrame(renderSessions);
}

function nearEnd() {
  const { scroller } = list;
  return scroller.scrollTop + scroller.clientHeight + LOAD_AHEAD_PX >= list.items.length * list.rowHeight;
}

function loadSessions() {
  if (list.loading || list.done) return list.loading;
  list.loading = (async () => {
    const params = new URLSearchParams({ limit: String(SESSION_PAGE) });
    if (userId) params.set("user_id", userId);  // an administrator's list is theirs too
    if (list.cursor) params.set("cursor", list.cursor);
    try {
      const page = await api(`/api/v1/chat/sessions?${params}`);
      for (const item of page.items) {
        if (list.ids.has(item.id)) continue;
        list.ids.add(item.id);
        list.items.push(item);
      }
      list.cursor = page.next_cursor;
      list.done = !page.next_cursor;
    } catch (error) {
      list.done = true;  // no retry loop on a failing API; a reload tries again
      showError(error);
    } finally {
      list.loading = null;
    }
    renderSessions();
    revealCurrent();
    // The observer only fires on a change: a short page in a tall list needs the next now.
    if (!list.done && nearEnd()) loadSessions();
  })();
  return list.loading;
}

// Bring the open chat's row into view if the first page has it (later pages load while
// the user scrolls: jumping then would pull the list from under them).
function revealCurrent() {
  if (list.revealed || !sessionId) return;
  list.revealed = true;
  const index = list.items.findIndex((item) => item.id === sessionId);
  if (index < 0) return;
  const { scroller, rowHeight } = list;
  const top = index * rowHeight;
  if (top < scroller.scrollTop || top + rowHeight > scroller.scrollTop + scroller.clientHeight) {
    scroller.scrollTop = Math.max(0, top - scroller.clientHeight / 2);
    renderSessions();
  }
}

function updateListed(session) {
  const index = list.items.findIndex((item) => item.id === session.id);
  if (index >= 0) list.items[index] = session;
  else if (!list.ids.has(session.id)) {
    list.ids.add(session.id);
    list.items.unshift(session);  // newest first
  }
  renderSessions();
}

function removeListed(id) {
  list.items = list.items.filter((item) => item.id !== id);
  list.ids.delete(id);
  renderSessions();
}

function startSessionList() {
  list.scroller.addEventListener("scroll", scheduleRender, { passive: true });
  window.addEventListener("resize", scheduleRender);
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadSessions();
  }, { root: list.scroller, rootMargin: `0px 0px ${LOAD_AHEAD_PX}px 0px` }).observe(list.sentinel);
  return loadSessions();
}

async function newChat(button) {
  button.disabled = true;
  try {
    const created = await api("/api/v1/chat/sessions", { method: "POST", body: {} });
    location.assign(chatUrl(created.id));
  } catch (error) {
    showError(error);
    button.disabled = false;
  }
}

// --- the conversation ------------------------------------------------------------------

const ROLE_NAMES = { user: "You", assistant: "Assistant", system: "System", developer: "Developer",
                     tool: "Tool" };

function messageText(message) {
  if (message.content) return message.content;
  if (message.tool_calls?.length) return `Called ${message.tool_calls.map((c) => c.name).join(", ")}`;
  return "";
}

function messageNode(message) {
  const role = ROLE_NAMES[message.role] ? message.role : "assistant";
  const label = [ROLE_NAMES[role]];
  if (message.role === "tool" && message.tool_call_name) label.push(message.tool_call_name);
  if (message.role === "assistant" && message.model) label.push(message.model);
  const meta = el("span", { class: "role" }, label.join(" · "));
  if (message.created_at) {
    meta.append(" · ", el("time", { datetime: message.created_at }, formatTime(message.created_at)));
  }
  const node = el("article", { class: `message ${role}`, dataset: { seq: message.seq ?? "" } },
                  meta, el("div", { class: "content" }, messageText(message)));
  return node;
}

const conversation = sessionId ? {
  box: $("messages"),
  list: $("message-list"),
  sentinel: $("messages-sentinel"),
  start: $("messages-start"),
  title: $("chat-title"),
  status: $("chat-status"),
  session: null,
  cursor: null,
  done: false,
  loading: null,
  seqs: new Set(),
  titled: false,
} : null;

function atBottom() {
  const { box } = conversation;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom() {
  conversation.box.scrollTop = conversation.box.scrollHeight;
}

function appendMessage(message) {
  if (message.seq != null) {
    if (conversation.seqs.has(message.seq)) return null;
    conversation.seqs.add(message.seq);
  }
  const stick = atBottom();
  const node = messageNode(message);
  conversation.list.append(node);
  if (stick) scrollToBottom();
  return node;
}

// One page of history, older than what is shown; the first page lands scrolled to the end.
function loadMessages() {
  const c = conversation;
  if (c.loading || c.done) return c.loading;
  const first = c.cursor === null && c.seqs.size === 0;
  c.loading = (async () => {
    const params = new URLSearchParams({ limit: String(MESSAGE_PAGE) });
    if (c.cursor) params.set("cursor", c.cursor);
    c.box.setAttribute("aria-busy", "true");
    try {
      const page = await api(`${sessionApi(sessionId)}/messages?${params}`);
      const fresh = page.items.filter((m) => !c.seqs.has(m.seq)).reverse();
      fresh.forEach((m) => c.seqs.add(m.seq));
      const fragment = document.createDocumentFragment();
      fragment.append(...fresh.map(messageNode));
      const { scrollHeight, scrollTop } = c.box;
      c.cursor = page.next_cursor;
      c.done = !page.next_cursor;
      c.start.hidden = !c.done;
      c.list.prepend(fragment);
      // Keep what the reader was looking at where it was (older messages went above it).
      if (first) scrollToBottom();
      else c.box.scrollTop = scrollTop + (c.box.scrollHeight - scrollHeight);
    } catch (error) {
      c.done = true;
      showError(error);
    } finally {
      c.loading = null;
      c.box.setAttribute("aria-busy", "false");
    }
    if (!c.done && c.box.scrollTop < LOAD_AHEAD_PX / 2) loadMessages();
    return first;
  })();
  return c.loading;
}

function showSession(session) {
  conversation.session = session;
  conversation.title.textContent = titleOf(session);
  document.title = `${titleOf(session)} · Chat · Roost`;
}

async function loadSession() {
  try {
    showSession(await api(sessionApi(sessionId)));
  } catch (error) {
    showError(error);
  }
}

async function startConversation() {
  const c = conversation;
  const session = loadSession();
  await loadMessages();
  // Older pages load when the top comes near; observed only once the end is in view.
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadMessages();
  }, { root: c.box, rootMargin: `${LOAD_AHEAD_PX / 2}px 0px 0px 0px` }).observe(c.sentinel);
  await session;
  await loadModels();
}

// --- the model picker ------------------------------------------------------------------

const modelSelect = $("model-select");

async function loadModels() {
  const current = conversation.session?.model || "";
  let ids = [];
  let agents = [];
  const [models, active] = await Promise.allSettled([
    api("/v1/models"), api("/api/v1/agents?is_active=true&limit=100")]);
  for (const result of [models, active]) {
    const error = result.reason;
    if (error && (!(error instanceof ApiError) || error.status >= 500)) showError(error);
  }
  if (models.value) ids = (models.value.data || []).map((m) => m.id).filter((id) => id && !id.startsWith("agent:"));
  // An agent answers in the chat too (model "agent:<slug>": a run of it, docs/agents.md).
  if (active.value) agents = active.value.items || [];
  const agentIds = agents.map((a) => `agent:${a.slug}`);
  if (current && !ids.includes(current) && !agentIds.includes(current)) ids.unshift(current);
  modelSelect.append(...ids.map((id) => el("option", { value: id }, id)));
  if (agents.length) {
    modelSelect.append(el("optgroup", { label: "Agents" },
      agents.map((a) => el("option", { value: `agent:${a.slug}` }, `${a.name} (agent)`))));
  }
  modelSelect.value = current;
}

async function changeModel() {
  const previous = conversation.session?.model || "";
  try {
    showSession(await api(sessionApi(sessionId), { method: "PATCH",
                                                   body: { model: modelSelect.value || null } }));
    notify(`This chat now uses ${modelSelect.value || "the default model"}.`, "ok");
  } catch (error) {
    modelSelect.value = previous;
    showError(error);
  }
}

// --- rename and delete -----------------------------------------------------------------

function wireSessionActions() {
  const form = $("rename-form");
  const input = $("rename-input");
  const renameButton = $("rename-button");
  const title = conversation.title;
  const editing = (on) => {
    form.hidden = !on;
    title.hidden = on;
    renameButton.hidden = on;
    if (on) {
      input.value = conversation.session?.title || "";
      input.focus();
      input.select();
    } else renameButton.focus();
  };
  renameButton.addEventListener("click", () => editing(true));
  $("rename-cancel").addEventListener("click", () => editing(false));
  form.addEventListener("keydown", (event) => { if (event.key === "Escape") editing(false); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    try {
      const session = await api(sessionApi(sessionId), { method: "PATCH",
                                                         body: { title: value || null } });
      showSession(session);
      updateListed(session);
      editing(false);
      notify("Chat renamed.", "ok");
    } catch (error) { showError(error); }
  });
  $("delete-button").addEventListener("click", async () => {
    const name = titleOf(conversation.session);
    if (!confirm(`Delete the chat “${name}” and all its messages? This cannot be undone.`)) return;
    try {
      await api(sessionApi(sessionId), { method: "DELETE" });
      removeListed(sessionId);
      location.assign("/console/chat");
    } catch (error) { showError(error); }
  });
  modelSelect.addEventListener("change", changeModel);
}

// --- the composer ----------------------------------------------------------------------

// Server-sent events from a fetch body: [event name, parsed data] per frame.
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const frame = (block) => {
    let name = "message";
    const lines = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) lines.push(line.slice(5).replace(/^ /, ""));
    }
    if (!lines.length) return null;
    try { return [name, JSON.parse(lines.join("\n"))]; } catch { return null; }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value.replace(/\r/g, "");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const parsed = frame(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (parsed) yield parsed;
    }
    if (done) break;
  }
  const last = frame(buffer);
  if (last) yield last;
}

function wireComposer() {
  const form = $("composer");
  const input = $("composer-input");
  const send = $("send-button");
  const status = conversation.status;
  // What is typed survives a reload and an expired sign-in (api() sends the user to sign in).
  const clearDraft = keepDraft(input, `chat:${sessionId}`);
  let sending = false;

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (sending) return;
    const content = input.value;
    if (!content.trim()) {
      notify("Write a message first.");
      input.focus();
      return;
    }
    sending = true;
    send.disabled = true;
    status.textContent = "Sending…";
    let bubble = null;
    let finished = false;
    const fail = () => {
      if (!bubble) return;
      bubble.classList.remove("streaming");
      bubble.classList.add("failed");
      if (!bubble.querySelector(".content").textContent) bubble.remove();
    };
    try {
      const body = { content, stream: true };
      if (modelSelect.value) body.model = modelSelect.value;
      let sources = [];
      if ($("use-documents").checked) {
        status.textContent = "Searching your documents…";
        sources = await retrieve(content);
        if (sources.length) body.context = sources.map((s) => ({ source: s.label, text: s.text }));
        else notify("Nothing in your documents matches; the model answers without them.", "info");
      }
      const response = await api(`${sessionApi(sessionId)}/messages`,
                                 { method: "POST", body, raw: true });
      if (!(response.headers.get("content-type") || "").includes("text/event-stream")) {
        const exchange = await response.json();  // not answered by a model: no stream
        appendMessage(exchange.user_message);
        if (exchange.assistant_message) appendMessage(exchange.assistant_message);
        finished = true;
      } else {
        for await (const [name, payload] of sseEvents(response)) {
          if (name === "start") {
            // The message is stored: the composer may forget it.
            appendMessage(payload.user_message);
            if (input.value === content) {
              input.value = "";
              clearDraft();
            }
            bubble = appendMessage({ role: "assistant", content: "" });
            bubble.classList.add("streaming");
            status.textContent = "The assistant is answering.";
            autoTitle(content);
          } else if (name === "delta" && bubble) {
            const stick = atBottom();
            bubble.querySelector(".content").append(payload.content);
            if (stick) scrollToBottom();
          } else if (name === "done") {
            const saved = payload.assistant_message;
            if (bubble && saved) {
              conversation.seqs.add(saved.seq);
              const stick = atBottom();
              const node = messageNode(saved);
              if (sources.length) node.append(sourcesNode(sources));
              bubble.replaceWith(node);
              if (stick) scrollToBottom();
            }
            finished = true;
            status.textContent = "The answer is complete.";
          } else if (name === "error") {
            finished = true;
            fail();
            status.textContent = "";
            showError(new ApiError(payload.status, payload));
          }
        }
        if (!finished) {
          fail();
          notify("The answer was interrupted; your message is saved.");
        }
      }
    } catch (error) {
      fail();
      status.textContent = "";
      showError(error);  // before "start" nothing was stored and the text stays in the box
    } finally {
      sending = false;
      send.disabled = false;
    }
  });
}

// Retrieval-augmented chat: the best passages of the user's documents go with the message
// (as `context`, for this answer only); the answer lists them as its sources.
const CONTEXT_PASSAGES = 4;

async function retrieve(question) {
  const found = await api("/api/v1/knowledge/search", { method: "POST",
    body: { query: clip(question, 2000), k: CONTEXT_PASSAGES, mode: "hybrid" } });
  return found.results.map((hit) => ({
    label: `${hit.document.name}${hit.page ? `, page ${hit.page}` : ""} (passage ${hit.chunk_index + 1})`,
    text: clip(hit.content, 8000),
    score: hit.score,
  }));
}

function sourcesNode(sources) {
  return el("ol", { class: "sources", "aria-label": "Sources" },
            sources.map((s) => el("li", {}, `${s.label} · score ${s.score.toFixed(3)}`)));
}

// A chat without a title is named after its first message.
async function autoTitle(content) {
  const session = conversation.session;
  if (!session || session.title || session.message_count > 0 || conversation.titled) return;
  conversation.titled = true;  // once, even if a second message is sent meanwhile
  const firstLine = content.trim().split("\n")[0];
  const title = clip(firstLine, 60, "…");
  try {
    const updated = await api(sessionApi(sessionId), { method: "PATCH", body: { title } });
    showSession(updated);
    updateListed(updated);
  } catch (error) { showError(error); }
}

// --- start -----------------------------------------------------------------------------

const started = [startSessionList()];
$("new-chat").addEventListener("click", (event) => newChat(event.currentTarget));
$("start-chat")?.addEventListener("click", (event) => newChat(event.currentTarget));
if (conversation) {
  wireComposer();
  wireSessionActions();
  started.push(startConversation());
}
// For scripts and tests: every first request of the page has been answered.
Promise.allSettled(started).then(() => { $("main").dataset.ready = "true"; });
