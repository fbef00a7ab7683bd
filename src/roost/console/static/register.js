import { api, LEAVING, notify, submitOnce } from "./console.js";

const form = document.getElementById("register-form");
// Sent once: a double click must not post the account twice (the second would be told
// the username is taken, by the account the first has just created).
submitOnce(form, async () => {
  const body = { username: form.username.value.trim(), email: form.email.value.trim(),
                 password: form.password.value };
  if (form.full_name.value.trim()) body.full_name = form.full_name.value.trim();
  if (!body.username || !body.email || !body.password) { notify("Fill in username, email and password."); return; }
  const user = await api("/api/v1/auth/register", { method: "POST", body });
  if (user.status !== "active") {
    form.reset();
    notify("Account created. An administrator must approve it before you can sign in.", "info");
    return;
  }
  await api("/console/session", { method: "POST", body: { login: body.username, password: body.password } });
  location.assign("/console/");
  return LEAVING;
});
