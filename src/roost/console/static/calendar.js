// Calendar: the user's calendars (create, delete, export link), an agenda of a week or a
// month (occurrences expanded by the server), the event form (create and edit, with an
// RRULE field) and the .ics import.
import { api, el, latestLoad, notify, showError, submitOnce } from "./console.js";

const $ = (id) => document.getElementById(id);
const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
let calendars = [];
let editing = null; // {calendarId, eventId} while the form edits an event

function pad(n) { return String(n).padStart(2, "0"); }

// A Date as the value of a datetime-local / date input (the browser's local time).
function localInput(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function calendarName(id) {
  return calendars.find((c) => c.id === id)?.name ?? "—";
}

// --- calendars -------------------------------------------------------------------------

function calendarRow(cal) {
  const remove = el("button", { type: "button", class: "secondary small", "aria-label": `Delete calendar ${cal.name}` }, "Delete");
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete the calendar “${cal.name}” and all its events?`)) return;
    try {
      await api(`/api/v1/calendars/${cal.id}`, { method: "DELETE" });
      notify(`Deleted ${cal.name}`, "ok");
      await refresh();
    } catch (error) { showError(error); }
  });
  return el("tr", {},
    el("td", { class: "wide" }, cal.name, cal.description ? el("div", { class: "muted small" }, cal.description) : null),
    el("td", {}, cal.timezone),
    el("td", {}, el("a", { href: `/api/v1/calendars/${cal.id}/export`, download: `${cal.name}.ics` }, `Export ${cal.name} (.ics)`)),
    el("td", {}, remove));
}

function fillSelect(select, withAll) {
  const current = select.value;
  const options = withAll ? [el("option", { value: "" }, "All calendars")] : [];
  for (const cal of calendars) options.push(el("option", { value: cal.id }, cal.name));
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

async function loadCalendars() {
  calendars = await api("/api/v1/calendars");
  $("calendars-body").replaceChildren(...calendars.map(calendarRow));
  $("calendars-table").hidden = calendars.length === 0;
  $("calendars-empty").hidden = calendars.length > 0;
  fillSelect($("agenda-calendar"), true);
  fillSelect($("event-calendar"), false);
  fillSelect($("import-calendar"), false);
}

// --- the agenda ------------------------------------------------------------------------

function rangeStart() {
  const value = $("agenda-start").value;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d);
}

function when(occ) {
  const start = new Date(occ.start);
  const end = new Date(occ.end);
  if (occ.all_day) return "All day";
  const opts = { hour: "2-digit", minute: "2-digit" };
  return `${start.toLocaleTimeString([], opts)}–${end.toLocaleTimeString([], opts)}`;
}

function occurrenceRow(occ) {
  const edit = el("button", { type: "button", class: "secondary small", "aria-label": `Edit ${occ.summary}` }, "Edit");
  edit.addEventListener("click", () => startEditing(occ.calendar_id, occ.event_id));
  const remove = el("button", { type: "button", class: "secondary small", "aria-label": `Delete ${occ.summary}` }, "Delete");
  remove.addEventListener("click", async () => {
    const what = occ.recurring ? "this event and all its occurrences" : "this event";
    if (!confirm(`Delete ${what}?`)) return;
    try {
      await api(`/api/v1/calendars/${occ.calendar_id}/events/${occ.event_id}`, { method: "DELETE" });
      notify("Event deleted", "ok");
      await loadAgenda();
    } catch (error) { showError(error); }
  });
  return el("tr", { dataset: { eventId: occ.event_id } },
    el("td", {}, when(occ)),
    el("td", { class: "wide" }, occ.summary,
       occ.recurring ? el("span", { class: "badge recurring", title: "Recurring" }, "repeats") : null,
       occ.location ? el("div", { class: "muted small" }, occ.location) : null),
    el("td", {}, calendarName(occ.calendar_id)),
    el("td", {}, edit, " ", remove));
}

const loading = latestLoad();  // quick Next, Next: the week the date field names wins

async function loadAgenda() {
  const start = rangeStart();
  const end = new Date(start);
  end.setDate(end.getDate() + Number($("agenda-view").value));
  const query = new URLSearchParams({ start: start.toISOString(), end: end.toISOString(), limit: "2000" });
  const id = $("agenda-calendar").value;
  const path = id ? `/api/v1/calendars/${id}/events` : "/api/v1/calendars/agenda";
  let answer;
  try {
    answer = await loading((signal) => api(`${path}?${query}`, { signal }));
  } catch (error) { showError(error); return; }
  if (!answer) return;  // a newer load replaced this one
  const rows = [];
  let day = "";
  for (const occ of answer.occurrences) {
    const label = new Date(occ.start).toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
    if (label !== day) {
      day = label;
      rows.push(el("tr", { class: "day" }, el("th", { scope: "rowgroup", colspan: "4" }, label)));
    }
    rows.push(occurrenceRow(occ));
  }
  $("agenda-body").replaceChildren(...rows);
  $("agenda-table").hidden = rows.length === 0;
  $("agenda-empty").hidden = rows.length > 0;
  $("agenda-truncated").hidden = !answer.truncated;
}

function shift(direction) {
  const start = rangeStart();
  const days = Number($("agenda-view").value);
  if (days === 7) start.setDate(start.getDate() + 7 * direction);
  else start.setMonth(start.getMonth() + direction);
  $("agenda-start").value = localInput(start).slice(0, 10);
  loadAgenda();
}

// --- the event form --------------------------------------------------------------------

function resetForm() {
  editing = null;
  $("event-form").reset();
  $("event-title").textContent = "New event";
  $("event-save").textContent = "Create event";
  $("event-cancel").hidden = true;
  $("event-calendar").disabled = false;
}

async function startEditing(calendarId, eventId) {
  try {
    const ev = await api(`/api/v1/calendars/${calendarId}/events/${eventId}`);
    editing = { calendarId, eventId };
    $("event-calendar").value = calendarId;
    $("event-calendar").disabled = true;
    $("event-summary").value = ev.summary;
    $("event-start").value = localInput(new Date(ev.start_time));
    $("event-end").value = localInput(new Date(ev.end_time));
    $("event-location").value = ev.location ?? "";
    $("event-rrule").value = ev.recurrence_rule ?? "";
    $("event-title").textContent = `Edit “${ev.summary}”`;
    $("event-save").textContent = "Save event";
    $("event-cancel").hidden = false;
    $("event-summary").focus();
  } catch (error) { showError(error); }
}

function eventBody() {
  const summary = $("event-summary").value.trim();
  if (!summary) throw Object.assign(new Error("Give the event a title"), { field: "event-summary" });
  if (!$("event-start").value) throw Object.assign(new Error("When does it start?"), { field: "event-start" });
  if (!$("event-end").value) throw Object.assign(new Error("When does it end?"), { field: "event-end" });
  const rule = $("event-rrule").value.trim();
  return {
    summary,
    start_time: new Date($("event-start").value).toISOString(),
    end_time: new Date($("event-end").value).toISOString(),
    timezone: BROWSER_TZ,
    location: $("event-location").value.trim() || null,
    recurrence_rule: rule || null,
  };
}

function wireEventForm() {
  $("event-cancel").addEventListener("click", resetForm);
  submitOnce($("event-form"), async () => {
    let body;
    try { body = eventBody(); } catch (error) {
      notify(error.message);
      if (error.field) $(error.field).focus();
      return;
    }
    const calendarId = editing ? editing.calendarId : $("event-calendar").value;
    if (!calendarId) { notify("Create a calendar first"); return; }
    if (editing) {
      await api(`/api/v1/calendars/${calendarId}/events/${editing.eventId}`, { method: "PATCH", body });
      notify("Event saved", "ok");
    } else {
      await api(`/api/v1/calendars/${calendarId}/events`, { method: "POST", body });
      notify("Event created", "ok");
    }
    resetForm();
    await loadAgenda();
  });
}

// --- calendars form and import ---------------------------------------------------------

function wireCalendarForm() {
  $("calendar-timezone").placeholder = BROWSER_TZ;
  submitOnce($("calendar-form"), async () => {
    const name = $("calendar-name").value.trim();
    if (!name) { notify("Give the calendar a name"); $("calendar-name").focus(); return; }
    await api("/api/v1/calendars", { method: "POST", body: { name, timezone: $("calendar-timezone").value.trim() || BROWSER_TZ } });
    $("calendar-form").reset();
    notify(`Created ${name}`, "ok");
    await refresh();
  });
}

function wireImport() {
  submitOnce($("import-form"), async () => {
    const file = $("import-file").files[0];
    const calendarId = $("import-calendar").value;
    if (!calendarId) { notify("Create a calendar first"); return; }
    if (!file) { notify("Choose an .ics file"); $("import-file").focus(); return; }
    const form = new FormData();
    form.append("file", file);
    try {
      const result = await api(`/api/v1/calendars/${calendarId}/import`, { method: "POST", body: form });
      $("import-result").textContent = `Imported: ${result.created} created, ${result.updated} updated, ${result.unchanged} unchanged`
        + (result.skipped.length ? `, ${result.skipped.length} skipped` : "") + ".";
      await loadAgenda();
    } catch (error) {
      $("import-result").textContent = "";
      showError(error);
    }
  });
}

async function refresh() {
  try {
    await loadCalendars();
  } catch (error) { showError(error); return; }
  await loadAgenda();
}

function startOfWeek(date) {
  const start = new Date(date.getFullYear(), date.getMonth(), date.getDate());
  start.setDate(start.getDate() - ((start.getDay() + 6) % 7)); // Monday
  return start;
}

$("agenda-start").value = localInput(startOfWeek(new Date())).slice(0, 10);
for (const id of ["agenda-calendar", "agenda-view", "agenda-start"]) $(id).addEventListener("change", loadAgenda);
$("agenda-prev").addEventListener("click", () => shift(-1));
$("agenda-next").addEventListener("click", () => shift(1));
wireCalendarForm();
wireEventForm();
wireImport();
refresh();
