"""`wms pipeline sweep` settles `published` batches whose data branch is gone, asking the git host.

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


def test_a_published_batch_whose_branch_was_deleted_by_hand_is_settled_from_its_pull_request(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_github(repo, github, monkeypatch)
    closed = publish_branch(repo, "data/20260102-030405", "r-1", stem="m001")
    merged = publish_branch(repo, "data/20260102-030406", "r-2", stem="m002")
    lost = publish_branch(repo, "data/20260102-030407", "r-3", stem="m003")
    # A person closed the first pull request, then deleted all three branches by hand.
    gone = (":data/20260102-030405", ":data/20260102-030406", ":data/20260102-030407")
    repo.git("push", "-q", "origin", *gone)
    route = f"GET /repos/{REPO}/pulls"  # asked in branch order
    merged_pr = pull(8, "closed", merged_at="2026-01-03T00:00:00Z")
    github.answer_in_turn(route, (200, [pull(7, "closed")], {}), (200, [merged_pr], {}), (200, [], {}))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    swept = cli("pipeline", "sweep")
    assert swept.exit_code == 0, swept.output
    said = " ".join(swept.output.split())
    rec = record(repo, closed)
    assert rec is not None and rec["status"] == "closed", rec
    assert rec["closed"] == f"https://github.com/{REPO}/pull/7"
    line = (
        f"data/20260102-030405: closed, not merged, and the branch is gone — its pull request "
        f"https://github.com/{REPO}/pull/7 was closed, so main has nothing of this batch; to train its "
        f"pairs, push them again in a new commit (commit {closed[:12]} holds them"
    )
    assert line in said
    assert line in " ".join(summary.read_text().split())  # on the workflow run's page
    rec = record(repo, merged)
    assert rec is not None and rec["status"] == "promoted", rec
    assert rec["summary"] == f"promoted version 2; its pull request {merged_pr['html_url']} was merged"
    rec = record(repo, lost)
    assert rec is not None and rec["status"] == "published", rec
    assert (
        "1 batch(es) recorded published have no data branch any more, and the git host knows no merged or "
        f"closed pull request of theirs: data/20260102-030407 ({lost[:12]}: no pull request); they stay "
        "published"
    ) in said
    asked = [call.path for call in github.calls(route)]
    assert len(asked) == 3 and "head=acme%3Adata%2F20260102-030405" in asked[0]

    # Settled ones are not asked again, nor listed: no branch is left for a person to act on.
    again = cli("pipeline", "sweep", "--dry-run")
    assert "data/20260102-030405" not in again.output and "data/20260102-030406" not in again.output
    assert "data/20260102-030407" in again.output
    assert len(github.calls(route)) == 4  # only the one GitHub knows nothing of, once more
