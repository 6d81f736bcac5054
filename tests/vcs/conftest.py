"""Real git repositories: a working clone and a bare repository as its remote `origin`."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git in `cwd`; the result keeps stdout and stderr for assertions."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)


def out(cwd: Path, *args: str) -> str:
    return git(cwd, *args).stdout.strip()


@dataclass
class Repo:
    """A clone with `main` pushed to a bare remote."""

    work: Path
    remote: Path

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return git(self.work, *args, check=check)

    def out(self, *args: str) -> str:
        return out(self.work, *args)

    def write(self, relative: str, content: str | bytes = "x") -> Path:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def commit(self, message: str, *paths: str) -> str:
        git(self.work, "add", *(("--", *paths) if paths else ("-A",)))
        git(self.work, "commit", "-q", "-m", message)
        return out(self.work, "rev-parse", "HEAD")

    def add_pairs(self, *stems: str) -> None:
        for stem in stems:
            self.write(f"data/incoming/images/{stem}.png", b"\x89PNG image " + stem.encode())
            self.write(f"data/incoming/masks/{stem}.png", b"\x89PNG mask " + stem.encode())

    def push(self, *args: str) -> subprocess.CompletedProcess[str]:
        return git(self.work, "push", *args, check=False)

    def remote_branches(self) -> dict[str, str]:
        lines = out(self.remote, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
        return dict(line.split() for line in lines.splitlines())


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """`work` (the current folder) on main, pushed to the bare `remote`; a placeholder keeps data/incoming."""
    # The developer's own git settings (hooksPath, signing, templates) stay out of the tests.
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    git(work, "config", "user.name", "Test Person")
    git(work, "config", "user.email", "test@example.com")
    r = Repo(work, remote)
    r.write("wms.toml", '[git]\nbase_branch = "main"\n')
    r.write(".gitignore", ".wms/\n")
    r.write("data/incoming/.gitkeep", "")
    r.write("src/app.py", "print('hello')\n")
    r.commit("initial")
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "-q", "-u", "origin", "main")
    monkeypatch.chdir(work)
    return r
