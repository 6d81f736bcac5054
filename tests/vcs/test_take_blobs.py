"""A batch's files are read through one git process and, in a blob-less clone (CI's checkout),
fetched in one round trip: a few hundred pairs cost one fetch, not one per file."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.git_http import serve_git
from tests.vcs.conftest import git, out

from wms.vcs.git import Git, GitError, token_env
from wms.vcs.guard import write_incoming

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

TOKEN = "job-token"
BRANCH = "data/20260102-030405"
# Bytes git's own text handling would trip on, a file larger than one copied chunk, twins, an empty file.
FILES = {
    "images/m001.png": b"\x89PNG\r\n\x1a\n\x00line\nbreaks\n",
    "masks/m001.png": b"\x89PNG mask m001",
    "images/m 002 é.png": os.urandom(3 * 1024 * 1024 + 7),
    "masks/m 002 é.png": b"\x89PNG mask m001",  # the same blob as masks/m001.png
    "images/m003.png": b"",
    "masks/m003.png": b"\x89PNG mask m003\n",
}


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def push_data_branch(repo: Repo, files: dict[str, bytes]) -> str:
    repo.git("switch", "-q", "-c", BRANCH)
    for name, content in files.items():
        repo.write(f"data/incoming/{name}", content)
    sha = repo.commit("new pairs")
    assert repo.push("-q", "origin", BRANCH).returncode == 0
    repo.git("switch", "-q", "main")
    return sha


def run(cwd: Path, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> str:
    """`git ARGS` with `stdin` and extra `env`; its stdout."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        env={**os.environ, **(env or {})},
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def git_processes(trace: Path, command: str) -> int:
    """How many `git COMMAND` processes GIT_TRACE2_EVENT recorded."""
    events = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []
    return sum(1 for e in events if e.get("event") == "start" and e["argv"][1:2] == [command])


def test_a_full_clone_writes_exactly_the_batchs_bytes_through_one_git_process(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = push_data_branch(repo, FILES)
    trace = tmp_path / "trace.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    target = tmp_path / "incoming"
    written = write_incoming(Git(repo.work), sha, "data/incoming", target)
    assert files_under(target) == FILES
    assert sorted(p.relative_to(target).as_posix() for p in written) == sorted(FILES)
    assert git_processes(trace, "cat-file") == 1  # was one per file
    assert git_processes(trace, "fetch") == 0  # nothing is missing from a full clone


@dataclass
class Served:
    """A blob-less clone (what actions/checkout's `filter: blob:none` makes) of a served remote."""

    clone: Path
    remote: Path
    sha: str
    requests: list[str]  # every HTTP request the server answered, in order

    def fetches(self) -> int:
        """Round trips to fetch objects: each fetch starts by asking for the remote's refs."""
        return sum("info/refs?service=git-upload-pack" in r for r in self.requests)


@pytest.fixture
def served(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    sha = push_data_branch(repo, FILES)
    git(repo.remote, "config", "uploadpack.allowFilter", "true")
    git(repo.remote, "config", "uploadpack.allowAnySHA1InWant", "true")
    # The token reaches git only through its environment, as the workflows' credentials do.
    for name, value in token_env(TOKEN).items():
        monkeypatch.setenv(name, value)
    requests: list[str] = []
    with serve_git(repo.remote.parent, {TOKEN: "github-actions"}, requests) as url:
        clone = tmp_path / "checkout"
        git(tmp_path, "clone", "-q", "--filter=blob:none", f"{url}/{repo.remote.name}", str(clone))
        listing = run(clone, "rev-list", "--objects", "--missing=print", f"{sha}:data/incoming")
        assert "\n?" in listing  # the batch's blobs are not here yet
        requests.clear()
        yield Served(clone, repo.remote, sha, requests)


def test_a_blob_less_clone_fetches_the_whole_batch_in_one_round_trip(served: Served, tmp_path: Path) -> None:
    target = tmp_path / "incoming"
    write_incoming(Git(served.clone), served.sha, "data/incoming", target)
    assert files_under(target) == FILES
    assert served.fetches() == 1  # was one per file: 4 round trips (git holds the empty blob)


def test_a_blob_the_remote_no_longer_has_fails_in_one_line_and_leaves_nothing(
    served: Served, tmp_path: Path
) -> None:
    blob = out(served.clone, "rev-parse", f"{served.sha}:data/incoming/masks/m003.png")
    loose = served.remote / "objects" / blob[:2] / blob[2:]
    assert loose.exists()  # a small push is unpacked into loose objects
    loose.unlink()
    target = tmp_path / "incoming"
    with pytest.raises(GitError) as raised:
        write_incoming(Git(served.clone), served.sha, "data/incoming", target)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"could not fetch 4 file(s) of commit {served.sha[:12]} (origin: ")
    assert message.endswith("; nothing was taken")
    assert not target.exists()  # not the files read before it, looking like a whole batch
    assert served.fetches() == 1


def test_a_blob_missing_with_no_remote_to_fetch_it_from_leaves_nothing_written(
    repo: Repo, tmp_path: Path
) -> None:
    """Read failures midway (a clone that lost an object) remove the files already streamed out."""
    present = run(repo.work, "hash-object", "-w", "--stdin", stdin=b"\x89PNG image m001")
    absent = run(repo.work, "hash-object", "--stdin", stdin=b"never stored")
    index = {"GIT_INDEX_FILE": str(tmp_path / "index")}
    for name, blob in (("images/m001.png", present), ("masks/m001.png", absent)):
        run(
            repo.work,
            "update-index",
            "--add",
            "--cacheinfo",
            f"100644,{blob},data/incoming/{name}",
            env=index,
        )
    tree = run(repo.work, "write-tree", "--missing-ok", env=index)
    sha = run(repo.work, "commit-tree", tree, "-m", "a pair, one half lost")
    target = tmp_path / "incoming"
    with pytest.raises(GitError) as raised:
        write_incoming(Git(repo.work), sha, "data/incoming", target)
    assert str(raised.value) == (
        f"could not read data/incoming/masks/m001.png of commit {sha[:12]}: blob {absent[:12]} is missing "
        "in this repository; nothing was taken"
    )
    assert not target.exists()
