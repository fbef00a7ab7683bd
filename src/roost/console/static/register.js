import { api, notify, showError } from "./console.js";

const form = document.getElementById("register-form");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { username: form.username.value.trim(), email: form.email.value.trim(),
                 password: form.password.value };
  if (form.full_name.value.trim()) body.full_name = form.full_name.value.trim();
  if (!body.username || !body.email || !body.password) { notify("Fill in username, email and password."); return; }
  try {
    const user = await api("/api/v1/auth/register", { method: "POST", body });
    if (user.status !== "active") {
      form.reset();
      notify("Account created. An administrator must approve it before you can sign in.", "info");
      return;
    }
    await api("/console/session", { method: "POST", body: { login: body.username, password: body.password } });
    location.assign("/console/");
  } catch (error) { showError(error); }
});
