// A problem's message for the notice: a 422's field errors say more than its summary
// ("request has invalid or missing fields; see errors").
import { ApiError } from "./console.js";

export function problemMessage(error) {
  if (!(error instanceof ApiError)) return String(error?.message || error);
  const errors = Array.isArray(error.problem?.errors) ? error.problem.errors : [];
  const details = errors.filter((e) => e && e.msg).map((e) => {
    const where = (e.loc || []).filter((part) => part !== "body").join(".");
    return where ? `${where}: ${e.msg}` : e.msg;
  });
  return details.length ? `${error.message}: ${details.slice(0, 5).join("; ")}` : error.message;
}
