"""Committing files to the git repository of a chat session or run: the row records the
real commit (read back with dulwich), the real diff, and hostile input is refused."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from dulwich.diff_tree import tree_changes
from dulwich.object_store import commit_tree_changes
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo
from sqlalchemy import text

from roost.codeversions import repos, service
from roost.codeversions.config import CodeVersionsConfig
from roost.codeversions.jobs import prune_repositories
from roost.db.engine import Database
from roost.errors import PayloadTooLarge
from tests.codeversions.conftest import Headers, chat_session, commit, make_run


def open_repo(config: CodeVersionsConfig, owner: uuid.UUID, key: str) -> Repo:
    return Repo(str(repos.repo_path(config.repos_root, owner, uuid.UUID(key))))


def commit_directly(repo: Repo, parent_id: bytes,
                    changes: list[tuple[bytes, int | None, bytes | None]], message: bytes) -> None:
    """A commit of ``changes`` on ``parent_id`` made with dulwich, not through Roost (what
    a repository cloned from elsewhere, or many API commits, would hold), as main's head."""
    store = repo.object_store
    parent = repo[parent_id]
    assert isinstance(parent, Commit)
    c = Commit()
    c.tree, c.parents = commit_tree_changes(store, parent.tree, changes), [parent.id]
    c.author = c.committer = b"t <t@t>"
    c.author_time = c.commit_time = 0
    c.author_timezone = c.commit_timezone = 0
    c.message = message
    store.add_object(c)
    repo.refs[b"refs/heads/main"] = c.id


async def test_a_commit_is_the_repository_head(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
    database: Database,
) -> None:
    user_id, headers = user
    session_id = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=session_id,
                           files={"app.py": "print('hi')\n", "docs/readme.md": "# App\n"},
                           message="First version")
    repo = open_repo(config, user_id, session_id)
    try:
        head = repo.head().decode()
        assert version["version_hash"] == head
        assert repo.refs[b"refs/heads/main"].decode() == head
        commit_obj = repo[head.encode()]
        assert isinstance(commit_obj, Commit)
        assert commit_obj.message == b"First version\n"
        username = (await _username(database, user_id)).encode()
        assert commit_obj.author.startswith(username + b" <")
        assert commit_obj.parents == []
    finally:
        repo.close()
    assert version["branch"] == "main" and version["parent_hash"] is None
    assert version["user_id"] == str(user_id) and version["author_id"] == str(user_id)
    assert version["chat_session_id"] == session_id and version["run_id"] is None
    assert version["validation_status"] == "pending" and version["test_results"] == {}
    assert version["files_changed"] == [
        {"path": "app.py", "change": "added", "additions": 1, "deletions": 0},
        {"path": "docs/readme.md", "change": "added", "additions": 1, "deletions": 0},
    ]
    assert version["diff_summary"].endswith("2 files changed, 2 insertions(+), 0 deletions(-)")


async def _username(database: Database, user_id: uuid.UUID) -> str:
    async with database.transaction() as s:
        name: str = await s.scalar(text("SELECT username FROM users WHERE id = :id"),
                                   {"id": user_id})
    return name


async def test_files_changed_and_diff_come_from_the_real_diff(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
) -> None:
    user_id, headers = user
    session_id = await chat_session(client, headers)
    first = await commit(client, headers, chat_session_id=session_id, files={
        "app.py": "a = 1\nb = 2\nc = 3\n", "notes.txt": "one\ntwo\n"})
    second = await commit(client, headers, chat_session_id=session_id, message="Second", files={
        "app.py": "a = 1\nb = 20\nc = 3\nd = 4\n", "notes.txt": None, "lib/util.py": "X = 1\n"})
    assert second["parent_hash"] == first["version_hash"]
    assert second["files_changed"] == [
        {"path": "app.py", "change": "modified", "additions": 2, "deletions": 1},
        {"path": "lib/util.py", "change": "added", "additions": 1, "deletions": 0},
        {"path": "notes.txt", "change": "deleted", "additions": 0, "deletions": 2},
    ]
    assert second["diff_summary"].splitlines()[-1] == \
        " 3 files changed, 3 insertions(+), 3 deletions(-)"
    assert " app.py      | 3 ++-" in second["diff_summary"]
    # What dulwich itself says changed between the two commits.
    repo = open_repo(config, user_id, session_id)
    try:
        old, new = repo[first["version_hash"].encode()], repo[second["version_hash"].encode()]
        assert isinstance(old, Commit) and isinstance(new, Commit)
        changed = sorted((c.type, (c.new or c.old).path.decode())  # type: ignore[union-attr]
                         for c in tree_changes(repo.object_store, old.tree, new.tree))
        assert changed == [("add", "lib/util.py"), ("delete", "notes.txt"), ("modify", "app.py")]
    finally:
        repo.close()
    detail = (await client.get(f"/api/v1/code-versions/{second['id']}", headers=headers)).json()
    assert detail["diff_truncated"] is False
    for line in ("diff --git a/app.py b/app.py", "-b = 2", "+b = 20", "+d = 4",
                 "deleted file mode 100644", "-one", "+X = 1"):
        assert line in detail["diff"].splitlines(), line
    # Nothing changed: refused, no commit.
    resp = await client.post("/api/v1/code-versions", headers=headers, json={
        "chat_session_id": session_id, "message": "again", "files": {"lib/util.py": "X = 1\n"}})
    assert resp.status_code == 422 and "nothing to commit" in resp.json()["detail"]
    listed = (await client.get(f"/api/v1/code-versions?chat_session_id={session_id}",
                               headers=headers)).json()["items"]
    assert [v["id"] for v in listed] == [second["id"], first["id"]]


async def test_branches(client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
                        config: CodeVersionsConfig) -> None:
    user_id, headers = user
    session_id = await chat_session(client, headers)
    main = await commit(client, headers, chat_session_id=session_id, files={"app.py": "1\n"})
    feature = await commit(client, headers, chat_session_id=session_id, branch="feature/x",
                           files={"app.py": "2\n"})
    assert feature["parent_hash"] == main["version_hash"] and feature["branch"] == "feature/x"
    repo = open_repo(config, user_id, session_id)
    try:
        assert repo.head().decode() == main["version_hash"]  # HEAD stays on main
        assert repo.refs[b"refs/heads/feature/x"].decode() == feature["version_hash"]
    finally:
        repo.close()
    for bad in ("../main", "a..b", "x.lock", "-x", "a b", "HEAD~1"):
        resp = await client.post("/api/v1/code-versions", headers=headers, json={
            "chat_session_id": session_id, "message": "m", "branch": bad, "files": {"a": "b"}})
        assert resp.status_code == 422, bad
    only_feature = (await client.get(
        f"/api/v1/code-versions?chat_session_id={session_id}&branch=feature/x",
        headers=headers)).json()["items"]
    assert [v["id"] for v in only_feature] == [feature["id"]]


async def test_a_branch_that_clashes_with_another_as_a_path_is_a_409(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
        config: CodeVersionsConfig) -> None:
    """Git keeps branches as files under refs/heads: main/x cannot exist beside main, nor
    feat beside feat/x.  Such a branch is a 409 naming the other, nothing committed (main/x
    was a 500, NotADirectoryError; feat a 409 "moved while committing: try again" that no
    retry could fix)."""
    user_id, headers = user
    session_id = await chat_session(client, headers)
    main = await commit(client, headers, chat_session_id=session_id, files={"a.py": "1"})
    await commit(client, headers, chat_session_id=session_id, branch="feat/x", files={"a.py": "2"})
    for branch, other in (("main/x", "main"), ("feat", "feat/x"), ("feat/x/y", "feat/x")):
        refused = await commit(client, headers, 409, chat_session_id=session_id, branch=branch,
                               files={"a.py": "3"})
        assert refused["detail"].startswith(
            f"branch {branch} conflicts with existing branch {other}"), refused
    await commit(client, headers, chat_session_id=session_id, branch="feature",  # a prefix only
                 files={"a.py": "4"})
    listed = (await client.get(f"/api/v1/code-versions?chat_session_id={session_id}",
                               headers=headers)).json()["items"]
    assert sorted(v["branch"] for v in listed) == ["feat/x", "feature", "main"]
    repo = open_repo(config, user_id, session_id)
    try:
        assert repo.refs[b"refs/heads/main"].decode() == main["version_hash"]
    finally:
        repo.close()


HOSTILE = ["../escape.py", "a/../../escape.py", "/etc/passwd", "/tmp/x", "a//b", "./a",
           "a/./b", ".git/config", "sub/.GIT/hooks/pre-commit", "a\\..\\b", "C:/x",
           "tab\there", "nul\x00", "a/", "x" * 300,
           # C1 controls (U+009B is the one-byte CSI: ESC [ to a terminal), line separators
           # and bidirectional formatting (evil\u202egnp.py shows as evilyp.png): were committed
           "a\u009b31mred.py", "a\u0085b.py", "a\u0080.py", "a\u2028b.py", "evil\u202egnp.py",
           "x\u2066y.py",
           # .git as NTFS and HFS+ read it (git refuses to check them out: no clone worked)
           ".git./config", "git~1/config", "GIT~1 ./x", ".git /x", ".git::$INDEX_ALLOCATION/x",
           "sub/.git:stream", ".g\u200cit/config", ".git\ufeff/x", "a/b::$DATA"]


@pytest.mark.parametrize("path", HOSTILE)
async def test_hostile_paths_are_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
    path: str,
) -> None:
    _, headers = user
    session_id = await chat_session(client, headers)
    resp = await client.post("/api/v1/code-versions", headers=headers, json={
        "chat_session_id": session_id, "message": "m", "files": {path: "boom\n"}})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"].startswith("file path ")
    assert not any(p.name == "escape.py" for p in Path(config.repos_root).parent.rglob("*"))


async def test_a_repository_with_names_near_dot_git_still_clones_with_git(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
    tmp_path: Path,
) -> None:
    """Names git accepts next to the refused ones (.gitignore, git~12, a.git) are
    committed, and ``git clone`` checks the repository out."""
    owner, headers = user
    session_id = await chat_session(client, headers)
    files = {".gitignore": "x\n", "git~12/a": "x\n", "a.git/b": "x\n", ".git-x/c": "x\n"}
    resp = await client.post("/api/v1/code-versions", headers=headers, json={
        "chat_session_id": session_id, "message": "m", "files": files})
    assert resp.status_code == 201, resp.text
    bare = repos.repo_path(config.repos_root, owner, uuid.UUID(session_id))
    proc = await asyncio.create_subprocess_exec(
        "git", "clone", "-q", str(bare), str(tmp_path / "clone"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert all((tmp_path / "clone" / name).is_file() for name in files)


async def test_paths_through_files_and_symlinks_are_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
) -> None:
    user_id, headers = user
    session_id = await chat_session(client, headers)
    first = await commit(client, headers, chat_session_id=session_id,
                         files={"app.py": "x\n", "pkg/mod.py": "y\n"})
    # A repository holding a symbolic link (as one cloned from elsewhere could).
    repo = open_repo(config, user_id, session_id)
    try:
        target = Blob.from_string(b"/etc")
        repo.object_store.add_object(target)
        commit_directly(repo, first["version_hash"].encode(),
                        [(b"link", repos.MODE_LINK, target.id)], b"link\n")
    finally:
        repo.close()
    refused = {
        "link/passwd": "goes through a symbolic link",
        "link": "is a symbolic link",
        "app.py/x.py": "goes through a file",
        "pkg": "is a directory",
        "missing.py": "cannot be deleted",
    }
    for path, reason in refused.items():
        content = None if path == "missing.py" else "boom\n"
        resp = await client.post("/api/v1/code-versions", headers=headers, json={
            "chat_session_id": session_id, "message": "m", "files": {path: content}})
        assert resp.status_code == 422, path
        assert reason in resp.json()["detail"], (path, resp.json())
    resp = await client.post("/api/v1/code-versions", headers=headers, json={
        "chat_session_id": session_id, "message": "m", "files": {"d": "1", "d/e": "2"}})
    assert resp.status_code == 422 and "under another path" in resp.json()["detail"]


async def test_limits_and_bad_bodies(client: httpx.AsyncClient,
                                     user: tuple[uuid.UUID, Headers]) -> None:
    _, headers = user
    session_id = await chat_session(client, headers)
    too_big = {"chat_session_id": session_id, "message": "m", "files": {"a": "x" * 65537}}
    assert (await client.post("/api/v1/code-versions", headers=headers,
                              json=too_big)).status_code == 413
    many = {"chat_session_id": session_id, "message": "m",
            "files": {f"f{i}": "x" for i in range(21)}}
    assert (await client.post("/api/v1/code-versions", headers=headers,
                              json=many)).status_code == 413
    for body in ({"message": "m", "files": {"a": "b"}},  # no repository
                 {"chat_session_id": session_id, "run_id": str(uuid.uuid4()), "message": "m",
                  "files": {"a": "b"}},
                 {"chat_session_id": session_id, "message": "m", "files": {}},
                 {"chat_session_id": session_id, "message": "  ", "files": {"a": "b"}},
                 {"chat_session_id": session_id, "message": "a\x00b", "files": {"a": "b"}},
                 {"chat_session_id": session_id, "message": "m", "files": {"a": 1}},
                 {"chat_session_id": session_id, "message": "m", "files": {"a": "b"},
                  "extra": 1}):
        resp = await client.post("/api/v1/code-versions", headers=headers, json=body)
        assert resp.status_code == 422, body


async def test_a_rewrite_that_makes_difflib_quadratic_is_diffed_within_bounds(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """Files whose lines come back interleaved: difflib's matcher needs minutes for each
    (quadratic); the commit and its diff answer at once, the diff shown as a rewrite of the
    files' middles, still turning each old file into its new one."""
    _, headers = user
    session_id = await chat_session(client, headers)
    lines = [f"{i}\n" for i in range(12_000)]  # 64 KB files (the tests' cap)
    mixed = [line for pair in zip(lines[6_000:], lines[:6_000], strict=True) for line in pair]
    names = ["a.txt", "b.txt", "c.txt"]
    await commit(client, headers, chat_session_id=session_id,
                 files=dict.fromkeys(names, "".join(lines)))
    second = await commit(client, headers, chat_session_id=session_id,
                          files=dict.fromkeys(names, "".join(mixed)))
    assert second["files_changed"] == [
        {"path": name, "change": "modified", "additions": 12_000, "deletions": 12_000}
        for name in names]
    detail = (await client.get(f"/api/v1/code-versions/{second['id']}", headers=headers)).json()
    assert detail["diff_truncated"] is False
    first_file = detail["diff"].split("diff --git a/b.txt")[0].splitlines()
    assert first_file[4] == "@@ -1,12000 +1,12000 @@"
    assert [line[1:] + "\n" for line in first_file[5:] if line.startswith("+")] == mixed
    assert [line[1:] + "\n" for line in first_file[5:] if line.startswith("-")] == lines


async def test_run_repositories(client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
                                other_user: tuple[uuid.UUID, Headers], database: Database,
                                config: CodeVersionsConfig) -> None:
    user_id, headers = user
    run_id = str(await make_run(database, user_id))
    version = await commit(client, headers, run_id=run_id, files={"main.py": "print(1)\n"})
    assert version["run_id"] == run_id and version["chat_session_id"] is None
    repo = open_repo(config, user_id, run_id)
    try:
        assert repo.head().decode() == version["version_hash"]
    finally:
        repo.close()
    listed = (await client.get(f"/api/v1/code-versions?run_id={run_id}",
                               headers=headers)).json()["items"]
    assert [v["id"] for v in listed] == [version["id"]]
    _, other_headers = other_user
    resp = await client.post("/api/v1/code-versions", headers=other_headers, json={
        "run_id": run_id, "message": "m", "files": {"a": "b"}})
    assert resp.status_code == 404


async def test_another_users_versions_are_not_found(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    _, other_headers = other_user
    session_id = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=session_id, files={"a.py": "1\n"})
    for method, url in (("GET", f"/api/v1/code-versions/{version['id']}"),
                        ("POST", f"/api/v1/code-versions/{version['id']}/validate"),
                        ("GET", f"/api/v1/code-versions/{uuid.uuid4()}")):
        resp = await client.request(method, url, headers=other_headers)
        assert resp.status_code == 404, (method, url, resp.text)
    listed = (await client.get(f"/api/v1/code-versions?chat_session_id={session_id}",
                               headers=other_headers)).json()
    assert listed["items"] == []
    resp = await client.post("/api/v1/code-versions", headers=other_headers, json={
        "chat_session_id": session_id, "message": "m", "files": {"a.py": "2\n"}})
    assert resp.status_code == 404
    assert (await client.get("/api/v1/code-versions", headers=headers)).json()["items"][0][
        "id"] == version["id"]


async def test_commit_is_audited(client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
                                 database: Database) -> None:
    user_id, headers = user
    session_id = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=session_id, files={"a.py": "1\n"})
    async with database.transaction() as s:
        row = (await s.execute(text(
            "SELECT user_id, metadata FROM audit_logs WHERE action = 'codeversion.commit' "
            "AND resource_id = :id"), {"id": version["id"]})).one()
    assert row.user_id == user_id
    assert row.metadata["version_hash"] == version["version_hash"]


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp",
                               "GIT_CONFIG_NOSYSTEM": "1"})


async def test_a_bare_cr_is_part_of_its_line_as_in_git(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """Lines end at LF only, as git counts them: a\\rb -> a\\rc is one line changed (it
    was counted as 1 addition and 0 deletions: CR split the line)."""
    _, headers = user
    sid = await chat_session(client, headers)
    await commit(client, headers, chat_session_id=sid, files={"m.txt": "a\rb\n"})
    second = await commit(client, headers, chat_session_id=sid, files={"m.txt": "a\rc\n"})
    assert second["files_changed"] == [
        {"path": "m.txt", "change": "modified", "additions": 1, "deletions": 1}]
    assert second["diff_summary"].endswith("1 insertion(+), 1 deletion(-)")


async def test_the_diff_of_a_file_with_bare_crs_applies_with_git(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
    tmp_path: Path,
) -> None:
    """The version's diff applies with git apply on its parent (it had a "No newline at
    end of file" mid-file: git called it a corrupt patch)."""
    owner, headers = user
    sid = await chat_session(client, headers)
    first = await commit(client, headers, chat_session_id=sid, files={"m.txt": "x\ry\rz\n"})
    second = await commit(client, headers, chat_session_id=sid, files={"m.txt": "x\rY\rz\n"})
    detail = (await client.get(f"/api/v1/code-versions/{second['id']}", headers=headers)).json()
    assert "No newline" not in detail["diff"]
    clone = tmp_path / "clone"
    bare = repos.repo_path(config.repos_root, owner, uuid.UUID(sid))
    assert git("clone", "-q", str(bare), str(clone)).returncode == 0
    assert git("checkout", "-q", first["version_hash"], cwd=clone).returncode == 0
    (tmp_path / "p.diff").write_bytes(detail["diff"].encode())
    res = git("apply", str(tmp_path / "p.diff"), cwd=clone)
    assert res.returncode == 0, (res.stderr, detail["diff"])
    assert (clone / "m.txt").read_bytes() == b"x\rY\rz\n"


async def test_deeply_nested_paths_are_refused_before_anything_is_written(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
) -> None:
    """A commit writes a tree per directory: paths ~500 directories deep (within 1,024
    characters) wrote 10,000 objects for 20 two-byte files (100,000 objects, 400 MB,
    100 s at 200 files).  More than MAX_PATH_SEGMENTS names is a 422, nothing written;
    exactly that many is committed."""
    owner, headers = user
    sid = await chat_session(client, headers)
    files = {"/".join([str(i)] + ["a"] * 505) + f"/f{i}": "x\n" for i in range(20)}
    resp = await client.post("/api/v1/code-versions", headers=headers, json={
        "chat_session_id": sid, "message": "m", "files": files})
    assert resp.status_code == 422, resp.text
    assert "names deep" in resp.json()["detail"]
    assert not repos.repo_path(config.repos_root, owner, uuid.UUID(sid)).exists()
    deepest = "/".join(["d"] * (repos.MAX_PATH_SEGMENTS - 1) + ["f"])
    await commit(client, headers, 422, chat_session_id=sid, files={"d/" + deepest: "x\n"})
    await commit(client, headers, chat_session_id=sid, files={deepest: "x\n"})


def test_a_commit_touching_too_many_directories_is_refused(
    config: CodeVersionsConfig,
) -> None:
    """200 files each MAX_PATH_SEGMENTS deep in their own directories would still be 6,200
    trees: past MAX_COMMIT_DIRECTORIES it is a 413, like the other per-commit limits."""
    wide = CodeVersionsConfig(repos_root=config.repos_root, max_files=200)
    deep = "/".join(["a"] * (repos.MAX_PATH_SEGMENTS - 2))
    with pytest.raises(PayloadTooLarge, match="directories"):
        service.encode_files(wide, {f"{i}/{deep}/f": "x" for i in range(200)})
    shallow = service.encode_files(wide, {f"src/pkg{i % 20}/m{i}.py": "x" for i in range(200)})
    assert len(shallow) == 200


async def test_a_branch_named_head_is_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """HEAD is not a git branch name (git branch HEAD refuses it; it was created as
    refs/heads/HEAD): a 422 as for other names that are not branches."""
    _, headers = user
    sid = await chat_session(client, headers)
    await commit(client, headers, chat_session_id=sid, files={"a": "1\n"})
    assert git("check-ref-format", "--branch", "HEAD").returncode != 0
    refused = await commit(client, headers, 422, chat_session_id=sid, branch="HEAD",
                           files={"b": "1\n"})
    assert "branch must be a git branch name" in refused["detail"]
    await commit(client, headers, chat_session_id=sid, branch="feat/HEAD", files={"b": "1\n"})


async def test_a_first_commit_under_main_is_a_409_and_main_stays_committable(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """main, HEAD's branch, counts as existing in an empty repository: a first commit on
    main/x is a 409 (it was committed, and every commit to main was a 409 after it)."""
    _, headers = user
    sid = await chat_session(client, headers)
    refused = await commit(client, headers, 409, chat_session_id=sid, branch="main/x",
                           files={"a": "1\n"})
    assert refused["detail"].startswith("branch main/x conflicts with existing branch main")
    first = await commit(client, headers, chat_session_id=sid, files={"b": "1\n"})
    assert first["parent_hash"] is None and first["branch"] == "main"


def _big_root(config: CodeVersionsConfig, owner: uuid.UUID, sid: str, parent_id: str,
              entries: int) -> None:
    """``entries`` files in the repository's root, written directly (what many commits of
    200 files make)."""
    repo = open_repo(config, owner, sid)
    try:
        blob = Blob.from_string(b"x\n")
        repo.object_store.add_object(blob)
        commit_directly(repo, parent_id.encode(), [
            (f"file{i:05d}.py".encode(), repos.MODE_FILE, blob.id) for i in range(entries)],
            b"many\n")
    finally:
        repo.close()


async def test_a_commit_parses_a_big_directory_a_few_times_not_once_per_file(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 files into a 5,000-file directory parsed that tree 47 times (200 files into a
    100,000-file one: 20 s under the repository's lock); now a few times."""
    owner, headers = user
    sid = await chat_session(client, headers)
    first = await commit(client, headers, chat_session_id=sid, files={"seed.py": "x\n"})
    _big_root(config, owner, sid, first["version_hash"], 5000)
    parses: list[int] = []
    original = Tree._deserialize

    def counting(self: Tree, chunks: list[bytes]) -> None:
        size = sum(len(chunk) for chunk in chunks)
        if size > 100_000:  # the 5,000-entry root tree (about 190 KB)
            parses.append(size)
        original(self, chunks)

    monkeypatch.setattr(Tree, "_deserialize", counting)
    done = await commit(client, headers, chat_session_id=sid,
                        files={f"new{i}.py": "y\n" for i in range(20)})
    assert len(parses) <= 5, f"the 5,000-entry tree was parsed {len(parses)} times"
    assert len(done["files_changed"]) == 20 and "20 files changed" in done["diff_summary"]


async def test_a_commit_growing_a_directory_past_its_entry_limit_is_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A directory holds at most MAX_DIRECTORY_ENTRIES names: a 422 naming it, nothing
    committed; changing files of a full directory still works."""
    monkeypatch.setattr(repos, "MAX_DIRECTORY_ENTRIES", 30)
    owner, headers = user
    sid = await chat_session(client, headers)
    first = await commit(client, headers, chat_session_id=sid,
                         files={"seed.py": "x\n", "src/a.py": "a\n"})
    _big_root(config, owner, sid, first["version_hash"], 27)  # 29 names in the root
    refused = await commit(client, headers, 422, chat_session_id=sid,
                           files={"n1.py": "y\n", "n2.py": "y\n", "src/b.py": "b\n"})
    assert "directory the repository's root would hold more than 30 entries" in \
        refused["detail"]
    await commit(client, headers, 422, chat_session_id=sid,
                 files={"deep/x.py": "y\n", "deep2/y.py": "y\n"})
    await commit(client, headers, chat_session_id=sid, files={"n1.py": "y\n"})  # the 30th
    await commit(client, headers, chat_session_id=sid,
                 files={"seed.py": "changed\n", "src/b.py": "b\n"})
    monkeypatch.setattr(repos, "MAX_DIRECTORY_ENTRIES", 2)
    refused = await commit(client, headers, 422, chat_session_id=sid,
                           files={"src/c.py": "c\n"})
    assert "directory src would hold" in refused["detail"]


async def test_repositories_nothing_owns_are_pruned_and_the_rest_kept(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], config: CodeVersionsConfig,
    database: Database,
) -> None:
    """A chat session deleted (or its account) takes its code versions' rows with it; the
    hourly prune then deletes its repository from the disk. A live session's repository, a
    young one and what is not Roost's under DATA_DIR/repos stay."""
    user_id, headers = user
    kept, gone = await chat_session(client, headers), await chat_session(client, headers)
    for session_id in (kept, gone):
        await commit(client, headers, chat_session_id=session_id, files={"a.py": "x = 1\n"})
    stranger = config.repos_root / "notes.txt"
    stranger.write_text("not a repository")
    assert (await client.delete(f"/api/v1/chat/sessions/{gone}", headers=headers)).status_code == 204
    gone_path = repos.repo_path(config.repos_root, user_id, uuid.UUID(gone))

    assert await prune_repositories(database, config.repos_root) == 0  # too young yet
    assert gone_path.is_dir()
    assert await prune_repositories(database, config.repos_root, grace_s=0) == 1
    assert not gone_path.exists()
    assert repos.repo_path(config.repos_root, user_id, uuid.UUID(kept)).is_dir()
    assert stranger.read_text() == "not a repository"
    assert (await client.get(f"/api/v1/code-versions?chat_session_id={kept}",
                             headers=headers)).json()["items"]

    # The account's last repository gone: its directory goes too.
    await client.delete(f"/api/v1/chat/sessions/{kept}", headers=headers)
    assert await prune_repositories(database, config.repos_root, grace_s=0) == 1
    assert not (config.repos_root / str(user_id)).exists()
