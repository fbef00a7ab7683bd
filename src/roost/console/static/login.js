import { api, notify, showError, ApiError } from "./console.js";

const form = document.getElementById("login-form");
const mfaForm = document.getElementById("mfa-form");
const next = form.dataset.next || "/console/";
let mfaToken = null;

if (new URLSearchParams(location.search).get("expired")) {
  notify("Your session has ended. Sign in again; what you were typing is kept.", "info");
}

function done() { location.assign(next); }

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const login = form.login.value.trim();
  const password = form.password.value;
  if (!login || !password) { notify("Enter your username (or email) and password."); return; }
  try {
    const answer = await api("/console/session", { method: "POST", body: { login, password } });
    if (answer.signed_in) return done();
    mfaToken = answer.mfa_token;
    form.hidden = true;
    mfaForm.hidden = false;
    mfaForm.code.focus();
  } catch (error) { showError(error); }
});

mfaForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("/console/session/2fa", { method: "POST",
                                        body: { mfa_token: mfaToken, code: mfaForm.code.value.trim() } });
    done();
  } catch (error) { showError(error); }
});

// WebAuthn: bytes travel as base64url in JSON (py_webauthn's format on the server).
const fromB64 = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")
  .padEnd(Math.ceil(text.length / 4) * 4, "=")), (c) => c.charCodeAt(0));
const toB64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

document.getElementById("passkey-button").addEventListener("click", async () => {
  if (!window.PublicKeyCredential) { notify("This browser does not support passkeys."); return; }
  try {
    const { challenge_id: challengeId, options } = await api("/console/session/passkey/begin", { method: "POST" });
    const publicKey = { ...options, challenge: fromB64(options.challenge),
      allowCredentials: (options.allowCredentials || []).map((c) => ({ ...c, id: fromB64(c.id) })) };
    const credential = await navigator.credentials.get({ publicKey });
    const r = credential.response;
    await api("/console/session/passkey", { method: "POST", body: {
      challenge_id: challengeId,
      credential: { id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
        response: { clientDataJSON: toB64(r.clientDataJSON), authenticatorData: toB64(r.authenticatorData),
                    signature: toB64(r.signature), userHandle: r.userHandle ? toB64(r.userHandle) : null } },
    } });
    done();
  } catch (error) {
    if (error instanceof ApiError) showError(error);
    else notify("The passkey sign-in was cancelled or failed.");
  }
});
