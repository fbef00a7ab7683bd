// One persona: details, editing (owners and editors), members (owners manage them),
// write-only secrets (owners and editors), the mailbox and the health samples.
import { api, badge, edited, el, fill, formatTime, latestLoad, notify, pageData, saveChanges, showError, submitOnce } from "./console.js";

const { persona_id: personaId } = pageData();
const base = `/api/v1/personas/${personaId}`;
let persona = null;
let mailCursor = null;

function detail(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

const none = (text = "none") => el("span", { class: "muted" }, text);
// The API decides; these only hide what the viewer's role cannot do.
const canEdit = () => persona.my_role === null || ["owner", "editor"].includes(persona.my_role);
const isOwner = () => persona.my_role === null || persona.my_role === "owner";

function render() {
  document.title = `${persona.name} · Persona · Roost`;
  document.getElementById("persona-title").textContent = persona.name;
  const description = document.getElementById("persona-description");
  description.textContent = persona.description || "";
  description.hidden = !persona.description;
  document.getElementById("persona-details").replaceChildren(
    ...detail("State", persona.is_active ? badge("active") : badge("inactive", "muted")),
    ...detail("Your role", persona.my_role || none("administrator")),
    ...detail("Default model", persona.default_model || none("the agent's or the default"),
              persona.default_provider ? ` (provider ${persona.default_provider})` : null),
    ...detail("E-mail address", persona.email_address || none()),
    ...detail("System prompt", persona.system_prompt
      ? el("pre", { class: "prompt" }, persona.system_prompt) : none()),
    ...detail("Updated", formatTime(persona.updated_at)),
  );
  const form = document.getElementById("edit-form");
  const field = (name) => form.elements.namedItem(name);
  fill(field("name"), persona.name);
  fill(field("default_model"), persona.default_model || "");
  fill(field("email_address"), persona.email_address || "");
  fill(field("description"), persona.description || "");
  fill(field("system_prompt"), persona.system_prompt || "");
  field("is_active").checked = persona.is_active;
  fill(field("email_agent_id"), persona.email_agent_id || "");
  document.getElementById("edit-card").hidden = !canEdit();
  document.getElementById("grant-form").hidden = !canEdit();
  document.getElementById("delete-persona").hidden = !isOwner();
  document.getElementById("member-form").hidden = !isOwner();
  document.getElementById("secrets-card").hidden = !canEdit();
}

// Only what changed is sent (a PATCH changes only the fields it names).
function changes(form) {
  const body = {};
  const field = (name) => form.elements.namedItem(name);
  const text = (name) => field(name).value.trim();
  if (edited(field("name")) && text("name") !== persona.name) body.name = text("name");
  for (const key of ["default_model", "email_address", "description"]) {
    const value = text(key) || null;
    if (edited(field(key)) && value !== (persona[key] || null)) body[key] = value;
  }
  if (edited(field("system_prompt")) && field("system_prompt").value !== (persona.system_prompt || "")) {
    body.system_prompt = field("system_prompt").value;
  }
  if (field("is_active").checked !== persona.is_active) body.is_active = field("is_active").checked;
  // Sent only when picked: a select whose options had not loaded yet (or hold no option
  // for the current agent) shows "None", which must not unset the mail agent.
  if (edited(field("email_agent_id"))
      && (field("email_agent_id").value || null) !== (persona.email_agent_id || null)) {
    body.email_agent_id = field("email_agent_id").value || null;
  }
  return body;
}

function wireEdit() {
  const form = document.getElementById("edit-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const saved = await saveChanges(base, changes(form));
    if (saved) {
      persona = saved;
      render();
    }
  });
  document.getElementById("delete-persona").addEventListener("click", async () => {
    if (!window.confirm(`Delete the persona “${persona?.name ?? ""}” with its members, secrets, agents and mail?`)) return;
    try {
      await api(base, { method: "DELETE" });
      location.assign("/console/personas");
    } catch (error) { showError(error); }
  });
}

// --- members ------------------------------------------------------------------------------

function memberRow(member) {
  const who = member.username || member.user_id;
  const remove = isOwner() && member.user_id !== persona.owner_id
    ? el("button", { type: "button", class: "danger", "aria-label": `Remove ${who}`,
                     onclick: () => removeMember(member, who) }, "Remove")
    : null;
  return el("tr", {},
    el("td", {}, who),
    el("td", {}, member.user_id === persona.owner_id ? badge("owner", "info") : member.role),
    el("td", {}, remove));
}

async function loadMembers() {
  const members = await api(`${base}/members`);
  document.getElementById("members-body").replaceChildren(...members.map(memberRow));
}

async function removeMember(member, who) {
  if (!window.confirm(`Remove ${who} from this persona?`)) return;
  try {
    await api(`${base}/members/${member.user_id}`, { method: "DELETE" });
    await loadMembers();
    notify(`${who} was removed.`, "ok");
  } catch (error) { showError(error); }
}

function wireMembers() {
  const form = document.getElementById("member-form");
  submitOnce(form, async () => {
    const user = form.elements.namedItem("user").value.trim();
    if (!user) {
      notify("Name the user to add: a username, e-mail address or id.");
      form.elements.namedItem("user").focus();
      return;
    }
    const added = await api(`${base}/members`, { method: "POST",
      body: { user, role: form.elements.namedItem("role").value } });
    form.reset();
    await loadMembers();
    const role = `${/^[aeiou]/.test(added.role) ? "an" : "a"} ${added.role}`;
    // An owner's addition is an invitation (202): the person joins once they accept it
    // on their profile; a site administrator's is the membership itself.
    notify("invited_by" in added
      ? `${added.username || user} is invited as ${role}: they join once they accept.`
      : `${added.username || user} is now ${role}.`, "ok");
  });
}

// --- secrets ------------------------------------------------------------------------------

function secretRow(secret) {
  return el("tr", {},
    el("td", {}, el("code", {}, secret.key_name)),
    el("td", {}, secret.secret_type),
    el("td", {}, secret.last_used_at ? formatTime(secret.last_used_at) : none("never")),
    el("td", {}, el("button", { type: "button", class: "danger",
                                "aria-label": `Delete secret ${secret.key_name}`,
                                onclick: () => deleteSecret(secret) }, "Delete")));
}

async function loadSecrets() {
  if (!canEdit()) return;
  const secrets = await api(`${base}/secrets`);
  document.getElementById("secrets-body").replaceChildren(...secrets.map(secretRow));
  document.getElementById("secrets-table").hidden = !secrets.length;
  document.getElementById("secrets-empty").hidden = secrets.length > 0;
}

async function deleteSecret(secret) {
  if (!window.confirm(`Delete the secret ${secret.key_name}? Tools that name it stop working.`)) return;
  try {
    await api(`${base}/secrets/${secret.id}`, { method: "DELETE" });
    await loadSecrets();
  } catch (error) { showError(error); }
}

function wireSecrets() {
  const form = document.getElementById("secret-form");
  submitOnce(form, async () => {
    const field = (name) => form.elements.namedItem(name);
    if (!field("key_name").value.trim() || !field("value").value) {
      notify("A secret needs a name and a value.");
      field(field("key_name").value.trim() ? "value" : "key_name").focus();
      return;
    }
    const body = { secret_type: field("secret_type").value, key_name: field("key_name").value.trim(),
                   value: field("value").value };
    field("value").value = ""; // out of the page at once, whatever the answer
    const saved = await api(`${base}/secrets`, { method: "PUT", body });
    field("key_name").value = "";
    await loadSecrets();
    notify(`Secret ${saved.key_name} saved.`, "ok");
  });
}

// --- mailbox ------------------------------------------------------------------------------

function mailRow(email) {
  return el("tr", {},
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => openMail(email.id) },
                    email.subject || "(no subject)"),
       el("div", { class: "muted small" }, email.direction)),
    el("td", {}, email.from_email),
    el("td", {}, email.to_email),
    el("td", {}, formatTime(email.received_at || email.sent_at || email.created_at)));
}

const loadingMail = latestLoad(document.getElementById("mail-more"));

async function loadMail(more = false) {
  const query = new URLSearchParams({ limit: "20" });
  if (more && mailCursor) query.set("cursor", mailCursor);
  const page = await loadingMail((signal) => api(`${base}/emails?${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  const body = document.getElementById("mail-body");
  if (!more) body.replaceChildren();
  for (const email of page.items) body.append(mailRow(email));
  mailCursor = page.next_cursor;
  const any = body.children.length > 0;
  document.getElementById("mail-table").hidden = !any;
  document.getElementById("mail-empty").hidden = any;
  document.getElementById("mail-more").hidden = !mailCursor;
}

function sizeText(bytes) {
  return bytes < 1024 ? `${bytes} B` : bytes < 1048576 ? `${(bytes / 1024).toFixed(1)} KB`
    : `${(bytes / 1048576).toFixed(1)} MB`;
}

// The text body only: an HTML body is whatever a stranger sent, never rendered here.
async function openMail(emailId) {
  const view = document.getElementById("mail-view");
  try {
    const email = await api(`/api/v1/emails/${emailId}`);
    const files = email.attachments.map((file) => el("li", {},
      el("a", { href: `/api/v1/attachments/${file.id}/content`, download: file.name }, file.name),
      ` (${sizeText(file.file_size)})`));
    view.replaceChildren(
      el("h3", {}, email.subject || "(no subject)"),
      el("dl", { class: "details" },
        ...detail("From", email.from_email), ...detail("To", email.to_email),
        email.cc ? detail("Cc", email.cc) : [],
        ...detail("When", formatTime(email.received_at || email.sent_at || email.created_at)),
        email.run_id ? detail("Run", el("a", { href: `/console/runs/${email.run_id}` }, "the run it started")) : []),
      email.body_text ? el("pre", { class: "text" }, email.body_text)
        : none(email.body_html ? "This message has only an HTML body, which the console does not display." : "No text."),
      files.length ? el("div", {}, el("h4", {}, "Attachments"), el("ul", { class: "plain" }, files)) : null);
    view.hidden = false;
    view.scrollIntoView({ block: "nearest" });
  } catch (error) { showError(error); }
}

// --- health -------------------------------------------------------------------------------

async function loadHealth() {
  const samples = (await api(`${base}/health?limit=24`)).reverse();
  const cell = (value) => el("td", {}, value === null || value === undefined ? none("–") : String(value));
  document.getElementById("health-body").replaceChildren(...samples.map((s) => el("tr", {},
    el("td", {}, formatTime(s.measured_at)), cell(s.active_runs_count), cell(s.llm_calls_count),
    cell(s.estimated_cost), cell(s.cpu_percent), cell(s.memory_mb))));
  document.getElementById("health-table").hidden = !samples.length;
  document.getElementById("health-empty").hidden = samples.length > 0;
}

// --- tools granted ------------------------------------------------------------------------

function grantRow(grant) {
  const name = grant.tool_name || grant.tool_id;
  return el("tr", {},
    el("td", {}, grant.tool_name ? el("a", { href: `/console/tools/${grant.tool_id}` }, name) : name),
    el("td", {}, grant.is_enabled ? badge("enabled", "ok") : badge("disabled", "muted")),
    el("td", {}, grant.max_calls_per_run ?? none("no limit")),
    el("td", {}, canEdit() ? el("button", { type: "button", class: "danger", "aria-label": `Revoke ${name}`,
                                            onclick: () => revoke(grant, name) }, "Revoke") : null));
}

async function loadGrants() {
  const grants = await api(`${base}/tools`);
  document.getElementById("grants-body").replaceChildren(...grants.map(grantRow));
  document.getElementById("grants-table").hidden = !grants.length;
  document.getElementById("grants-empty").hidden = grants.length > 0;
}

async function revoke(grant, name) {
  if (!window.confirm(`Revoke ${name}? The persona's agents can no longer call it through this grant.`)) return;
  try {
    await api(`${base}/tools/${grant.tool_id}`, { method: "DELETE" });
    await loadGrants();
  } catch (error) { showError(error); }
}

async function loadToolChoices() {
  if (!canEdit()) return;
  const page = await api("/api/v1/tools?available=true&limit=200");
  document.getElementById("grant-tool").replaceChildren(
    ...page.items.filter((t) => t.enabled).map((t) => el("option", { value: t.id }, t.name)));
}

function wireGrants() {
  const form = document.getElementById("grant-form");
  submitOnce(form, async () => {
    const toolId = form.elements.namedItem("tool_id").value;
    if (!toolId) {
      notify("Pick a tool to grant.");
      return;
    }
    const calls = form.elements.namedItem("max_calls_per_run").value;
    const body = { is_enabled: true, ...(calls ? { max_calls_per_run: Number(calls) } : {}) };
    const granted = await api(`${base}/tools/${toolId}`, { method: "PUT", body });
    form.elements.namedItem("max_calls_per_run").value = "";
    await loadGrants();
    notify(`${granted.tool_name || "The tool"} is granted.`, "ok");
  });
}

async function loadAgents() {
  const page = await api(`/api/v1/agents?persona_id=${personaId}&limit=50`);
  const mailAgent = document.getElementById("edit-mail-agent");
  const options = page.items.map((agent) => el("option", { value: agent.id }, agent.name));
  // The mail agent may be older than the 50 newest listed: its own option, so the select
  // shows it (and a save keeps it).
  const current = persona.email_agent_id;
  if (current && !page.items.some((agent) => agent.id === current)) {
    const agent = await api(`/api/v1/agents/${current}`).catch(() => null);
    options.push(el("option", { value: current }, agent ? agent.name : current));
  }
  mailAgent.replaceChildren(mailAgent.options[0], ...options);
  fill(mailAgent, current || "");
  document.getElementById("agents-list").replaceChildren(...page.items.map((agent) =>
    el("li", {}, el("a", { href: `/console/agents/${agent.id}` }, agent.name), " ",
       el("span", { class: "muted small" }, agent.slug))));
  document.getElementById("agents-list").hidden = !page.items.length;
  document.getElementById("agents-empty").hidden = page.items.length > 0;
}

async function load() {
  persona = await api(base);
  render();
  document.getElementById("edit-fields").disabled = false;
}

document.getElementById("mail-more").addEventListener("click", () => loadMail(true).catch(showError));
wireEdit();
wireMembers();
wireSecrets();
wireGrants();
load().then(() => Promise.all([loadMembers(), loadSecrets(), loadAgents(), loadGrants(),
                               loadToolChoices(), loadMail(), loadHealth()]))
  .catch(showError);
