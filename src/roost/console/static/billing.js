// My billing: the plan and its status, a credit bar (used / reserved / limit) with the
// balance, the current period, my invoices (PDF download) and my usage this period by day
// and by model with its cost.  Money stays a decimal string: never a float.

import { api, ApiError, el, formatTime, showError } from "./console.js";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const number = (value) => Number(value).toLocaleString();
const STATUS = { trialing: "Trial", active: "Active", past_due: "Past due", paused: "Paused",
                 canceled: "Canceled", open: "Open", paid: "Paid", void: "Void" };

export function statusBadge(status) {
  return el("span", { class: `badge ${status}` }, STATUS[status] || status);
}

export function money(amount, currency) {
  return currency ? `${amount} ${currency}` : String(amount);
}

export function period(start, end) {
  return `${formatTime(start)} – ${formatTime(end)}`;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// The bar: used, then reserved, out of the limit (a share past the limit shows full).
export function creditBar(sub) {
  const limit = Math.max(sub.credits_limit, 1);
  const used = Math.min(sub.credits_used, limit);
  const reserved = Math.min(sub.credits_reserved, limit - used);
  const label = `Credits: ${number(sub.credits_used)} used, ${number(sub.credits_reserved)} `
    + `reserved of ${number(sub.credits_limit)}; balance ${number(sub.balance)}`;
  const width = 1000;
  const bar = svg("svg", { viewBox: `0 0 ${width} 24`, preserveAspectRatio: "none", role: "img",
                           "aria-label": label, focusable: "false" },
    svg("title", {}, label),
    svg("rect", { class: "track", x: 0, y: 0, width, height: 24 }),
    svg("rect", { class: sub.balance <= 0 ? "used over" : "used", x: 0, y: 0,
                  width: (used / limit) * width, height: 24 }),
    svg("rect", { class: "reserved", x: (used / limit) * width, y: 0,
                  width: (reserved / limit) * width, height: 24 }));
  const legend = el("p", { class: "legend", "aria-hidden": "true" },
    el("span", {}, el("span", { class: "swatch used" }), "Used"),
    el("span", {}, el("span", { class: "swatch reserved" }), "Reserved (calls under way)"),
    el("span", {}, el("span", { class: "swatch free" }), "Available"));
  return [bar, legend];
}

function facts(holder, items) {
  holder.replaceChildren(...items.map(([label, value, id]) =>
    el("div", {}, el("dt", {}, label), el("dd", { id }, value))));
}

// --- plan and credits ------------------------------------------------------------------------

let subscription = null;

async function loadPlan() {
  try {
    subscription = await api("/api/v1/billing/subscription");
  } catch (error) {
    subscription = null;
    if (error instanceof ApiError && error.status === 404) {
      $("plan").hidden = true;
      $("plan-none").textContent = error.message;  // "you have no live subscription..."
      $("plan-none").hidden = false;
      return;
    }
    throw error;
  }
  let plan = null;
  try {
    plan = await api(`/api/v1/billing/plans/${encodeURIComponent(subscription.plan_key)}`);
  } catch { /* a plan taken out of sale: its key is enough */ }
  const sub = subscription;
  const price = plan ? `${money(plan.price, plan.currency)} per ${plan.billing_period}` : "";
  facts($("plan-facts"), [
    ["Plan", plan ? `${plan.name} (${plan.key})` : sub.plan_key, "plan-name"],
    ["Status", statusBadge(sub.status), "plan-status"],
    ["Price", price || "—", "plan-price"],
    ["Current period", period(sub.current_period_start, sub.current_period_end), "plan-period"],
    ...(sub.trial_end ? [["Trial ends", formatTime(sub.trial_end), "plan-trial"]] : []),
  ]);
  $("credit-bar").replaceChildren(...creditBar(sub));
  facts($("credit-facts"), [
    ["Used", number(sub.credits_used), "credits-used"],
    ["Reserved", number(sub.credits_reserved), "credits-reserved"],
    ["Limit", number(sub.credits_limit), "credits-limit"],
    ["Balance", number(sub.balance), "credits-balance"],
  ]);
  $("plan-none").hidden = true;
  $("plan").hidden = false;
}

// --- invoices --------------------------------------------------------------------------------

export function invoiceRow(invoice, { admin = false, subscriber = null } = {}) {
  const pdf = el("a", { href: `/api/v1/billing/invoices/${invoice.id}.pdf`, download: `${invoice.number}.pdf`,
                        "aria-label": `Download ${invoice.number} as PDF` }, "PDF");
  return el("tr", { dataset: { id: invoice.id } },
    el("th", { scope: "row", class: "nowrap" }, invoice.number),
    admin ? el("td", {}, subscriber || "—") : null,
    el("td", {}, period(invoice.period_start, invoice.period_end)),
    el("td", { class: "num nowrap" }, money(invoice.total, invoice.currency)),
    el("td", {}, statusBadge(invoice.status)),
    el("td", {}, pdf));
}

async function loadInvoices() {
  const page = await api("/api/v1/billing/invoices?limit=100");
  $("invoices").replaceChildren(...page.items.map((i) => invoiceRow(i)));
  $("invoices-table").hidden = page.items.length === 0;
  $("invoices-empty").hidden = page.items.length > 0;
}

// --- usage -----------------------------------------------------------------------------------

export function usageTable(report, title, caption) {
  if (!report.rows.length) return el("p", { class: "empty" }, "No usage in this period yet.");
  const label = (row) => (report.group_by === "user" ? row.username || row.key
    : report.group_by === "day" ? row.key : row.label || row.key) ?? "(none)";
  const cells = (row) => [
    el("td", { class: "num" }, number(row.requests)),
    el("td", { class: "num" }, number(row.tokens_input)),
    el("td", { class: "num" }, number(row.tokens_output)),
    el("td", { class: "num" }, number(row.credits_used)),
    el("td", { class: "num" }, String(row.cost))];
  return el("table", {},
    el("caption", { class: "visually-hidden" }, caption),
    el("thead", {}, el("tr", {}, [title, "Requests", "Input tokens", "Output tokens", "Credits", "Cost"]
      .map((h, i) => el("th", { scope: "col", class: i ? "num" : null }, h)))),
    el("tbody", {}, report.rows.map((row) => el("tr", {},
      el("th", { scope: "row", class: "wrap" }, label(row)), cells(row)))),
    el("tfoot", {}, el("tr", {}, el("th", { scope: "row" }, "Total"), cells(report.totals))));
}

async function loadUsage() {
  const since = subscription ? subscription.current_period_start
    : new Date(Date.now() - 29 * 86_400_000).toISOString().slice(0, 10);
  const params = (groupBy) => new URLSearchParams({ group_by: groupBy, since });
  const [byDay, byModel] = await Promise.all([
    api(`/api/v1/billing/usage?${params("day")}`), api(`/api/v1/billing/usage?${params("model")}`)]);
  $("usage-range").textContent = subscription
    ? `Since ${formatTime(byDay.since)} (the start of the current period).`
    : `The last 30 days (you have no subscription).`;
  $("usage-day").replaceChildren(usageTable(byDay, "Day (UTC)", "My usage per day this period"));
  $("usage-model").replaceChildren(usageTable(byModel, "Model", "My usage per model this period"));
}

async function load() {
  const button = $("refresh");
  button.disabled = true;
  try {
    await loadPlan();
    await Promise.all([loadInvoices(), loadUsage()]);
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

if ($("plan-facts")) {  // this module also lends its helpers to the administration page
  $("refresh").addEventListener("click", load);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) load(); });
  load();
}
