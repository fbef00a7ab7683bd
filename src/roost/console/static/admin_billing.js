// Administration: billing.  Plans (create with limits, deactivate, reactivate), subscribe a
// user (looked up by username or e-mail through the users API), subscriptions with their
// lifecycle (pause, resume, cancel, change plan), invoices (preview, issue, download), the
// model price table (edit, add, remove), the analytics export (status, "Export now") and
// streaming metrics per model.  Money is sent and shown as decimal strings.

import { api, el, formatTime, latestLoad, notify, showError, submitOnce } from "./console.js";
import { invoiceRow, money, period, statusBadge } from "./billing.js";

const $ = (id) => document.getElementById(id);
const number = (value) => Number(value).toLocaleString();
const PAGE = 100;

let plans = [];
const users = new Map();  // id -> user (the accounts the users API listed)
const groups = new Map();  // id -> group name
let usersLoaded = null;
let subsCursor = null;
const loadingSubs = latestLoad($("subs-more"));
let subsShown = [];

// --- users (subscriber names and the lookup) -------------------------------------------------

function loadUsers() {
  usersLoaded ??= (async () => {
    let after = null;
    for (let page = 0; page < 20; page += 1) {  // 10,000 accounts are plenty to pick from
      const batch = await api(`/api/v1/users?limit=500${after ? `&after=${after}` : ""}`);
      for (const user of batch) users.set(user.id, user);
      if (batch.length < 500) break;
      after = batch[batch.length - 1].id;
    }
    $("known-users").replaceChildren(...[...users.values()]
      .filter((u) => u.status === "active")
      .map((u) => el("option", { value: u.username }, u.full_name || u.email)));
  })().catch((error) => { usersLoaded = null; throw error; });
  return usersLoaded;
}

async function loadGroups() {
  let cursor = null;
  for (let page = 0; page < 20; page += 1) {  // 10,000 groups name their subscriptions
    const params = new URLSearchParams({ all: "true", limit: "500" });
    if (cursor) params.set("cursor", cursor);
    const batch = await api(`/api/v1/groups?${params}`);
    for (const group of batch.items) groups.set(group.id, group.name);
    cursor = batch.next_cursor;
    if (!cursor) break;
  }
}

function subscriberName(sub) {
  if (sub.group_id) return `group ${groups.get(sub.group_id) || sub.group_id}`;
  const user = users.get(sub.user_id);
  return user ? user.username : sub.user_id;
}

async function findUser(text) {
  // The server finds the account as sign-in reads a name (any case, an address typed with
  // a decomposed accent); an unknown one is null.
  try {
    const user = await api(`/api/v1/users/${encodeURIComponent(text.trim())}`);
    users.set(user.id, user);
    return user;
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

// --- plans -----------------------------------------------------------------------------------

function limitsText(limits) {
  const parts = [];
  if (limits.models_allowed) parts.push(`models: ${limits.models_allowed.join(", ")}`);
  if (limits.max_agents !== null && limits.max_agents !== undefined) parts.push(`agents ≤ ${limits.max_agents}`);
  if (limits.max_documents !== null && limits.max_documents !== undefined) parts.push(`documents ≤ ${limits.max_documents}`);
  if (limits.runs_per_day !== null && limits.runs_per_day !== undefined) parts.push(`runs/day ≤ ${limits.runs_per_day}`);
  return parts.length ? parts.join("; ") : "none";
}

function planRow(plan) {
  const action = plan.active
    ? el("button", { type: "button", class: "danger", "aria-label": `Deactivate ${plan.key}`,
                     onclick: () => setPlanActive(plan, false) }, "Deactivate")
    : el("button", { type: "button", class: "secondary", "aria-label": `Reactivate ${plan.key}`,
                     onclick: () => setPlanActive(plan, true) }, "Reactivate");
  return el("tr", { dataset: { key: plan.key } },
    el("th", { scope: "row", class: "mono" }, plan.key),
    el("td", {}, plan.name),
    el("td", { class: "num nowrap" }, `${money(plan.price, plan.currency)} / ${plan.billing_period}`),
    el("td", { class: "num" }, number(plan.included_credits)),
    el("td", {}, limitsText(plan.limits)),
    el("td", {}, plan.trial_days ? `${plan.trial_days} days` : "none"),
    el("td", {}, statusBadge(plan.active ? "active" : "inactive")),
    el("td", {}, el("div", { class: "actions" }, action)));
}

async function loadPlans() {
  const page = await api(`/api/v1/billing/plans?include_inactive=true&limit=500`);
  plans = page.items;
  $("plans").replaceChildren(...plans.map(planRow));
  $("plans-table").hidden = plans.length === 0;
  $("plans-empty").hidden = plans.length > 0;
  const active = plans.filter((p) => p.active);
  $("subscribe-plan").replaceChildren(...active.map((p) =>
    el("option", { value: p.key }, `${p.name} (${p.key})`)));
}

async function setPlanActive(plan, active) {
  try {
    if (active) {
      await api(`/api/v1/billing/plans/${encodeURIComponent(plan.key)}`, { method: "PATCH", body: { active: true } });
    } else {
      await api(`/api/v1/billing/plans/${encodeURIComponent(plan.key)}`, { method: "DELETE" });
    }
    notify(`Plan ${plan.key} ${active ? "reactivated" : "deactivated"}.`, "ok");
    await Promise.all([loadPlans(), loadSubscriptions()]);
  } catch (error) { showError(error); }
}

const optionalInt = (value) => (value.trim() === "" ? null : Number(value));

submitOnce($("plan-form"), async (event) => {
  const form = event.target;
  const models = form.models_allowed.value.split(",").map((s) => s.trim()).filter(Boolean);
  const body = {
    key: form.key.value.trim(), name: form.name.value.trim(), price: form.price.value.trim(),
    currency: form.currency.value.trim().toUpperCase(), billing_period: form.billing_period.value,
    included_credits: optionalInt(form.included_credits.value),
    trial_days: optionalInt(form.trial_days.value) ?? 0,
    limits: { models_allowed: models.length ? models : null,
              max_agents: optionalInt(form.max_agents.value),
              max_documents: optionalInt(form.max_documents.value),
              runs_per_day: optionalInt(form.runs_per_day.value) },
  };
  const plan = await api("/api/v1/billing/plans", { method: "POST", body });
  form.reset();
  notify(`Plan ${plan.key} created.`, "ok");
  await loadPlans();
});

// --- subscriptions ---------------------------------------------------------------------------

function subRow(sub) {
  const name = subscriberName(sub);
  const actions = el("div", { class: "actions" });
  const act = (label, verb, kind = "secondary") => el("button", {
    type: "button", class: kind, "aria-label": `${label} the subscription of ${name}`,
    onclick: () => lifecycle(sub, verb, label) }, label);
  if (sub.status !== "canceled") {
    if (sub.status === "paused") actions.append(act("Resume", "resume"));
    else actions.append(act("Pause", "pause"));
    if (sub.status === "trialing" || sub.status === "past_due") actions.append(act("Activate", "resume"));
    const others = plans.filter((p) => p.active && p.key !== sub.plan_key);
    if (others.length) {
      const select = el("select", { "aria-label": `New plan for ${name}` },
        others.map((p) => el("option", { value: p.key }, p.key)));
      actions.append(select, el("button", {
        type: "button", class: "secondary", "aria-label": `Change the plan of ${name}`,
        onclick: () => changePlan(sub, select.value) }, "Change plan"));
    }
    actions.append(act("Cancel", "cancel", "danger"));
  }
  return el("tr", { dataset: { id: sub.id } },
    el("th", { scope: "row" }, name),
    el("td", { class: "mono" }, sub.plan_key),
    el("td", {}, statusBadge(sub.status)),
    el("td", {}, period(sub.current_period_start, sub.current_period_end)),
    el("td", { class: "num nowrap" },
       `${number(sub.credits_used)} / ${number(sub.credits_reserved)} / ${number(sub.credits_limit)}`),
    el("td", { class: "num" }, number(sub.balance)),
    el("td", {}, actions));
}

function renderSubscriptions() {
  $("subs").replaceChildren(...subsShown.map(subRow));
  $("subs-table").hidden = subsShown.length === 0;
  $("subs-empty").hidden = subsShown.length > 0;
  $("subs-more").hidden = !subsCursor;
  const chosen = $("invoice-sub").value;
  $("invoice-sub").replaceChildren(...subsShown.map((s) => el("option", { value: s.id },
    `${subscriberName(s)}: ${s.plan_key} (${s.status})`)));
  if (subsShown.some((s) => s.id === chosen)) $("invoice-sub").value = chosen;
}

async function loadSubscriptions({ more = false } = {}) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if ($("subs-status").value) params.set("status", $("subs-status").value);
  if (more && subsCursor) params.set("cursor", subsCursor);
  const page = await loadingSubs((signal) => api(`/api/v1/billing/subscriptions?${params}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  subsShown = more ? [...subsShown, ...page.items] : page.items;
  subsCursor = page.next_cursor;
  renderSubscriptions();
}

function focusRow(id) {
  $("subs").querySelector(`tr[data-id="${CSS.escape(id)}"] button`)?.focus();
}

async function lifecycle(sub, verb, label) {
  const name = subscriberName(sub);
  if (verb === "cancel" && !confirm(`Cancel the subscription of ${name}? This is final.`)) return;
  try {
    await api(`/api/v1/billing/subscriptions/${sub.id}/${verb}`, { method: "POST" });
    notify(`${label}: done for ${name}.`, "ok");
    await loadSubscriptions();
    focusRow(sub.id);
  } catch (error) { showError(error); }
}

async function changePlan(sub, plan) {
  try {
    await api(`/api/v1/billing/subscriptions/${sub.id}/change-plan`, { method: "POST", body: { plan } });
    notify(`${subscriberName(sub)} moved to ${plan}.`, "ok");
    await loadSubscriptions();
    focusRow(sub.id);
  } catch (error) { showError(error); }
}

$("subscribe-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const text = form.user.value.trim();
  if (!text) { notify("Enter a username or e-mail."); return; }
  if (!form.plan.value) { notify("Create a plan first."); return; }
  try {
    const user = await findUser(text);
    if (!user) { notify(`No account has the username or e-mail ${text}.`); return; }
    const body = { user_id: user.id, plan: form.plan.value };
    const trial = optionalInt(form.trial_days.value);
    if (trial !== null) body.trial_days = trial;
    const sub = await api("/api/v1/billing/subscriptions", { method: "POST", body });
    form.user.value = "";
    notify(`${user.username} subscribed to ${sub.plan_key}.`, "ok");
    await loadSubscriptions();
  } catch (error) { showError(error); }
});

$("subs-status").addEventListener("change", () => loadSubscriptions().catch(showError));
$("subs-more").addEventListener("click", () => loadSubscriptions({ more: true }).catch(showError));

// --- invoices --------------------------------------------------------------------------------

function linesTable(doc) {
  return el("table", {},
    el("caption", { class: "visually-hidden" }, "Invoice lines"),
    el("thead", {}, el("tr", {}, ["Line", "Quantity", "Credits", "Amount"].map((h, i) =>
      el("th", { scope: "col", class: i ? "num" : null }, h)))),
    el("tbody", {}, doc.lines.map((line) => el("tr", {},
      el("th", { scope: "row", class: "wrap" }, line.description),
      el("td", { class: "num" }, number(line.quantity)),
      el("td", { class: "num" }, number(line.credits)),
      el("td", { class: "num" }, money(line.amount, doc.currency))))),
    el("tfoot", {},
      el("tr", {}, el("th", { scope: "row", colspan: "3" }, "Subtotal"), el("td", { class: "num" }, money(doc.subtotal, doc.currency))),
      el("tr", {}, el("th", { scope: "row", colspan: "3" }, "Tax"), el("td", { class: "num" }, money(doc.tax, doc.currency))),
      el("tr", {}, el("th", { scope: "row", colspan: "3" }, "Total"), el("td", { class: "num" }, money(doc.total, doc.currency)))));
}

function localToIso(value) {
  if (!value) return null;
  const date = new Date(value);  // datetime-local: the browser's zone
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

async function loadInvoices() {
  const page = await api("/api/v1/billing/invoices?limit=20");
  $("invoices").replaceChildren(...page.items.map((i) =>
    invoiceRow(i, { admin: true, subscriber: subscriberName(i) })));
  $("invoices-table").hidden = page.items.length === 0;
  $("invoices-empty").hidden = page.items.length > 0;
}

$("invoice-preview").addEventListener("click", async () => {
  const id = $("invoice-sub").value;
  if (!id) { notify("Choose a subscription."); return; }
  try {
    const draft = await api(`/api/v1/billing/subscriptions/${id}/invoice-preview`);
    $("invoice-result").replaceChildren(
      el("p", {}, el("strong", {}, "Draft (not issued): "),
         `${period(draft.period_start, draft.period_end)}, total ${money(draft.total, draft.currency)}`),
      linesTable(draft));
  } catch (error) { showError(error); }
});

$("invoice-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = $("invoice-sub").value;
  if (!id) { notify("Choose a subscription."); return; }
  const body = { subscription_id: id };
  const start = localToIso($("invoice-from").value);
  const end = localToIso($("invoice-until").value);
  if (start || end) { body.period_start = start; body.period_end = end; }
  try {
    const invoice = await api("/api/v1/billing/invoices", { method: "POST", body });
    $("invoice-result").replaceChildren(
      el("p", {}, el("strong", {}, `Invoice ${invoice.number}: `),
         `${period(invoice.period_start, invoice.period_end)}, total ${money(invoice.total, invoice.currency)} `,
         el("a", { href: `/api/v1/billing/invoices/${invoice.id}.pdf`, download: `${invoice.number}.pdf` },
            `Download ${invoice.number} as PDF`)),
      linesTable(invoice));
    notify(`Invoice ${invoice.number} issued.`, "ok");
    await loadInvoices();
  } catch (error) { showError(error); }
});

// --- model prices ----------------------------------------------------------------------------

function priceRow(price) {
  const input = el("input", { class: "price", value: price.input_per_million, inputmode: "decimal",
                              "aria-label": `Input price per million of ${price.model_pattern}` });
  const output = el("input", { class: "price", value: price.output_per_million, inputmode: "decimal",
                               "aria-label": `Output price per million of ${price.model_pattern}` });
  const save = async () => {
    try {
      await api(`/api/v1/billing/prices/${price.id}`, { method: "PATCH", body: {
        input_per_million: input.value.trim(), output_per_million: output.value.trim() } });
      notify(`Price of ${price.model_pattern} saved.`, "ok");
      await loadPrices();
    } catch (error) { showError(error); }
  };
  const remove = async () => {
    if (!confirm(`Remove the price of ${price.model_pattern}?`)) return;
    try {
      await api(`/api/v1/billing/prices/${price.id}`, { method: "DELETE" });
      notify(`Price of ${price.model_pattern} removed.`, "ok");
      await loadPrices();
    } catch (error) { showError(error); }
  };
  return el("tr", { dataset: { id: price.id } },
    el("th", { scope: "row", class: "mono" }, price.model_pattern,
       price.note ? el("span", { class: "sub" }, price.note) : null),
    el("td", {}, input), el("td", {}, output), el("td", {}, price.currency),
    el("td", {}, el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", "aria-label": `Save the price of ${price.model_pattern}`, onclick: save }, "Save"),
      el("button", { type: "button", class: "danger", "aria-label": `Remove the price of ${price.model_pattern}`, onclick: remove }, "Remove"))));
}

async function loadPrices() {
  const items = [];
  let cursor = null;
  do {
    const page = await api(`/api/v1/billing/prices?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 5000);
  items.sort((a, b) => a.model_pattern.localeCompare(b.model_pattern));
  $("prices").replaceChildren(...items.map(priceRow));
  $("prices-empty").hidden = items.length > 0;
}

submitOnce($("price-form"), async (event) => {
  const form = event.target;
  const body = { model_pattern: form.model_pattern.value.trim(),
                 input_per_million: form.input_per_million.value.trim(),
                 output_per_million: form.output_per_million.value.trim(),
                 currency: form.currency.value.trim().toUpperCase() || "USD" };
  const price = await api("/api/v1/billing/prices", { method: "POST", body });
  form.reset();
  notify(`Price of ${price.model_pattern} added.`, "ok");
  await loadPrices();
});

// --- analytics -------------------------------------------------------------------------------

async function loadExport() {
  const s = await api("/api/v1/analytics/export");
  const items = [
    ["Periodic export", s.enabled ? `on, every ${s.interval_s} s` : "off", "export-enabled"],
    ["Sink", `${s.sink}: ${s.location}`, "export-sink"],
    ["Pending", number(s.pending), "export-pending"],
    ["Exported", number(s.exported), "export-exported"],
    ["Oldest pending", s.oldest_pending ? formatTime(s.oldest_pending) : "—", "export-oldest"],
    ["Last success", s.last_success_at ? formatTime(s.last_success_at) : "—", "export-success"],
  ];
  $("export-facts").replaceChildren(...items.map(([label, value, id]) =>
    el("div", {}, el("dt", {}, label), el("dd", { id, class: "wrap" }, value))));
  $("export-error").hidden = !s.last_error;
  $("export-error").textContent = s.last_error
    ? `Last error${s.last_error_at ? ` (${formatTime(s.last_error_at)})` : ""}: ${s.last_error}` : "";
}

$("export-now").addEventListener("click", async () => {
  const button = $("export-now");
  button.disabled = true;
  try {
    const run = await api("/api/v1/analytics/export", { method: "POST" });
    notify(`Exported ${number(run.shipped)} events in ${number(run.duration_ms)} ms; ${number(run.pending)} pending.`, "ok");
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    await loadExport().catch(showError);
  }
});
$("export-refresh").addEventListener("click", () => loadExport().catch(showError));

async function loadStreaming() {
  const { items } = await api("/api/v1/analytics/streaming");
  const ms = (v) => (v === null || v === undefined ? "–" : number(Math.round(v)));
  $("streaming").replaceChildren(...items.map((row) => el("tr", {},
    el("th", { scope: "row", class: "wrap" }, row.model ?? "(no model)"),
    el("td", { class: "num" }, number(row.streams)),
    el("td", { class: "num" }, ms(row.ttft_ms_p50)),
    el("td", { class: "num" }, ms(row.ttft_ms_p95)),
    el("td", { class: "num" }, row.tokens_per_s === null ? "–" : Number(row.tokens_per_s).toFixed(1)))));
  $("streaming-table").hidden = items.length === 0;
  $("streaming-empty").hidden = items.length > 0;
}

// --- start -----------------------------------------------------------------------------------

async function init() {
  const settle = (promise) => promise.catch(showError);
  // Subscriber names and the plan choices of the subscription rows first.
  await Promise.all([settle(loadUsers()), settle(loadGroups()), settle(loadPlans())]);
  await Promise.all([settle(loadSubscriptions()), settle(loadInvoices()), settle(loadPrices()),
                     settle(loadExport()), settle(loadStreaming())]);
}

init();
