import { api, el, formatTime, latestLoad, notify, showError, submitOnce, ApiError } from "./console.js";
import { createCredential } from "./webauthn.js";

const $ = (id) => document.getElementById(id);

async function loadAccount() {
  const me = await api("/api/v1/auth/me");
  $("full-name").value = me.full_name || "";
  const settings = await api("/api/v1/users/me/settings");
  $("theme").value = settings.theme === "light" ? "light" : "dark";
}

$("account-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("/api/v1/users/me", { method: "PATCH", body: { full_name: $("full-name").value.trim() || null } });
    const theme = $("theme").value;
    await api("/api/v1/users/me/settings", { method: "PATCH", body: { theme } });
    document.documentElement.dataset.theme = theme;
    notify("Saved.", "ok");
  } catch (error) { showError(error); }
});

// --- invitations (groups, personas) ------------------------------------------------------

const article = (word) => (/^[aeiou]/.test(word) ? "an" : "a");

// The two kinds of invitation differ only in where they live and what they name.
const INVITATIONS = {
  group: {
    path: "/api/v1/groups/invitations", list: "invitations", more: "invitations-more",
    empty: "No invitations.",
    name: (invitation) => invitation.group_name || "a group",
    role: (invitation) => (invitation.role === "admin" ? "as a group admin" : "as a member"),
  },
  persona: {
    path: "/api/v1/personas/invitations", list: "persona-invitations",
    more: "persona-invitations-more", empty: "No persona invitations.",
    name: (invitation) => invitation.persona_name || "a persona",
    role: (invitation) => `as ${article(invitation.role)} ${invitation.role}`,
  },
};
const invitationCursors = {};
const invitationLoads = Object.fromEntries(
  Object.entries(INVITATIONS).map(([kind, { more }]) => [kind, latestLoad($(more))]));

function invitationRow(kind, invitation) {
  const { path, name, role } = INVITATIONS[kind];
  const what = name(invitation);
  const by = invitation.invited_by_username ? `invited by ${invitation.invited_by_username}` : "invited";
  const answer = (verb) => async () => {
    try {
      await api(`${path}/${invitation.id}/${verb}`, { method: "POST" });
      notify(verb === "accept" ? `You joined ${what}.` : `Invitation to ${what} declined.`, "ok");
      await loadInvitations(kind);
    } catch (error) { showError(error); await loadInvitations(kind); }
  };
  return el("li", { class: "item-row", dataset: { id: invitation.id } },
    el("span", {}, el("strong", {}, what), " ",
       el("span", { class: "muted" }, `${role(invitation)}, ${by} · ${formatTime(invitation.created_at)}`)),
    el("span", { class: "row" },
      el("button", { type: "button", "aria-label": `Accept the invitation to ${what}`,
                     onclick: answer("accept") }, "Accept"),
      el("button", { type: "button", class: "ghost", "aria-label": `Decline the invitation to ${what}`,
                     onclick: answer("decline") }, "Decline")));
}

async function loadInvitations(kind, more = false) {
  const { path, list: listId, more: moreId, empty } = INVITATIONS[kind];
  const list = $(listId);
  const cursor = invitationCursors[kind];
  const query = more && cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
  const page = await invitationLoads[kind]((signal) => api(`${path}${query}`, { signal }));
  if (!page) return;  // a newer load replaced this one
  if (!more) list.replaceChildren();
  list.querySelector(".empty")?.remove();
  list.append(...page.items.map((invitation) => invitationRow(kind, invitation)));
  if (!list.children.length) list.append(el("li", { class: "empty" }, empty));
  invitationCursors[kind] = page.next_cursor;
  $(moreId).hidden = !page.next_cursor;
}

for (const kind of Object.keys(INVITATIONS)) {
  $(INVITATIONS[kind].more).addEventListener("click", () => loadInvitations(kind, true).catch(showError));
}

// --- API keys -----------------------------------------------------------------------------

async function loadKeys() {
  const keys = await api("/api/v1/api-keys");
  const body = $("keys");
  body.replaceChildren();
  if (!keys.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No keys yet.")));
  for (const key of keys) {
    body.append(el("tr", {},
      el("td", {}, key.name), el("td", {}, el("code", {}, key.prefix)),
      el("td", {}, formatTime(key.created_at)), el("td", {}, formatTime(key.last_used_at) || "never"),
      el("td", {}, formatTime(key.expires_at) || "never"),
      el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Revoke key ${key.name}`,
        onclick: async () => {
          if (!confirm(`Revoke the key "${key.name}"? Programs using it stop working.`)) return;
          try { await api(`/api/v1/api-keys/${key.id}`, { method: "DELETE" }); await loadKeys(); }
          catch (error) { showError(error); }
        } }, "Revoke"))));
  }
}

submitOnce($("key-form"), async () => {
  const name = $("key-name").value.trim();
  if (!name) { notify("Give the key a name."); return; }
  const body = { name };
  if ($("key-expires").value) body.expires_at = new Date($("key-expires").value + "T23:59:59").toISOString();
  const created = await api("/api/v1/api-keys", { method: "POST", body });
  $("new-key-value").textContent = created.key;
  $("new-key").hidden = false;
  $("key-form").reset();
  await loadKeys();
});

$("copy-key").addEventListener("click", async () => {
  try { await navigator.clipboard.writeText($("new-key-value").textContent); notify("Copied.", "ok"); }
  catch { notify("Select the key and copy it by hand."); }
});

// --- two-factor ---------------------------------------------------------------------------

async function loadTwoFactor() {
  const status = await api("/api/v1/auth/2fa");
  $("tfa-status").textContent = status.enabled
    ? `On. ${status.backup_codes_remaining} backup codes left.` : "Off.";
  $("tfa-start").hidden = status.enabled;
  $("tfa-disable-form").hidden = !status.enabled;
}

$("tfa-start").addEventListener("click", async () => {
  try {
    const setup = await api("/api/v1/auth/2fa/setup", { method: "POST" });
    $("tfa-secret").textContent = setup.secret;
    $("tfa-uri").href = setup.otpauth_uri;
    $("tfa-setup").hidden = false;
    $("tfa-code").focus();
  } catch (error) { showError(error); }
});

$("tfa-confirm-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const answer = await api("/api/v1/auth/2fa/confirm", { method: "POST", body: { code: $("tfa-code").value.trim() } });
    $("tfa-setup").hidden = true;
    $("tfa-codes-list").textContent = answer.backup_codes.join("\n");
    $("tfa-codes").hidden = false;
    await loadTwoFactor();
  } catch (error) { showError(error); }
});

$("tfa-disable-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("/api/v1/auth/2fa/disable", { method: "POST", body: { code: $("tfa-disable-code").value.trim() } });
    $("tfa-disable-form").reset();
    $("tfa-codes").hidden = true;
    await loadTwoFactor();
  } catch (error) { showError(error); }
});

// --- passkeys -----------------------------------------------------------------------------

async function loadPasskeys() {
  const list = $("passkeys");
  const keys = await api("/api/v1/auth/passkeys");
  list.replaceChildren();
  if (!keys.length) list.append(el("li", { class: "empty" }, "No passkeys yet."));
  for (const key of keys) {
    list.append(el("li", { class: "item-row" },
      el("span", {}, key.credential_name || "passkey", " ", el("span", { class: "muted" }, `added ${formatTime(key.created_at)}`)),
      el("button", { type: "button", class: "danger", "aria-label": `Delete passkey ${key.credential_name || ""}`,
        onclick: async () => {
          if (!confirm("Delete this passkey?")) return;
          try { await api(`/api/v1/auth/passkeys/${key.id}`, { method: "DELETE" }); await loadPasskeys(); }
          catch (error) { showError(error); }
        } }, "Delete")));
  }
}

$("passkey-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!window.PublicKeyCredential) { notify("This browser does not support passkeys."); return; }
  const name = $("passkey-name").value.trim() || null;
  try {
    const begun = await api("/api/v1/auth/passkeys/register/begin", { method: "POST", body: { name } });
    const credential = await createCredential(begun.options);
    await api("/api/v1/auth/passkeys/register/finish", { method: "POST",
      body: { challenge_id: begun.challenge_id, credential, name } });
    $("passkey-form").reset();
    notify("Passkey added.", "ok");
    await loadPasskeys();
  } catch (error) {
    if (error instanceof ApiError) showError(error);
    else notify("Adding the passkey was cancelled or failed.");
  }
});

// --- sessions -----------------------------------------------------------------------------

async function loadSessions() {
  const list = $("sessions");
  const rows = await api("/api/v1/auth/sessions");
  list.replaceChildren();
  for (const row of rows) {
    list.append(el("li", { class: "item-row" },
      el("span", {}, row.user_agent || row.auth_method, " ",
         el("span", { class: "muted" }, `${row.ip_address || ""} · last used ${formatTime(row.last_used_at)}`),
         row.current ? el("span", { class: "badge ok" }, "this browser") : null),
      row.current ? null : el("button", { type: "button", class: "ghost", "aria-label": "End this session",
        onclick: async () => {
          try { await api(`/api/v1/auth/sessions/${row.id}`, { method: "DELETE" }); await loadSessions(); }
          catch (error) { showError(error); }
        } }, "End")));
  }
}

$("logout-all").addEventListener("click", async () => {
  if (!confirm("Sign out of every browser and program using a session (API keys keep working)?")) return;
  try { await api("/api/v1/auth/logout-all", { method: "POST" }); } catch (error) { showError(error); return; }
  location.assign("/console/login");
});

Promise.all([loadAccount(), loadInvitations("group"), loadInvitations("persona"), loadKeys(), loadTwoFactor(), loadPasskeys(),
             loadSessions()])
  .catch(showError);
