// Administration: groups.  Every group (?all=true, by name, a page at a time with "Load more
// groups"), create, delete, and one group's members: list, add (the API takes a username,
// email or id), remove.
import { api, el, formatTime, notify, pagedList, showError, submitOnce } from "./console.js";

const tbody = document.getElementById("groups");
const empty = document.getElementById("groups-empty");
const groupsMore = el("button", { type: "button", id: "groups-more", class: "secondary", hidden: true },
  "Load more groups");
empty.after(el("div", { class: "pager" }, groupsMore));
const membersCard = document.getElementById("members-card");
const membersTitle = document.getElementById("members-title");
const membersBody = document.getElementById("members");
const membersEmpty = document.getElementById("members-empty");
const memberForm = document.getElementById("member-form");
const memberUser = document.getElementById("member-user");
const memberRole = document.getElementById("member-role");
let openGroup = null;
let usersLoaded = false;

function groupRow(group) {
  return el("tr", { dataset: { id: group.id } },
    el("th", { scope: "row" }, group.name),
    el("td", {}, group.description || el("span", { class: "muted" }, "—")),
    el("td", { class: "nowrap" }, el("time", { datetime: group.created_at }, formatTime(group.created_at))),
    el("td", {}, el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", "aria-label": `Members of ${group.name}`,
                     onclick: () => openMembers(group) }, "Members"),
      el("button", { type: "button", class: "danger", "aria-label": `Delete ${group.name}`,
                     onclick: () => deleteGroup(group) }, "Delete"))));
}

const loadGroups = pagedList({
  body: tbody, empty, more: groupsMore, row: groupRow,
  path: () => ["/api/v1/groups", new URLSearchParams({ all: "true", limit: "100" })],
});

async function deleteGroup(group) {
  if (!confirm(`Delete the group ${group.name}? Its members lose what it shares with them.`)) return;
  try {
    await api(`/api/v1/groups/${group.id}`, { method: "DELETE" });
    if (openGroup?.id === group.id) closeMembers();
    notify(`Group ${group.name} deleted.`, "ok");
    await loadGroups();
  } catch (error) { showError(error); }
}

function memberRow(member) {
  const name = member.full_name ? `${member.username} (${member.full_name})` : member.username;
  return el("tr", {},
    el("td", {}, name),
    el("td", {}, member.role === "admin" ? "Group admin" : "Member"),
    el("td", { class: "nowrap" }, el("time", { datetime: member.joined_at }, formatTime(member.joined_at))),
    el("td", {}, el("div", { class: "actions" },
      el("button", { type: "button", class: "danger", "aria-label": `Remove ${member.username}`,
                     onclick: () => removeMember(member) }, "Remove"))));
}

async function loadMembers() {
  if (!openGroup) return;
  try {
    const members = await api(`/api/v1/groups/${openGroup.id}/members`);
    membersBody.replaceChildren(...members.map(memberRow));
    membersEmpty.hidden = members.length > 0;
  } catch (error) { showError(error); }
}

// Suggestions for the member field: active accounts (the first 500 are enough to pick from;
// any other can still be typed).
async function loadUserSuggestions() {
  if (usersLoaded) return;
  usersLoaded = true;
  try {
    const users = await api("/api/v1/users?status=active&limit=500");
    document.getElementById("known-users").replaceChildren(
      ...users.map((u) => el("option", { value: u.username }, u.full_name || u.email)));
  } catch (error) { usersLoaded = false; showError(error); }
}

async function openMembers(group) {
  openGroup = group;
  membersTitle.textContent = `Members of ${group.name}`;
  membersCard.hidden = false;
  membersBody.replaceChildren();
  await loadMembers();
  membersTitle.focus();
  loadUserSuggestions();
}

function closeMembers() {
  openGroup = null;
  membersCard.hidden = true;
}

async function removeMember(member) {
  if (!openGroup) return;
  try {
    await api(`/api/v1/groups/${openGroup.id}/members/${member.user_id}`, { method: "DELETE" });
    notify(`${member.username} removed from ${openGroup.name}.`, "ok");
    await loadMembers();
  } catch (error) { showError(error); }
}

submitOnce(memberForm, async () => {
  const user = memberUser.value.trim();
  if (!openGroup || !user) { notify("Enter a username, email or user id."); return; }
  const member = await api(`/api/v1/groups/${openGroup.id}/members`, {
    method: "POST", body: { user, role: memberRole.value } });
  memberForm.reset();
  notify(`${member.username} added to ${openGroup.name}.`, "ok");
  await loadMembers();
});

document.getElementById("close-members").addEventListener("click", () => {
  const group = openGroup;
  closeMembers();
  tbody.querySelector(`tr[data-id="${CSS.escape(group?.id || "")}"] button`)?.focus();
});

const createForm = document.getElementById("create-form");
submitOnce(createForm, async () => {
  const name = document.getElementById("group-name").value.trim();
  const description = document.getElementById("group-description").value.trim();
  if (!name) { notify("Give the group a name."); return; }
  const group = await api("/api/v1/groups", { method: "POST", body: description ? { name, description } : { name } });
  createForm.reset();
  notify(`Group ${group.name} created.`, "ok");
  await loadGroups();
  await openMembers(group);
});

loadGroups();
