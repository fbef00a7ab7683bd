"""``roost backup`` and ``roost restore`` keep the code versions' git repositories
(``DATA_DIR/repos``): the repository is the truth about the code, and a restored row
whose repository is missing answered 404 "repository is missing"."""

from __future__ import annotations

import asyncio
import io
import stat
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest
from dulwich.repo import Repo

from roost.codeversions import repos
from roost.config import Settings
from roost.db import backup
from tests.codeversions.conftest import Headers, chat_session, commit
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.places import encrypted_backup

PASSPHRASE = "correct horse battery staple"


def _objects(repository: Path) -> dict[str, int]:
    """The repository's loose object files and their modes."""
    return {str(p.relative_to(repository)): stat.S_IMODE(p.stat().st_mode)
            for p in (repository / "objects").rglob("*") if p.is_file()}


async def test_a_backup_holds_the_repositories_and_a_restore_puts_them_back(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], test_settings: Settings,
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    owner, headers = user
    sid = await chat_session(client, headers)
    version = await commit(client, headers, chat_session_id=sid, files={"app.py": "print(1)\n"})
    source = repos.repo_path(test_settings.data_dir / "repos", owner, uuid.UUID(sid))
    out = tmp_path / "backup"
    manifest = await encrypted_backup(pg_server, db_name, test_settings.data_dir, out,
                                      PASSPHRASE)
    assert "repos.tar.enc" in manifest["files"], sorted(manifest["files"])
    assert not (out / "repos.tar").exists()  # encrypted like the dump

    target_db = unique_db_name("cvrestore")
    await pg_server.create_database(target_db)
    target = tmp_path / "restored"
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(target_db), "ROOST_DATA_DIR": str(target),
           "ROOST_BACKUP_PASSPHRASE": PASSPHRASE}
    try:
        done = await asyncio.to_thread(run_roost, "restore", str(out), env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        restored = repos.repo_path(target / "repos", owner, uuid.UUID(sid))
        repo = Repo(str(restored))
        try:
            assert repo.refs[b"refs/heads/main"].decode() == version["version_hash"]
        finally:
            repo.close()
        assert _objects(restored) == _objects(source)  # modes kept (git's objects: 0444)
        diff, _ = repos.patch_of(restored, version["version_hash"], max_bytes=1 << 20)
        assert "+print(1)" in diff

        # A target with repositories is not empty; --force sets them aside.
        again = await asyncio.to_thread(run_roost, "restore", str(out), env=env, timeout=300)
        assert again.returncode != 0
        assert "holds code repositories" in again.stderr, again.stderr
        (restored / "marker").write_text("old")
        forced = await asyncio.to_thread(run_roost, "restore", "--force", str(out), env=env,
                                         timeout=300)
        assert forced.returncode == 0, forced.stderr
        aside = [p for p in target.iterdir() if p.name.startswith("repos.replaced-")]
        assert len(aside) == 1, sorted(p.name for p in target.iterdir())
        assert (repos.repo_path(aside[0], owner, uuid.UUID(sid)) / "marker").exists()
        assert not (restored / "marker").exists()
        assert not [p for p in target.iterdir() if p.name.startswith(".repos-restoring-")]
    finally:
        await pg_server.drop_database(target_db)


@pytest.mark.parametrize("member", ["../escaped", "link-out", "device"])
def test_a_repository_archive_reaching_outside_is_refused(tmp_path: Path, member: str) -> None:
    """A repos.tar with a path or link leading out of DATA_DIR/repos, or a device,
    writes nothing."""
    archive = tmp_path / "repos.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        if member == "link-out":
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
            tar.addfile(info)
            info = tarfile.TarInfo("link-out/x")
        if member == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    with pytest.raises(backup.BackupError, match=r"repos\.tar holds what Roost never writes"):
        backup._unpack_tree(settings, backup.REPOS_TREE, archive, backup._Silent())
    assert list(data_dir.iterdir()) == []
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "outside").exists()


def _link_chain_archive(path: Path, ups: int) -> None:
    """Symbolic links each pointing inside the directory as tarfile's "data" filter checks
    them, chained past PATH_MAX so ``os.path.realpath`` stops resolving: the last link,
    ``escape``, really points ``ups`` levels above the unpacking directory
    (CVE-2025-4517, Pythons before 3.11.13, this machine's 3.11.7 among them)."""
    component, steps = "d" * 247, "abcdefghijklmnop"
    with tarfile.open(path, "w") as tar:
        at = ""
        for step in steps:
            folder = tarfile.TarInfo(f"{at}{component}")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
            link = tarfile.TarInfo(f"{at}{step}")
            link.type, link.linkname = tarfile.SYMTYPE, component
            tar.addfile(link)
            at = f"{at}{component}/"
        deep = "/".join([*steps, "l" * 254])
        link = tarfile.TarInfo(deep)
        link.type, link.linkname = tarfile.SYMTYPE, "../" * len(steps)
        tar.addfile(link)
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, deep + "/.." * ups
        tar.addfile(link)
        written = tarfile.TarInfo("escape/PWNED")
        written.size = 1
        tar.addfile(written, io.BytesIO(b"x"))


def test_a_chain_of_links_that_fools_the_data_filter_is_refused(tmp_path: Path) -> None:
    """A repos.tar (or a base backup's base.tar) whose chained links the "data" filter
    cannot resolve wrote ``escape/PWNED`` two levels above the unpacking directory, outside
    DATA_DIR, and the restore went on: it is refused before anything is unpacked."""
    archive = tmp_path / "repos.tar"
    _link_chain_archive(archive, ups=2)
    data_dir = tmp_path / "outer" / "data"
    data_dir.mkdir(parents=True)
    with pytest.raises(backup.BackupError, match=r"repos\.tar holds what Roost never writes"):
        backup._unpack_tree(Settings(data_dir=data_dir), backup.REPOS_TREE, archive, backup._Silent())
    assert list(data_dir.iterdir()) == []
    assert not list(tmp_path.rglob("PWNED"))
    empty = tmp_path / "pg_wal.tar"
    with tarfile.open(empty, "w"):
        pass
    manifest = tmp_path / "backup_manifest"
    manifest.write_text("{}")
    into = tmp_path / "outer" / "pg"
    with pytest.raises(backup.BackupError, match=r"base\.tar holds what Roost never writes"):
        backup._unpack({"base.tar": archive, "pg_wal.tar": empty, "backup_manifest": manifest},
                       into)
    assert list(into.iterdir()) == [] and not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize(("name", "linkname"), [
    ("inside", "a/b"), ("up-and-back", "../x/y"),
])
def test_links_that_stay_inside_are_unpacked(tmp_path: Path, name: str, linkname: str) -> None:
    """The check refuses only what could lead out: a link to a path inside the directory
    (also through ``..`` that stays inside) is unpacked as before."""
    archive = tmp_path / "repos.tar"
    with tarfile.open(archive, "w") as tar:
        folder = tarfile.TarInfo("x")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo(f"x/{name}")
        link.type, link.linkname = tarfile.SYMTYPE, linkname
        tar.addfile(link)
    data_dir = tmp_path / "data"
    staging = backup._unpack_tree(Settings(data_dir=data_dir), backup.REPOS_TREE, archive, backup._Silent())
    assert (staging / "x" / name).is_symlink()
