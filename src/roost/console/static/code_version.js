// One code version: its commit (hash, branch, parent, message, files), its unified diff
// against the parent (text in a <pre>, one styled line each: never parsed as HTML), and its
// validation: the status in words, each check's command, outcome, exit code, duration and
// output; "Validate" queues the checks and the page asks every second until they finish.
import { api, el, formatTime, pageData, showError } from "./console.js";
import { FINAL, shortHash, statusBadge, statusSentence } from "./code_status.js";

const { version_id: versionId } = pageData();
const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const CHANGE = { added: "added", modified: "modified", deleted: "deleted" };
const OUTCOME = {
  passed: "passed", failed: "failed", timeout: "timed out: stopped at the time limit",
  flooded: "too much output: stopped", error: "could not run",
};

let version = null;
let shownDiff = null;
let timer = null;

function detail(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

const waiting = (v) => !FINAL.has(v.validation_status) && (v.validation_status === "running"
                                                           || Boolean(v.validation_task_id));

// --- the commit -----------------------------------------------------------------------------

function renderHead() {
  const short = shortHash(version.version_hash);
  const subject = (version.commit_message || "").split("\n")[0];
  document.title = `${short} ${subject.slice(0, 60)} · Code · Roost`;
  $("version-short").textContent = short;
  $("version-message").textContent = version.commit_message || "(no message)";
  const repo = $("repo-link");
  if (version.chat_session_id) {
    repo.href = `/console/code?chat_session_id=${version.chat_session_id}`;
    repo.textContent = "This chat's versions";
  } else {
    repo.href = `/console/code?run_id=${version.run_id}`;
    repo.textContent = "This run's versions";
  }
  $("version-details").replaceChildren(
    ...detail("Commit", el("code", { class: "hash" }, version.version_hash)),
    ...detail("Branch", el("code", {}, version.branch)),
    ...detail("Parent", version.parent_hash ? el("code", { class: "hash" }, version.parent_hash)
                                            : el("span", { class: "muted" }, "none: the repository's first commit")),
    ...detail("Repository", version.chat_session_id
      ? el("a", { href: `/console/chat/${version.chat_session_id}` }, "the chat")
      : el("a", { href: `/console/runs/${version.run_id}` }, "the run")),
    ...detail("Created", formatTime(version.created_at)),
  );
}

function renderFiles() {
  const files = version.files_changed || [];
  $("files-body").replaceChildren(...files.map((f) => el("tr", { class: `file ${f.change}` },
    el("td", { class: "wide" }, el("code", {}, f.path)),
    el("td", {}, el("span", { class: `badge change-${f.change}` }, CHANGE[f.change] ?? f.change)),
    el("td", {}, el("span", { class: "plus" }, `+${f.additions}`)),
    el("td", {}, el("span", { class: "minus" }, `−${f.deletions}`)))));
  $("diff-summary").textContent = version.diff_summary || "";
}

// A unified diff as one <span> per line, classed by what the line is.
function renderDiff() {
  if (shownDiff === version.diff) return;
  shownDiff = version.diff;
  const lines = (version.diff || "").split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const out = document.createDocumentFragment();
  let header = false;
  for (const line of lines) {
    let kind = "ctx";
    if (line.startsWith("diff --git ")) { header = true; kind = "file"; }
    else if (line.startsWith("@@")) { header = false; kind = "hunk"; }
    else if (header) kind = "meta";
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    else if (line.startsWith("\\")) kind = "meta";
    out.append(el("span", { class: `line ${kind}` }, `${line}\n`));
  }
  const pre = $("diff");
  pre.replaceChildren(out);
  if (!lines.length) pre.replaceChildren(el("span", { class: "line meta" }, "(no changes)"));
  $("diff-truncated").hidden = !version.diff_truncated;
}

// --- validation -----------------------------------------------------------------------------

function seconds(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function checkItem(name, result) {
  const facts = [
    `exit code ${result.exit_code ?? "none (stopped or not started)"}`,
    seconds(result.duration_ms),
  ];
  if (result.truncated) facts.push("output truncated");
  const command = result.argv?.length ? name : `${name} (before any check)`;
  return el("li", { class: `check ${result.outcome}` },
    el("div", { class: "step-head" },
      el("h3", {}, el("code", {}, command)),
      el("span", { class: `badge ${result.outcome}` }, OUTCOME[result.outcome] ?? result.outcome),
      el("span", { class: "muted small" }, facts.join(" · "))),
    result.output_tail
      ? el("details", { open: result.outcome !== "passed" },
           el("summary", {}, result.truncated ? "Output (the end of it)" : "Output"),
           el("pre", { class: "text check-output" }, result.output_tail))
      : el("p", { class: "muted small" }, "No output."));
}

function renderValidation() {
  $("version-status").replaceChildren(el("span", { class: "visually-hidden" }, "Validation: "),
                                      statusBadge(version));
  const sentence = [statusSentence(version)];
  if (version.validated_at && FINAL.has(version.validation_status)) {
    sentence.push(` Finished ${formatTime(version.validated_at)}.`);
  }
  const results = Object.entries(version.test_results || {});
  const live = waiting(version);
  if (live && results.length) sentence.push(" The results below are from the previous validation.");
  $("validation-text").textContent = sentence.join("");
  $("validation-live").hidden = !live;
  $("checks-empty").hidden = results.length > 0;
  $("checks").replaceChildren(...results.map(([name, result]) => checkItem(name, result)));
  const button = $("validate");
  button.disabled = live;
  button.textContent = FINAL.has(version.validation_status) ? "Validate again" : "Validate";
}

// --- loading and polling --------------------------------------------------------------------

async function load() {
  version = await api(`/api/v1/code-versions/${versionId}`);
  renderHead();
  renderFiles();
  renderDiff();
  renderValidation();
  schedule();
}

function schedule() {
  if (timer !== null || !waiting(version)) return;
  timer = setTimeout(async () => {
    timer = null;
    try {
      await load();
    } catch (error) {
      showError(error);  // a failing API stops the polling; a reload starts it again
    }
  }, POLL_MS);
}

$("validate").addEventListener("click", async () => {
  const button = $("validate");
  button.disabled = true;
  try {
    const queued = await api(`/api/v1/code-versions/${versionId}/validate`, { method: "POST" });
    version = { ...version, ...queued };
    renderValidation();
    schedule();
  } catch (error) {
    showError(error);
    button.disabled = waiting(version);
  }
});

load().catch(showError);
