// Code versions' validation status in words (the badge's colour only repeats it), shared by
// the list and the version page.
import { el } from "./console.js";

export const FINAL = new Set(["passed", "failed", "error", "timeout"]);

const WORDS = {
  passed: "passed",
  failed: "failed",
  error: "could not run",
  timeout: "timed out",
  running: "running",
};

// The short label next to the badge: "pending" means queued once a job exists.
export function statusLabel(version) {
  if (version.validation_status === "pending") {
    return version.validation_task_id ? "queued" : "not validated";
  }
  return WORDS[version.validation_status] ?? version.validation_status;
}

// A sentence saying what the status means.
export function statusSentence(version) {
  switch (version.validation_status) {
    case "passed": return "Passed: every check succeeded on this commit.";
    case "failed": return "Failed: at least one check failed (or wrote more output than allowed).";
    case "error": return "Error: a check could not run (command not found, or the checkout failed).";
    case "timeout": return "Timed out: a check ran past its time limit and was stopped.";
    case "running": return "Running: a worker is running the checks now.";
    default:
      return version.validation_task_id
        ? "Queued: the checks wait for a worker."
        : "Not validated yet: press Validate to run the configured checks.";
  }
}

export function statusBadge(version) {
  const status = version.validation_status;
  const kind = status === "pending" && !version.validation_task_id ? "muted" : status;
  return el("span", { class: `badge ${kind}` }, statusLabel(version));
}

export const shortHash = (hash) => String(hash || "").slice(0, 10);
