"""`wms pipeline sweep` on a published batch's data branch where a labeller pushed more pairs on top.

Real git repositories (a clone and its bare remote) and the fake GitHub API; nothing trains.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.vcs.test_github import REPO, FakeGitHub, github
from tests.vcs.test_sweep import on_github, publish_branch, pull, record

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

__all__ = ["github"]  # the fake GitHub API fixture

BRANCH = "data/20260102-030405"


def push_onto(repo: Repo, stem: str) -> str:
    """More pairs committed on the data branch as the remote has it (pulled first), and pushed."""
    repo.git("fetch", "-q", "origin")
    repo.git("switch", "-q", "-c", BRANCH, f"origin/{BRANCH}")
    repo.add_pairs(stem)
    sha = repo.commit("more pairs")
    repo.git("push", "-q", "origin", BRANCH)
    repo.git("switch", "-q", "main")
    repo.git("branch", "-q", "-D", BRANCH)
    return sha


def test_a_published_batch_with_pairs_pushed_onto_its_branch_is_still_settled_and_listed(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_github(repo, github, monkeypatch)
    first = publish_branch(repo, BRANCH, "r-1", stem="m001", with_batch=True)
    second = push_onto(repo, "m002")  # onto the pipeline's pointer commit, while the pull request is open
    route = f"GET /repos/{REPO}/pulls"
    github.answer(route, 200, [pull(7, "closed")])  # then a person closed the pull request
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    said = " ".join(swept.output.split())
    closed = (
        f"{BRANCH}: closed, not merged — its pull request https://github.com/{REPO}/pull/7 was closed, so "
        "main has nothing of this batch"
    )
    refused = (
        f"{BRANCH}: rejected, not run — refused commit {second[:12]}: it was pushed onto the pipeline's "
        f"pointer commit of batch {first[:12]} (published: its pull request carries that batch to main), "
        "and a data branch carries one batch — push its pairs from main instead"
    )
    assert closed in said and refused in said
    assert "push code through a pull request" not in said  # the labeller pushed pairs, not code
    page = " ".join(summary.read_text().split())
    assert f"- {closed}" in page and f"- {refused}" in page
    rec = record(repo, first)
    assert rec is not None and rec["status"] == "closed" and rec["closed"].endswith("/pull/7"), rec
    rec = record(repo, second)
    assert rec is not None and rec["status"] == "rejected", rec

    # Left to a person: every sweep lists the closed batch again; the refusal was said once.
    again = " ".join(cli("pipeline", "sweep", "--dry-run").output.split())
    assert closed in again and "rejected" not in again
    assert BRANCH in repo.remote_branches()


def test_a_batch_main_took_keeps_its_branch_while_pairs_pushed_onto_it_were_never_run(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    on_github(repo, github, monkeypatch)
    first = publish_branch(repo, BRANCH, "r-1", stem="m001", with_batch=True)
    second = push_onto(repo, "m002")
    github.answer(f"GET /repos/{REPO}/pulls", 200, [pull(7, "open")])
    github.answer(f"GET /repos/{REPO}/pulls/7", 200, pull(7, "open") | {"mergeable": False})

    swept = " ".join(cli("pipeline", "sweep").output.split())
    assert f"{BRANCH}: published, but its pull request https://github.com/{REPO}/pull/7 cannot merge" in swept
    rec = record(repo, first)
    assert rec is not None and rec["status"] == "published", rec

    # GitHub squashed the pull request: main's ledger holds the first batch's promotion.
    repo.git("checkout", "-q", f"origin/{BRANCH}", "--", "models/production_history.jsonl")
    repo.commit(f"{BRANCH}: model version 1 to production (#7)")
    repo.git("push", "-q", "origin", "main")
    swept = " ".join(cli("pipeline", "sweep").output.split())
    rec = record(repo, first)
    assert rec is not None and rec["status"] == "promoted", rec
    rec = record(repo, second)
    assert rec is not None and rec["status"] == "rejected", rec
    assert "merged into main" not in swept and BRANCH in repo.remote_branches()  # its pairs are only there


def test_a_published_batch_held_back_by_pairs_pushed_onto_its_branch_is_listed_with_the_way_out(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    on_github(repo, github, monkeypatch)
    first = publish_branch(repo, BRANCH, "r-1", stem="m001", with_batch=True)
    pointer = repo.out("rev-parse", f"origin/{BRANCH}")
    second = push_onto(repo, "m002")
    github.answer(f"GET /repos/{REPO}/pulls", 200, [pull(7, "open")])  # its check refuses the pushed commit
    github.answer(f"GET /repos/{REPO}/pulls/7", 200, pull(7, "open") | {"mergeable": True})

    assert f"{BRANCH}: rejected, not run" in cli("pipeline", "sweep").output  # said once
    again = " ".join(cli("pipeline", "sweep", "--dry-run").output.split())
    way_out = f"git push --force-with-lease={BRANCH}:{second} origin {pointer}:refs/heads/{BRANCH}"
    assert (
        f"{BRANCH}: published, but held back — commit {second[:12]}, pushed onto its pointer commit" in again
    )
    assert again.count(way_out) == 1 and "rejected, not run" not in again
    rec = record(repo, first)
    assert rec is not None and rec["status"] == "published", rec

    done = repo.git(*way_out.split()[1:], check=False)  # as a person runs it, in a clone
    assert done.returncode == 0, done.stderr
    assert repo.remote_branches()[BRANCH] == pointer
    quiet = " ".join(cli("pipeline", "sweep").output.split())
    assert BRANCH not in quiet and "every data branch has a finished run" in quiet
