import { api, notify, showError, ApiError } from "./console.js";
import { getCredential } from "./webauthn.js";

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

document.getElementById("passkey-button").addEventListener("click", async () => {
  if (!window.PublicKeyCredential) { notify("This browser does not support passkeys."); return; }
  try {
    const { challenge_id: challengeId, options } = await api("/console/session/passkey/begin", { method: "POST" });
    const credential = await getCredential(options);
    await api("/console/session/passkey", { method: "POST", body: { challenge_id: challengeId, credential } });
    done();
  } catch (error) {
    if (error instanceof ApiError) showError(error);
    else notify("The passkey sign-in was cancelled or failed.");
  }
});
