// Admin usage: totals, a bar chart drawn here as inline SVG (DOM APIs, no library) and a
// table with the same numbers, per UTC day, model, user, provider, agent, API key or
// request type over a date range, from the ledger (PostgreSQL) or the analytics export
// (ClickHouse).  Cost stays the API's decimal string in the table and the totals; only the
// bar heights use it as a number.

import { api, clip, el, latestLoad, showError } from "./console.js";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const GROUP_TITLES = { day: "Day (UTC)", model: "Model", user: "User", provider: "Provider",
                       agent: "Agent", api_key: "API key", request_type: "Request type" };
const GROUP_WORDS = { day: "day", model: "model", user: "user", provider: "provider",
                      agent: "agent", api_key: "API key", request_type: "request type" };
const SOURCES = ["postgres", "clickhouse"];
// A cost with its currency; amounts in several currencies side by side (never added: the
// API gives their cost as null and each currency's in `costs`).
const costText = (r) => (r.cost === null
  ? Object.entries(r.costs).map(([currency, amount]) => `${amount} ${currency}`).join(" + ")
  : (r.currency ? `${r.cost} ${r.currency}` : String(r.cost)));
const METRICS = {
  tokens: { title: "Tokens", value: (r) => r.tokens_input + r.tokens_output },
  requests: { title: "Requests", value: (r) => r.requests },
  credits_used: { title: "Credits", value: (r) => r.credits_used },
  // Bars in several currencies would add unlike amounts: such a row's bar is 0.
  cost: { title: "Cost", value: (r) => Number(r.cost ?? 0), text: costText },
  failures: { title: "Failures", value: (r) => r.failures },
};
const number = (value) => Number(value).toLocaleString();

let report = null;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function rowLabel(row, groupBy) {
  if (groupBy === "user") return row.username || (row.key ? row.key : "(no user)");
  if (groupBy === "model") return row.key ?? "(no model)";
  if (groupBy === "provider" || groupBy === "agent" || groupBy === "api_key") {
    return row.label || row.key || `(no ${GROUP_WORDS[groupBy]})`;
  }
  return row.key ?? "(none)";
}

function short(text, max = 14) {
  return clip(text, max, "…");
}

// 1, 2 or 5 times a power of ten, at least ``value``: round numbers on the axis.
function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

// --- rendering ---------------------------------------------------------------------------

function renderTotals(data) {
  const t = data.totals;
  const items = [
    ["Requests", t.requests], ["Tokens", t.tokens_input + t.tokens_output],
    ["Input tokens", t.tokens_input], ["Output tokens", t.tokens_output],
    ["Credits", t.credits_used], ["Cost", costText(t)], ["Failures", t.failures],
  ];
  $("usage-totals").replaceChildren(...items.map(([label, value]) =>
    el("div", { class: "total" }, el("dt", {}, label),
       el("dd", {}, typeof value === "string" ? value : number(value)))));
}

function renderChart(data, metricKey) {
  const holder = $("usage-chart");
  const metric = METRICS[metricKey];
  const groupBy = data.group_by;
  if (!data.rows.length) {
    holder.replaceChildren(el("p", { class: "empty" }, "No usage in this range."));
    return;
  }
  const values = data.rows.map(metric.value);
  const labels = data.rows.map((row) => rowLabel(row, groupBy));
  const width = 720, height = 320;
  const margin = { top: 16, right: 16, bottom: 84, left: 64 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const top = niceCeiling(Math.max(...values));
  const band = plotW / values.length;
  const barW = Math.min(56, band * 0.7);
  const y = (value) => margin.top + plotH - (value / top) * plotH;

  const highest = values.indexOf(Math.max(...values));
  const summary = `Bar chart of ${metric.title.toLowerCase()} per ${GROUP_WORDS[groupBy]}: `
    + `${values.length} ${values.length === 1 ? "bar" : "bars"}, highest ${labels[highest]} `
    + `with ${metric.text ? metric.text(data.rows[highest]) : number(values[highest])}. `
    + "The table below has the same numbers.";
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary,
                             focusable: "false", class: "usage-svg" });

  // Grid lines and the value axis; whole-number steps (every metric counts something).
  const ticks = metricKey === "cost" ? 4 : [5, 4, 2, 1].find((count) => Number.isInteger(top / count));
  for (let i = 0; i <= ticks; i += 1) {
    const value = (top / ticks) * i;
    const lineY = y(value);
    chart.append(svg("line", { class: "axis grid", x1: margin.left, x2: width - margin.right,
                               y1: lineY, y2: lineY }));
    chart.append(svg("text", { x: margin.left - 6, y: lineY + 4, "text-anchor": "end" },
                     metricKey === "cost" ? String(+value.toPrecision(6)) : number(value)));
  }
  chart.append(svg("line", { class: "axis", x1: margin.left, x2: margin.left, y1: margin.top,
                             y2: margin.top + plotH }));
  chart.append(svg("text", { class: "axis-title", x: 14, y: margin.top + plotH / 2,
                             "text-anchor": "middle",
                             transform: `rotate(-90 14 ${margin.top + plotH / 2})` }, metric.title));
  chart.append(svg("text", { class: "axis-title", x: margin.left + plotW / 2, y: height - 6,
                             "text-anchor": "middle" }, GROUP_TITLES[groupBy]));

  // Bars with tooltips, and their labels (every k-th when there are many).
  const every = Math.ceil(values.length / 24);
  values.forEach((value, i) => {
    const x = margin.left + band * i + (band - barW) / 2;
    const barTop = y(value);
    chart.append(svg("rect", { class: "bar", x, y: barTop, width: barW,
                               height: Math.max(0, margin.top + plotH - barTop) },
                     svg("title", {}, `${labels[i]}: ${metric.text ? metric.text(data.rows[i]) : number(value)} `
                         + metric.title.toLowerCase())));
    if (i % every === 0) {
      const labelX = margin.left + band * i + band / 2;
      const labelY = margin.top + plotH + 14;
      chart.append(svg("text", { x: labelX, y: labelY, "text-anchor": "end",
                                 transform: `rotate(-35 ${labelX} ${labelY})` },
                       short(groupBy === "day" ? labels[i].slice(5) : labels[i])));
    }
  });
  holder.replaceChildren(chart);
}

function renderTable(data) {
  const holder = $("usage-table");
  if (!data.rows.length) {
    holder.replaceChildren(el("p", { class: "empty" }, "No usage in this range."));
    return;
  }
  const headers = [GROUP_TITLES[data.group_by], "Requests", "Input tokens", "Output tokens",
                   "Total tokens", "Credits", "Cost", "Avg latency (ms)", "Failures"];
  const cells = (row) => [...[row.requests, row.tokens_input, row.tokens_output,
                              row.tokens_input + row.tokens_output, row.credits_used]
    .map((v) => el("td", { class: "num" }, number(v))), el("td", { class: "num" }, costText(row))];
  holder.replaceChildren(el("table", { class: "usage-table" },
    el("caption", { class: "visually-hidden" }, `Usage per ${GROUP_WORDS[data.group_by]}`),
    el("thead", {}, el("tr", {}, headers.map((h, i) =>
      el("th", { scope: "col", class: i ? "num" : null }, h)))),
    el("tbody", {}, data.rows.map((row) => el("tr", {},
      el("th", { scope: "row", class: "wrap" }, rowLabel(row, data.group_by)),
      cells(row),
      el("td", { class: "num" }, row.avg_latency_ms === null || row.avg_latency_ms === undefined
        ? "–" : number(row.avg_latency_ms)),
      el("td", { class: "num" }, number(row.failures))))),
    el("tfoot", {}, el("tr", {},
      el("th", { scope: "row" }, "Total"),
      cells(data.totals),
      el("td", { class: "num" }, ""),
      el("td", { class: "num" }, number(data.totals.failures))))));
}

function render() {
  if (!report) return;
  renderTotals(report);
  renderChart(report, $("usage-metric").value);
  renderTable(report);
}

// --- loading -------------------------------------------------------------------------------

// The page's choices in its URL: a reload (or a shared link) shows the same report.
function remember(params) {
  const shown = new URLSearchParams(params);
  if ($("usage-metric").value !== Object.keys(METRICS)[0]) shown.set("metric", $("usage-metric").value);
  history.replaceState(null, "", `?${shown}`);
}

let loads = null;  // set in init(): the latest of the reports asked for wins

async function load() {
  const params = new URLSearchParams({
    group_by: $("usage-group").value, since: $("usage-since").value, until: $("usage-until").value,
  });
  if ($("usage-source").value !== "postgres") params.set("source", $("usage-source").value);
  try {
    // A grouping changed twice quickly: the first answer, arriving last, must not draw its
    // report under the second's choice (nor write it into the URL).
    const answer = await loads((signal) => api(`/api/v1/billing/usage?${params}`, { signal }));
    if (answer === null) return;
    report = answer;
    remember(params);
    render();
  } catch (error) {
    showError(error);
  }
}

function init() {
  const query = new URLSearchParams(location.search);
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86_400_000);  // 30 days with today
  // A date field takes only YYYY-MM-DD and is left empty by anything else ("2026-5-1"
  // typed in a link): then the default, as for no date, never a report over a range the
  // page does not name.
  $("usage-since").value = query.get("since") || "";
  if (!$("usage-since").value) $("usage-since").value = utcDay(monthAgo);
  $("usage-until").value = query.get("until") || "";
  if (!$("usage-until").value) $("usage-until").value = utcDay(today);
  if (Object.hasOwn(GROUP_TITLES, query.get("group_by") ?? "")) {
    $("usage-group").value = query.get("group_by");
  }
  $("usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  if (SOURCES.includes(query.get("source") ?? "")) $("usage-source").value = query.get("source");
  $("usage-group").addEventListener("change", load);
  $("usage-source").addEventListener("change", load);
  if (Object.hasOwn(METRICS, query.get("metric") ?? "")) $("usage-metric").value = query.get("metric");
  $("usage-metric").addEventListener("change", () => {
    render();
    remember(new URLSearchParams(location.search));
  });
  loads = latestLoad($("usage-form").querySelector("button[type=submit]"));
  load();
}

init();
