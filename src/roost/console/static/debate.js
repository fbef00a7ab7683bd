// One debate: its set-up, the turns grouped by round, the ballots and the result (winner,
// method, tally, ties and the missing Condorcet winner), refreshed every 1.5 s while it
// runs; cancel while it is unfinished.
import { api, badge, el, formatTime, pageData, showError } from "./console.js";

const { debate_id: debateId } = pageData();
const $ = (id) => document.getElementById(id);
const RUNNING = new Set(["pending", "active", "voting"]);
const POLL_MS = 1500;
const METHODS = {
  majority: "Majority (one vote per first choice)",
  weighted: "Weighted majority (first choices times weights)",
  borda: "Borda count",
  condorcet: "Condorcet (Schulze breaks a cycle)",
};
const SCORE_NAMES = {
  majority: "First choices", weighted: "Weighted first choices", borda: "Borda points",
  condorcet: "Pairwise wins",
};
const STATUS_TEXT = {
  pending: "waiting for a worker", active: "arguing", voting: "voting", completed: "completed",
  failed: "failed", cancelled: "cancelled",
};

let debate = null;
let shownTurns = -1;
let shownBallots = -1;
let timer = null;

function detail(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

const number = (value) => {
  const n = Number(value);
  return Number.isInteger(n) ? String(n) : String(Math.round(n * 1000) / 1000);
};

const sentence = (text) => {
  const flat = String(text).trim().replace(/\.$/, "");
  return flat ? flat[0].toUpperCase() + flat.slice(1) : flat;
};

function speaksAs(participant) {
  if (participant.agent_id) {
    return [el("a", { href: `/console/agents/${participant.agent_id}` }, "agent"),
            participant.model ? ` (${participant.model})` : null];
  }
  return [el("code", {}, participant.model || "default model"),
          participant.provider ? ` on ${participant.provider}` : null];
}

// --- header and set-up ----------------------------------------------------------------------

function renderHead() {
  document.title = `${debate.topic.slice(0, 60)} · Debate · Roost`;
  $("debate-title").textContent = debate.topic;
  const description = $("debate-description");
  description.textContent = debate.description || "";
  description.hidden = !debate.description;
  const progress = debate.status === "active" ? ` (round ${debate.current_round} of ${debate.total_rounds})` : "";
  const said = STATUS_TEXT[debate.status] !== debate.status ? STATUS_TEXT[debate.status] ?? "" : "";
  $("debate-status").replaceChildren(el("span", { class: "visually-hidden" }, "Status: "),
    badge(debate.status), ` ${said}${progress}`.trimEnd());
  $("cancel-debate").hidden = !RUNNING.has(debate.status);
  $("debate-live").hidden = !RUNNING.has(debate.status);
  $("debate-error").hidden = !debate.error_message;
  $("debate-error-text").textContent = debate.error_message || "";
  $("debate-details").replaceChildren(
    ...detail("Voting method", METHODS[debate.voting_method] ?? debate.voting_method),
    ...detail("Rounds", `${debate.current_round} of ${debate.total_rounds}`),
    ...detail("Positions", el("ol", { class: "positions" }, debate.positions.map((p) => el("li", {}, p)))),
    ...detail("Created", formatTime(debate.created_at)),
    ...(debate.started_at ? detail("Started", formatTime(debate.started_at)) : []),
    ...(debate.completed_at ? detail("Finished", formatTime(debate.completed_at)) : []),
  );
  $("participants-body").replaceChildren(...debate.participants.map((p) => el("tr", {},
    el("td", {}, el("strong", {}, p.id)),
    el("td", {}, speaksAs(p)),
    el("td", {}, p.position),
    el("td", {}, debate.voting_method === "majority" ? el("span", { class: "muted" }, `${number(p.weight)} (not counted)`)
                                                   : number(p.weight)))));
}

// --- turns and ballots ----------------------------------------------------------------------

function turnItem(turn) {
  return el("li", { class: "turn", dataset: { turn: String(turn.turn_number) } },
    el("div", { class: "step-head" },
      el("h4", {}, turn.participant_id),
      el("span", { class: "muted" }, "argues"), badge(turn.position, "info"),
      el("span", { class: "muted small" },
         `confidence ${number(turn.confidence)} · ${turn.tokens_used} tokens · ${number(turn.response_time / 1000)} s`)),
    el("div", { class: "text turn-content" }, turn.content));
}

function renderTurns() {
  const turns = debate.turns || [];
  if (turns.length === shownTurns) return;  // unchanged: keep the reader's place
  shownTurns = turns.length;
  $("turns-empty").hidden = turns.length > 0;
  const rounds = new Map();
  for (const turn of turns) {
    if (!rounds.has(turn.round_number)) rounds.set(turn.round_number, []);
    rounds.get(turn.round_number).push(turn);
  }
  $("rounds").replaceChildren(...[...rounds.entries()].sort((a, b) => a[0] - b[0]).map(([round, items]) =>
    el("section", { class: "round", "aria-labelledby": `round-${round}`, dataset: { round: String(round) } },
      el("h3", { id: `round-${round}` }, `Round ${round} of ${debate.total_rounds}`),
      el("ol", { class: "timeline turns" }, items.map(turnItem)))));
}

function renderBallots() {
  const ballots = debate.ballots || [];
  if (ballots.length === shownBallots) return;
  shownBallots = ballots.length;
  $("ballots-empty").hidden = ballots.length > 0;
  $("ballots-table").hidden = ballots.length === 0;
  $("ballots-body").replaceChildren(...ballots.map((b) => el("tr", {},
    el("td", {}, el("strong", {}, b.participant_id)),
    el("td", { class: "wide" }, el("ol", { class: "ranking" }, b.ranking.map((p) => el("li", {}, p)))),
    el("td", {}, number(b.weight)),
    el("td", {}, number(b.confidence)))));
}

// --- the result -----------------------------------------------------------------------------

function scoresTable(result) {
  const scores = result.scores || {};
  const order = [...debate.positions].sort((a, b) => (scores[b] ?? 0) - (scores[a] ?? 0));
  const title = SCORE_NAMES[result.method] ?? "Scores";
  return el("div", { class: "table-wrap" }, el("h3", {}, title), el("table", { class: "scores" },
    el("caption", { class: "visually-hidden" }, title),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Position"),
                      el("th", { scope: "col" }, SCORE_NAMES[result.method] ?? "Score"))),
    el("tbody", {}, order.map((p) => el("tr", { class: p === result.winner ? "winner-row" : null },
      el("th", { scope: "row" }, p, p === result.winner ? el("span", { class: "visually-hidden" }, " (winner)") : null),
      el("td", {}, number(scores[p] ?? 0)))))));
}

function matrix(title, values, explain) {
  const positions = debate.positions;
  return el("div", { class: "matrix-block" }, el("h3", {}, title), el("p", { class: "help" }, explain),
    el("div", { class: "table-wrap" }, el("table", { class: "matrix" },
    el("caption", { class: "visually-hidden" }, title),
    el("thead", {}, el("tr", {}, el("td", {}),
      positions.map((p) => el("th", { scope: "col" }, p)))),
    el("tbody", {}, positions.map((x) => el("tr", {},
      el("th", { scope: "row" }, x),
      positions.map((y) => el("td", {}, x === y ? "—" : number(values?.[x]?.[y] ?? 0)))))))));
}

function renderResult() {
  const result = debate.result;
  $("result").hidden = !result;
  if (!result) return;
  $("winner").textContent = result.winner ?? debate.final_winner ?? "";
  const notes = [`Decided by ${METHODS[result.method] ?? result.method}.`];
  if (result.absolute_majority === true) notes.push("The winner has more than half of the votes.");
  if (result.absolute_majority === false) notes.push("The winner has no absolute majority.");
  const note = $("result-note");
  note.replaceChildren(notes.join(" "));
  if (result.method === "condorcet") {
    if (result.no_condorcet_winner) {
      note.append(" ", el("strong", { class: "no-condorcet" },
        `${sentence(result.note || "no Condorcet winner: Schulze's method decided")}.`),
        result.schulze_winners?.length ? ` Schulze winners: ${result.schulze_winners.join(", ")}.` : "");
    } else if (result.condorcet_winner) {
      note.append(` Condorcet winner: ${result.condorcet_winner}`,
                  result.note ? el("span", { class: "muted" }, ` (${result.note})`) : null, ".");
    }
  }
  const tie = $("result-tie");
  tie.hidden = !(result.tied && result.tied.length);
  tie.textContent = tie.hidden ? ""
    : `Tied for first: ${result.tied.join(", ")}. ${result.tie_break ? `${sentence(result.tie_break)}.` : ""}`.trim();
  $("result-scores").replaceChildren(scoresTable(result));
  const support = [];
  if (result.support) {
    support.push(matrix("Pairwise support", result.support,
                        "The weight of the ballots ranking the row's position above the column's."));
  }
  if (result.strongest_paths) {
    support.push(matrix("Strongest paths (Schulze)", result.strongest_paths,
                        "The strength of the strongest path from the row's position to the column's."));
  }
  $("result-support").replaceChildren(...support);
}

// --- loading and live refresh ---------------------------------------------------------------

function render() {
  renderHead();
  renderResult();
  renderTurns();
  renderBallots();
}

async function load() {
  debate = await api(`/api/v1/debates/${debateId}`);
  render();
  schedule();
}

function schedule() {
  if (timer !== null || !RUNNING.has(debate.status)) return;
  timer = setTimeout(async () => {
    timer = null;
    try {
      await load();
    } catch (error) {
      showError(error);  // a failing API stops the refresh; a reload starts it again
    }
  }, POLL_MS);
}

$("cancel-debate").addEventListener("click", async () => {
  const button = $("cancel-debate");
  button.disabled = true;
  try {
    await api(`/api/v1/debates/${debateId}/cancel`, { method: "POST" });
    clearTimeout(timer);
    timer = null;
    await load();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
});

load().catch(showError);
