// WebAuthn bytes travel as base64url strings in JSON (py_webauthn's format on the server).

export const fromB64 = (text) => Uint8Array.from(
  atob(text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=")),
  (c) => c.charCodeAt(0));
export const toB64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

const withIds = (list) => (list || []).map((c) => ({ ...c, id: fromB64(c.id) }));

export async function createCredential(options) {
  const publicKey = { ...options, challenge: fromB64(options.challenge),
    user: { ...options.user, id: fromB64(options.user.id) },
    excludeCredentials: withIds(options.excludeCredentials) };
  const credential = await navigator.credentials.create({ publicKey });
  const r = credential.response;
  return { id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
    response: { clientDataJSON: toB64(r.clientDataJSON), attestationObject: toB64(r.attestationObject),
                transports: r.getTransports ? r.getTransports() : [] } };
}

export async function getCredential(options) {
  const publicKey = { ...options, challenge: fromB64(options.challenge),
    allowCredentials: withIds(options.allowCredentials) };
  const credential = await navigator.credentials.get({ publicKey });
  const r = credential.response;
  return { id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
    response: { clientDataJSON: toB64(r.clientDataJSON), authenticatorData: toB64(r.authenticatorData),
                signature: toB64(r.signature), userHandle: r.userHandle ? toB64(r.userHandle) : null } };
}
