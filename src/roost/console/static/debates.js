// Debates: the user's debates (cursor pages, a status filter) and the "New debate" form
// (topic, positions one per line, participants: a model or an agent each, rounds, voting
// method, weights), which starts one and opens its page.
import { api, badge, el, keepDraft, latestLoad, LEAVING, notify, showError, submitOnce } from "./console.js";

const $ = (id) => document.getElementById(id);
const body = $("debates-body");
const METHODS = { majority: "majority", weighted: "weighted", borda: "Borda", condorcet: "Condorcet" };
let cursor = null;
const loading = latestLoad($("debates-more"));
let agents = [];  // the user's active agents, for the participant pickers
let rowCount = 0; // ever created (unique ids); the rows on screen are numbered in order

// --- the list -------------------------------------------------------------------------------

function debateRow(debate) {
  return el("tr", {},
    el("td", { class: "wide" }, el("a", { href: `/console/debates/${debate.id}` }, debate.topic),
       el("div", { class: "muted small" },
          `${debate.positions.length} positions · ${debate.participants.length} participants · `
          + `${debate.total_rounds} round${debate.total_rounds === 1 ? "" : "s"}`)),
    el("td", {}, badge(debate.status)),
    el("td", {}, METHODS[debate.voting_method] ?? debate.voting_method),
    el("td", {}, debate.final_winner ? el("strong", {}, debate.final_winner) : el("span", { class: "muted" }, "—")));
}

async function loadDebates(more = false) {
  const query = new URLSearchParams({ limit: "25" });
  const status = $("status-filter").value;
  if (status) query.set("status", status);
  if (more && cursor) query.set("cursor", cursor);
  const page = await loading((signal) => api(`/api/v1/debates?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) body.replaceChildren();
  for (const debate of page.items) body.append(debateRow(debate));
  cursor = page.next_cursor;
  const any = body.children.length > 0;
  $("debates-table").hidden = !any;
  $("debates-empty").hidden = any;
  $("debates-empty").textContent = status ? "No debates with this status." : "No debates yet: start one with the form.";
  $("debates-more").hidden = !cursor;
}

// --- the form: participants ------------------------------------------------------------------

function positions() {
  const seen = new Set();
  const found = [];
  for (const line of $("debate-positions").value.split("\n")) {
    const text = line.trim();
    if (text && !seen.has(text.toLowerCase())) { seen.add(text.toLowerCase()); found.push(text); }
  }
  return found;
}

function positionOptions(select) {
  const current = select.value;
  const options = [el("option", { value: "" }, "round-robin")];
  for (const position of positions()) options.push(el("option", { value: position }, position));
  select.replaceChildren(...options);
  select.value = positions().includes(current) ? current : "";
}

function agentOptions(select) {
  const current = select.value;
  if (!agents.length) {
    select.replaceChildren(el("option", { value: "" }, "no active agents"));
    return;
  }
  select.replaceChildren(...agents.map((a) => el("option", { value: a.id }, `${a.name} (${a.slug})`)));
  if (agents.some((a) => a.id === current)) select.value = current;
}

function syncKind(row) {
  const isAgent = row.querySelector("[name=kind]").value === "agent";
  row.querySelector(".as-model").hidden = isAgent;
  row.querySelector(".as-agent").hidden = !isAgent;
}

function syncWeights() {
  const weighted = $("debate-method").value !== "majority";
  for (const box of document.querySelectorAll("#participants .weight")) box.hidden = !weighted;
}

function renumber() {
  const rows = [...document.querySelectorAll("#participants .participant")];
  rows.forEach((row, i) => {
    row.querySelector("legend").textContent = `Participant ${i + 1}`;
    row.querySelector(".remove").hidden = rows.length <= 2;
    row.querySelector(".remove").textContent = `Remove participant ${i + 1}`;
  });
}

function addParticipant() {
  rowCount += 1;
  const n = rowCount;
  const id = (name) => `p${n}-${name}`;
  const field = (name, label, control, help) => el("div", { class: `field-${name}` },
    el("label", { for: id(name) }, label), control, help || null);
  const kind = el("select", { id: id("kind"), name: "kind" },
    el("option", { value: "model" }, "a model"), el("option", { value: "agent" }, "an agent"));
  const agent = el("select", { id: id("agent"), name: "agent_id" });
  agentOptions(agent);
  const position = el("select", { id: id("position"), name: "position" });
  positionOptions(position);
  const row = el("fieldset", { class: "participant", dataset: { row: String(n) } },
    el("legend", {}, "Participant"),
    el("div", { class: "row participant-fields" },
      field("id", "Name", el("input", { id: id("id"), name: "id", required: true, maxlength: 100,
                                        autocomplete: "off", value: `p${n}`,
                                        pattern: "[A-Za-z0-9][A-Za-z0-9_.:@\\-]*" })),
      field("kind", "Speaks as", kind),
      el("div", { class: "as-model" },
        field("model", "Model", el("input", { id: id("model"), name: "model", list: "model-options",
                                              maxlength: 255, autocomplete: "off" })),
        field("provider", "Provider (optional)", el("input", { id: id("provider"), name: "provider",
                                                                maxlength: 64, autocomplete: "off" }))),
      el("div", { class: "as-agent", hidden: true }, field("agent", "Agent", agent)),
      field("position", "Argues", position),
      el("div", { class: "weight" }, el("label", { for: id("weight") }, "Weight"),
         el("input", { id: id("weight"), name: "weight", type: "number", min: "0.001", max: "1000",
                       step: "any", value: "1" }))),
    el("button", { type: "button", class: "ghost remove", onclick: () => { row.remove(); renumber(); } },
       "Remove"));
  kind.addEventListener("change", () => syncKind(row));
  $("participants").append(row);
  syncKind(row);
  syncWeights();
  renumber();
  return row;
}

function participantBody(row, index) {
  const value = (name) => row.querySelector(`[name=${name}]`).value.trim();
  const item = { id: value("id") };
  if (!item.id) throw new Error(`Participant ${index + 1} needs a name.`);
  if (value("kind") === "agent") {
    if (!value("agent_id")) throw new Error(`Participant ${index + 1}: choose an agent (you have no active agent).`);
    item.agent_id = value("agent_id");
  } else {
    if (!value("model")) throw new Error(`Participant ${index + 1} needs a model.`);
    item.model = value("model");
    if (value("provider")) item.provider = value("provider");
  }
  if (value("position")) item.position = value("position");
  if ($("debate-method").value !== "majority" && value("weight")) {
    const weight = Number(value("weight"));
    if (!(weight > 0)) throw new Error(`Participant ${index + 1}: the weight must be a number above 0.`);
    item.weight = weight;
  }
  return item;
}

function formBody() {
  const topic = $("debate-topic").value.trim();
  if (!topic) throw Object.assign(new Error("A debate needs a topic."), { field: "debate-topic" });
  const found = $("debate-positions").value.split("\n").map((p) => p.trim()).filter(Boolean);
  if (found.length < 2) {
    throw Object.assign(new Error("Give at least two positions, one per line."), { field: "debate-positions" });
  }
  const rows = [...document.querySelectorAll("#participants .participant")];
  const result = {
    topic, positions: found,
    participants: rows.map(participantBody),
    total_rounds: Number($("debate-rounds").value || 2),
    voting_method: $("debate-method").value,
  };
  const description = $("debate-description").value.trim();
  if (description) result.description = description;
  return result;
}

function wireForm() {
  const form = $("debate-form");
  const forgetTopic = keepDraft($("debate-topic"));
  const forgetPositions = keepDraft($("debate-positions"));
  addParticipant();
  addParticipant();
  $("add-participant").addEventListener("click", () => {
    const row = addParticipant();
    row.querySelector("input[name=id]").focus();
  });
  $("debate-positions").addEventListener("input", () => {
    for (const select of document.querySelectorAll("#participants select[name=position]")) positionOptions(select);
  });
  $("debate-method").addEventListener("change", syncWeights);
  submitOnce(form, async () => {
    let payload;
    try {
      payload = formBody();
    } catch (error) {
      notify(error.message);
      if (error.field) $(error.field).focus();
      return;
    }
    const debate = await api("/api/v1/debates", { method: "POST", body: payload });
    forgetTopic();
    forgetPositions();
    location.assign(`/console/debates/${debate.id}`);
    return LEAVING;
  });
}

async function loadChoices() {
  try {
    const models = await api("/v1/models");
    $("model-options").replaceChildren(...(models.data || []).map((m) => el("option", { value: m.id })));
  } catch { /* no provider yet: the model stays free text */ }
  try {
    const page = await api("/api/v1/agents?is_active=true&limit=200");
    agents = page.items.filter((a) => a.is_active);
    for (const select of document.querySelectorAll("#participants select[name=agent_id]")) agentOptions(select);
  } catch { /* no agents to offer */ }
}

$("debates-more").addEventListener("click", () => loadDebates(true).catch(showError));
$("status-filter").addEventListener("change", () => loadDebates().catch(showError));
wireForm();
loadChoices();
loadDebates().catch(showError);
