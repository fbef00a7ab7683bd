// The console's shared module: API calls with the session cookie and CSRF header, problem
// details shown as messages, sign-in expiry (drafts kept per user, dropped on sign-out),
// sign-out, theme, navigation on phones.

export const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `request failed (${status})`);
    this.status = status;
    this.problem = problem;
  }
}

const DRAFT_PREFIX = "roost-draft:";
// The signed-in user's id (base.html): drafts are theirs alone, never the next user's.
export const viewerId = () => document.querySelector('meta[name="roost-user"]')?.content ?? "";
// Whether the signed-in user is an administrator: what a page shows only to them (the API
// decides what they may do; this only spares others a button that can only fail).
export const viewerIsAdmin = () => Boolean(document.querySelector('meta[name="roost-admin"]'));

// Keep what the user typed in a field across a sign-in (expired session, reload), for
// the same user only: another user signing in in this tab never sees it.
export function keepDraft(field, key = location.pathname) {
  const user = viewerId();
  if (!user) return () => {};
  const storeKey = DRAFT_PREFIX + user + ":" + key + "#" + field.id;
  const saved = sessionStorage.getItem(storeKey);
  if (saved && !field.value) field.value = saved;
  field.addEventListener("input", () => {
    if (field.value) sessionStorage.setItem(storeKey, field.value);
    else sessionStorage.removeItem(storeKey);
  });
  return () => sessionStorage.removeItem(storeKey);
}

export function signInAgain() {
  const here = location.pathname + location.search;
  location.assign(`/console/login?next=${encodeURIComponent(here)}&expired=1`);
}

async function problemOf(response) {
  try {
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) return await response.json();
  } catch { /* not JSON */ }
  return { title: response.statusText, status: response.status };
}

// fetch() against Roost: JSON in and out, CSRF on state changes, ApiError on 4xx/5xx.
export async function api(path, { method = "GET", body, headers = {}, raw = false, signal } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin", signal };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrf();
  if (body instanceof FormData || body instanceof Blob) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && !path.startsWith("/console/session")) {
    signInAgain();
    throw new ApiError(401, { detail: "your session has ended: sign in again" });
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

let noticeTimer;
export function notify(message, kind = "error") {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (kind !== "error") noticeTimer = setTimeout(() => { box.hidden = true; }, 4000);
  // An error stays until read, but a tap (or Escape) puts it away: on a phone it covers
  // the bottom of the page, often the very button to press again.
  box.title = "Tap to dismiss";
  box.onclick = () => { box.hidden = true; };
}
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") { const box = document.getElementById("notice"); if (box) box.hidden = true; }
});

// A problem's message for the notice: a 422's field errors say more than its summary
// ("request has invalid or missing fields; see errors"), so they replace its "see errors".
export function problemMessage(error) {
  if (!(error instanceof ApiError)) return String(error?.message || error);
  const errors = Array.isArray(error.problem?.errors) ? error.problem.errors : [];
  const details = errors.filter((e) => e && e.msg).map((e) => {
    const where = (e.loc || []).filter((part) => part !== "body").join(".");
    return where ? `${where}: ${e.msg}` : e.msg;
  });
  if (!details.length) return error.message;
  return `${error.message.replace(/;\s*see errors$/, "")}: ${details.slice(0, 5).join("; ")}`;
}

export function showError(error) {
  notify(problemMessage(error), "error");
}

// Small DOM builder: el("li", {class: "x", onclick: f}, "text", child...).  Text is always
// text (never parsed as HTML), so user content cannot inject markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// What an edit form's fields were filled with: a field the user has not touched is never
// sent back, whatever its control did to the value (an <input> drops line breaks, the
// form's trimming drops spaces: a multi-line description was rewritten by a name change).
const filledWith = new WeakMap();

export function fill(field, value) {
  field.value = value;
  filledWith.set(field, field.value);
}

export function edited(field) {
  return !filledWith.has(field) || field.value !== filledWith.get(field);
}

// An edit form's PATCH of only what changed (``body``): "Nothing has changed" for an empty
// one, the API's problem as a message; the saved object, or null when nothing was saved.
export async function saveChanges(url, body) {
  if (!Object.keys(body).length) {
    notify("Nothing has changed.", "info");
    return null;
  }
  try {
    const saved = await api(url, { method: "PATCH", body });
    notify("Saved.", "ok");
    return saved;
  } catch (error) {
    showError(error);
    return null;
  }
}

// A status word as a badge; ``kind`` picks its colour (console.css), by default the word.
export function badge(text, kind = text) {
  return el("span", { class: `badge ${kind}` }, text);
}

// ``text`` cut to at most ``size`` characters, between code points: ``slice`` counts UTF-16
// units and can split an emoji, and the server refuses the lone half left in a text sent back.
// A cut text ends with ``more`` (e.g. "…"), counted in ``size``.
const graphemes = globalThis.Intl?.Segmenter
  ? new Intl.Segmenter(undefined, { granularity: "grapheme" }) : null;

// ``text`` cut to at most ``size`` code points (what the API's limits count), ``more`` after
// it, never inside a character as it is shown: a flag (two code points), a family emoji
// (joined by zero-width joiners) or a letter with its accents stays whole or goes.
export function clip(text, size, more = "") {
  const points = Array.from(text);
  if (points.length <= size) return text;
  const room = Math.max(0, size - Array.from(more).length);
  if (!graphemes) return points.slice(0, room).join("") + more;
  let kept = "";
  let used = 0;
  for (const { segment } of graphemes.segment(text)) {
    const length = Array.from(segment).length;
    if (used + length > room) break;
    kept += segment;
    used += length;
  }
  return kept + more;
}

// A list's loads, the latest winning: ``load(fetch)`` calls ``fetch(signal)`` and resolves to
// its answer, or to null once a newer load of the same list has started (this one is then
// aborted), so a late page never lands under a newer filter or page.  ``buttons`` ("Load
// more", "Next") are disabled while a load is in flight: a double click loads one page, once.
export function latestLoad(...buttons) {
  let current = null;
  return async (fetch) => {
    current?.abort();
    const mine = new AbortController();
    current = mine;
    for (const button of buttons) button.disabled = true;
    try {
      const answer = await fetch(mine.signal);
      return current === mine ? answer : null;
    } catch (error) {
      if (current !== mine) return null;
      throw error;
    } finally {
      if (current === mine) {
        current = null;
        for (const button of buttons) button.disabled = false;
      }
    }
  };
}

// A list shown a page at a time with a "Load more" button (``more``): the returned
// ``load(reset)`` shows the first page again (``reset``: a filter or a row changed) or
// appends the next one, through one ``latestLoad`` (a double click loads one page, a late
// page is dropped). ``path()`` gives the list's URL path and its filters.
export function pagedList({ body, empty, more, row, path }) {
  let cursor = null;
  const loading = latestLoad(more);
  async function load(reset = true) {
    const [base, params] = path();
    if (!reset && cursor) params.set("cursor", cursor);
    try {
      const page = await loading((signal) => api(`${base}?${params}`, { signal }));
      if (!page) return;  // a newer load replaced this one
      if (reset) body.replaceChildren();
      body.append(...page.items.map(row));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = body.children.length > 0;
    } catch (error) { showError(error); }
  }
  more.addEventListener("click", () => load(false));
  return load;
}

// What a ``submitOnce`` handler returns when it leaves the page (``location.assign``): its
// buttons stay disabled until the page is gone, so a click meanwhile sends nothing twice.
export const LEAVING = Symbol("leaving the page");

// ``form``'s submit, sent once at a time: ``send(event)`` runs with the form's submit buttons
// disabled and the form busy, so a double click (or Enter pressed twice) creates one object,
// not two.  An error ``send`` leaves uncaught is shown; the buttons are enabled again when it
// ends, unless it returned ``LEAVING``.
export function submitOnce(form, send) {
  let busy = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    busy = true;
    const buttons = [...form.elements].filter((field) => field.type === "submit" && !field.disabled);
    for (const button of buttons) button.disabled = true;
    form.setAttribute("aria-busy", "true");
    let outcome;
    try {
      outcome = await send(event);
    } catch (error) {
      showError(error);
    } finally {
      form.removeAttribute("aria-busy");
      if (outcome !== LEAVING) {
        busy = false;
        for (const button of buttons) button.disabled = false;
      }
    }
  });
}

export function formatTime(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function pageData() {
  const node = document.getElementById("page-data");
  return node ? JSON.parse(node.textContent) : {};
}

// Drafts in this tab's storage but ``keep`` (a user id's, or none: all of them).
function dropDrafts(keep = null) {
  const mine = keep ? DRAFT_PREFIX + keep + ":" : null;
  for (const name of Object.keys(sessionStorage)) {
    if (name.startsWith(DRAFT_PREFIX) && !(mine && name.startsWith(mine))) sessionStorage.removeItem(name);
  }
}

// POST /console/logout; true when the session has ended.  A tab opened before the last
// sign-in (here or in another tab) holds a stale CSRF token, refused with 403: it asks a
// fresh page for the current token and tries once more.
async function signOut() {
  const post = async (token) => {
    const response = await fetch("/console/logout", { method: "POST", headers: { "X-CSRF-Token": token },
                                                      credentials: "same-origin", redirect: "manual" });
    return response.type === "opaqueredirect" || response.ok;  // the 303 to the sign-in page
  };
  try {
    if (await post(csrf())) return true;
    const html = await (await fetch("/console/login", { credentials: "same-origin" })).text();
    const fresh = new DOMParser().parseFromString(html, "text/html")
      .querySelector('meta[name="csrf-token"]')?.content;
    return Boolean(fresh) && await post(fresh);
  } catch {
    return false;  // offline, server down: still signed in
  }
}

// Every page: theme switch, sign-out, the phone menu, the "session expired" hint.
function wireChrome() {
  const user = viewerId();
  if (user) dropDrafts(user);  // another user signed in in this tab: theirs are gone
  const toggle = document.getElementById("theme-toggle");
  toggle?.addEventListener("click", async () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    toggle.textContent = next === "dark" ? "Light theme" : "Dark theme";
    toggle.setAttribute("aria-label", `Switch to ${next === "dark" ? "light" : "dark"} theme`);
    try {
      await api("/api/v1/users/me/settings", { method: "PATCH", body: { theme: next } });
    } catch (error) { showError(error); }
  });
  document.getElementById("logout-form")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!await signOut()) {
      notify("Sign-out failed: reload the page and sign out again");
      return;
    }
    dropDrafts();  // whoever uses this tab next must not find what was being typed
    location.assign("/console/login");
  });
  const navToggle = document.querySelector(".nav-toggle");
  navToggle?.addEventListener("click", () => {
    const open = navToggle.getAttribute("aria-expanded") !== "true";
    navToggle.setAttribute("aria-expanded", String(open));
    document.getElementById("nav")?.classList.toggle("open", open);
  });
}

wireChrome();
