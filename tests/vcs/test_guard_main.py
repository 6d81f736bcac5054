"""New pairs reach main only through a data branch: a pull request from any other branch, or a push
to main past the hook, that adds files under data/incoming/ is refused (`wms vcs guard-main`, the
check "New pairs come through a data branch" in ci.yaml), with the way to send them again."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from tests.test_workflows import load
from tests.workflow_runner import value_of

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo


def branch_with(repo: Repo, name: str, *, pairs: tuple[str, ...] = (), code: bool = False) -> str:
    repo.git("switch", "-q", "-c", name, "main")
    repo.add_pairs(*pairs)
    if code:
        repo.write("src/app.py", "print('a fix')\n")
    sha = repo.commit("a change for main")
    repo.push("-q", "origin", name)
    repo.git("switch", "-q", "main")
    return sha


def test_a_pull_request_from_another_branch_that_adds_pairs_is_refused_with_the_way_back(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    sha = branch_with(repo, "add-meters", pairs=("m001", "m002"), code=True)

    refused = cli("vcs", "guard-main", "--sha", sha)

    assert refused.exit_code == 1 and "Traceback" not in refused.output
    said = " ".join(refused.output.split())
    assert f"commit {sha[:12]} adds 4 file(s) under data/incoming/" in said
    assert "data/incoming/images/m001.png" in said and "and 1 more" in said
    assert "git rm -r --cached data/incoming/images data/incoming/masks" in said
    assert "wms hooks install" in said and "git push origin main" in said


@pytest.mark.parametrize("change", ["code only", "pairs removed"])
def test_code_and_the_removal_of_pairs_pass(repo: Repo, cli: Callable[..., Any], change: str) -> None:
    if change == "code only":
        sha = branch_with(repo, "fix", code=True)
    else:  # main held pairs someone pushed past the hook; this takes them off
        repo.add_pairs("m001")
        repo.commit("pairs pushed past the hook")
        repo.push("-q", "origin", "main")
        repo.git("switch", "-q", "-c", "take-off", "main")
        repo.git("rm", "-q", "-r", "data/incoming/images", "data/incoming/masks")
        sha = repo.commit("take the pairs off main")
        repo.push("-q", "origin", "take-off")
        repo.git("switch", "-q", "main")

    passed = cli("vcs", "guard-main", "--sha", sha)

    assert passed.exit_code == 0, passed.output
    assert "no new file under data/incoming/" in passed.output


def test_a_push_to_main_past_the_hook_is_judged_by_what_it_added(repo: Repo, cli: Callable[..., Any]) -> None:
    before = repo.out("rev-parse", "HEAD")
    repo.add_pairs("m001")
    pushed = repo.commit("pairs, pushed with --no-verify")
    repo.push("-q", "--no-verify", "origin", "main")

    assert cli("vcs", "guard-main", "--sha", pushed, "--base", before).exit_code == 1
    repo.write("src/app.py", "print('a later fix')\n")
    later = repo.commit("a later fix")
    repo.push("-q", "--no-verify", "origin", "main")
    assert cli("vcs", "guard-main", "--sha", later, "--base", pushed).exit_code == 0  # only what it added


def test_ci_runs_the_check_on_pull_requests_but_data_branches_and_on_pushes_to_main() -> None:
    job = load("ci.yaml")["jobs"]["pairs-through-data-branches"]
    pull = {"github.event_name": "pull_request"}
    assert value_of(job["if"], pull | {"github.head_ref": "add-meters"})
    assert not value_of(job["if"], pull | {"github.head_ref": "data/20261206-120000"})  # its own check
    push = {"github.event_name": "push", "github.ref": "refs/heads/main", "github.event.before": "a" * 40}
    assert value_of(job["if"], push)
    assert not value_of(job["if"], push | {"github.ref": "refs/heads/develop"})
    assert not value_of(job["if"], push | {"github.event.before": "0" * 40})  # main's first push
    (step,) = [s for s in job["steps"] if "run" in s]
    assert step["run"].startswith('wms vcs guard-main --sha "$HEAD_SHA"')
    assert step["env"]["HEAD_SHA"] == "${{ github.event.pull_request.head.sha || github.sha }}"
    (checkout,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"]["ref"] == "${{ github.event.repository.default_branch }}"  # main's code
