"""A batch's training as a status on its data commit: GitHub lists the training run under main
(it starts on workflow_run), so the commit the person pushed says where its batch stands."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.conftest import TINY_SETTINGS
from tests.test_workflow_credentials import read_github_output
from tests.vcs.test_github import REPO, FakeGitHub, github

from wms.batches import MAX_ATTEMPTS
from wms.vcs.commit_status import CHECK_REFUSAL, status_of

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

__all__ = ["github"]  # the fake GitHub API fixture, used here too

BRANCH = "data/20260102-030405"


@pytest.mark.parametrize(
    ("record", "state", "starts"),
    [
        ({"status": "running"}, "pending", "queued or training"),
        (
            {"status": "promoted", "summary": "promoted version 3 (Dice 0.91)"},
            "success",
            "promoted version 3",
        ),
        ({"status": "published", "summary": "promoted version 3; pull request #7"}, "success", "published: "),
        ({"status": "not-promoted", "summary": "not promoted: Dice 0.80 < 0.85"}, "success", "not promoted:"),
        ({"status": "no-new-data", "summary": "not promoted: no new pairs"}, "success", "no-new-data: "),
        ({"status": "rejected", "summary": "failed at validate: 2 bad files"}, "failure", "rejected: failed"),
        ({"status": "closed", "summary": "pull request #7 closed unmerged"}, "failure", "closed: "),
        (
            {"status": "failed", "summary": "failed at train: out of memory", "attempts": 1},
            "error",
            "failed at",
        ),
        (
            {"status": "failed", "summary": "failed at train", "attempts": MAX_ATTEMPTS},
            "failure",
            "failed 3 runs",
        ),
    ],
)
def test_each_batch_outcome_reads_as_a_commit_status(record: dict[str, Any], state: str, starts: str) -> None:
    got_state, description = status_of(record)
    assert (got_state, description[: len(starts)]) == (state, starts)
    if record["status"] == "failed" and state == "error":
        assert "the sweeper runs it again" in description


def _broken_batch(repo: Repo, api: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> str:
    """A data branch whose pairs are no images (its run rejects it at once, with nothing trained),
    the project set to GitHub (the fake API), and the job's environment as GitHub gives it."""
    repo.write(
        "wms.toml",
        TINY_SETTINGS + f'\n[git]\nbase_branch = "main"\nhost = "github"\napi_url = "{api.url}"\n'
        f'repository = "{REPO}"\n',
    )
    repo.commit("on github")
    repo.git("push", "-q", "origin", "main")
    repo.git("switch", "-q", "-c", BRANCH)
    repo.add_pairs("m001")
    sha = repo.commit("a batch that is not images")
    for name, value in {
        "GITHUB_TOKEN": "t0ken",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_RUN_ID": "42",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WMS_GITHUB_TOKEN", raising=False)
    return sha


def run_batch(cli: Callable[..., Any], repo: Repo, sha: str) -> Any:
    """The train job's pipeline step for the batch commit `sha` (its pairs taken into data/incoming)."""
    return cli(
        "pipeline", "run", "--new-data", str(repo.work / "data/incoming"), "--branch", BRANCH, "--sha", sha
    )


def test_a_batch_run_shows_pending_then_its_outcome_on_the_batch_commit(
    repo: Repo,
    github: FakeGitHub,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sha = _broken_batch(repo, github, monkeypatch)
    github.answer(f"POST /repos/{REPO}/statuses/{sha}", 201, {"state": "pending"})

    ran = run_batch(cli, repo, sha)

    assert ran.exit_code != 0
    posted = [c.body for c in github.calls(f"POST /repos/{REPO}/statuses/{sha}")]
    assert [p["state"] for p in posted] == ["pending", "failure"], ran.output
    assert posted[-1]["description"].startswith("rejected: ")
    assert len(posted[-1]["description"]) <= 140
    assert {p["context"] for p in posted} == {"WMS training"}
    assert {p["target_url"] for p in posted} == {"https://github.com/acme/meters/actions/runs/42"}
    # The job's own token, never the PAT: a status needs no more than statuses: write.
    assert {c.headers["Authorization"] for c in github.calls(f"POST /repos/{REPO}/statuses/{sha}")} == {
        "Bearer t0ken"
    }


def test_a_status_github_refuses_is_one_line_and_changes_nothing_of_the_run(
    repo: Repo,
    github: FakeGitHub,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sha = _broken_batch(repo, github, monkeypatch)
    github.answer(
        f"POST /repos/{REPO}/statuses/{sha}", 403, {"message": "Resource not accessible by integration"}
    )

    ran = run_batch(cli, repo, sha)

    assert ran.exit_code == 1 and "Traceback" not in ran.output
    assert ran.output.count("the job's token needs statuses: write") == 2  # pending, then the outcome
    assert "rejected" in (repo.work / ".wms/store/batches" / f"{sha}.json").read_text()


def test_a_branch_the_sweeper_refuses_says_so_on_its_commit_once(
    repo: Repo,
    github: FakeGitHub,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweeper's look refuses a branch that changes code: no run ever takes it, so only the
    sweep can say so on the commit the person pushed."""
    _broken_batch(repo, github, monkeypatch)
    repo.write("src/app.py", "print('changed')\n")
    sha = repo.commit("code on a data branch")
    repo.git("push", "-q", "origin", BRANCH)
    repo.git("switch", "-q", "main")
    github.answer(f"POST /repos/{REPO}/statuses/{sha}", 201, {})

    for _ in range(2):
        looked = cli("pipeline", "sweep", "--dry-run")
        assert looked.exit_code == 0, looked.output

    [posted] = [c.body for c in github.calls(f"POST /repos/{REPO}/statuses/{sha}")]  # once: then finished
    assert posted["state"] == "failure"
    assert posted["description"].startswith(f"rejected: refused commit {sha[:12]}: it changes src/app.py")


def test_a_batch_data_push_refused_is_recorded_rejected_by_the_look_and_starts_no_compute(
    repo: Repo,
    github: FakeGitHub,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    github_files: tuple[Path, Path],
) -> None:
    """Data push failed the pairs' validation and so started no training; the sweeper's look counted
    the branch as never run, and in single its start job booted the GPU instance for a run that
    could only reject it. The commit's status, set by Data push's comment job, now settles it."""
    refused = _broken_batch(repo, github, monkeypatch)
    repo.git("push", "-q", "origin", BRANCH)
    repo.git("switch", "-q", "main")
    later = f"{BRANCH}1"
    repo.git("switch", "-q", "-c", later, "main")
    repo.add_pairs("m002")
    unchecked = repo.commit("a batch Data push has not said anything of")
    repo.git("push", "-q", "origin", later)
    repo.git("switch", "-q", "main")
    github.answer(
        f"GET /repos/{REPO}/commits/{refused}/status",
        200,
        {
            "state": "failure",
            "statuses": [
                {"context": "WMS training", "state": "failure", "description": (f"rejected: {CHECK_REFUSAL}")}
            ],
        },
    )
    github.answer(f"POST /repos/{REPO}/statuses/{refused}", 201, {})

    looked = cli("pipeline", "sweep", "--dry-run")

    assert looked.exit_code == 0, looked.output
    assert read_github_output(github_files[0])["pending"] == "1"  # the unchecked batch only
    assert (
        f"{BRANCH}: rejected, not run — the new pairs did not pass validation in Data push" in looked.output
    )
    batch = json.loads((repo.work / ".wms/store/batches" / f"{refused}.json").read_text())
    assert (batch["status"], batch["summary"]) == ("rejected", CHECK_REFUSAL)
    assert not (repo.work / ".wms/store/batches" / f"{unchecked}.json").exists()  # a look records no run

    looked = cli("pipeline", "sweep", "--dry-run")  # recorded: never asked again, never run
    assert looked.exit_code == 0, looked.output
    assert len(github.calls(f"GET /repos/{REPO}/commits/{refused}/status")) == 1
    assert read_github_output(github_files[0])["pending"] == "1"


@pytest.mark.parametrize(("hours_ago", "posted"), [(14, True), (1, False)])
def test_a_third_run_that_died_leaves_its_commit_failed_not_pending(
    repo: Repo,
    github: FakeGitHub,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    hours_ago: int,
    posted: bool,
) -> None:
    """A batch whose third run was killed kept the status that run set as it began, "pending", for
    good: the sweeper gave it up but said so only on its own page. Once the run started longer ago
    than a run can last (compute.longest_run: 13 h), the look records it failed and the commit says
    so; a third run still within that time may be alive, and is left alone."""
    sha = _broken_batch(repo, github, monkeypatch)
    repo.git("push", "-q", "origin", BRANCH)
    repo.git("switch", "-q", "main")
    started = (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat(timespec="seconds")
    path = repo.work / ".wms/store/batches" / f"{sha}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    third = {"branch": BRANCH, "sha": sha, "status": "running", "run_id": "r3", "attempts": MAX_ATTEMPTS}
    path.write_text(json.dumps({**third, "started_at": started, "summary": ""}))
    github.answer(f"POST /repos/{REPO}/statuses/{sha}", 201, {})

    for _ in range(2):
        looked = cli("pipeline", "sweep", "--dry-run")
        assert looked.exit_code == 0 and "would run" not in looked.output, looked.output

    statuses = [c.body for c in github.calls(f"POST /repos/{REPO}/statuses/{sha}")]
    batch = json.loads(path.read_text())
    if posted:
        [status] = statuses  # once: the record says failed since
        assert status["state"] == "failure"
        assert status["description"].startswith("failed 3 runs, not retried: the last run, r3, never ended")
        assert batch["status"] == "failed" and batch["attempts"] == MAX_ATTEMPTS
    else:
        assert statuses == [] and batch["status"] == "running"
