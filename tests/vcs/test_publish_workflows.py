"""Publishing a promotion after main changed its workflows, against a remote that refuses, as GitHub
does, a push of workflow changes made with the job's GITHUB_TOKEN."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from tests.git_http import refuse_workflow_changes, serve_git
from tests.test_workflows import load
from tests.vcs.test_github import PR, REPO, FakeGitHub, github, new_pr_routes

from wms.config import load_settings
from wms.errors import BackendError
from wms.vcs.publish import publish_promotion

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

__all__ = ["github"]  # the fake GitHub API fixture, used here too

JOB_TOKEN, APP_TOKEN = "ghs_job", "ghs_app"
BRANCH = "data/20260102-030405"


@pytest.fixture
def served(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repo]:
    """A data branch cut before main took a change to .github/workflows/; origin over HTTP, where
    only the App's token (WMS_GITHUB_TOKEN) may push workflow changes; git authenticated as in
    the train job (its credential helper, the job's token in GITHUB_TOKEN)."""
    repo.git("switch", "-q", "-c", BRANCH)
    repo.add_pairs("m001")
    repo.commit("a new pair")
    repo.git("push", "-q", "origin", BRANCH)
    repo.git("switch", "-q", "main")
    repo.write(".github/workflows/ci.yaml", "name: CI\n")
    repo.commit("CI runs on pull requests")
    repo.git("push", "-q", "origin", "main")
    repo.git("switch", "-q", BRANCH)
    repo.write("data/dataset.json", '{"version": "v2"}\n')
    refuse_workflow_changes(repo.remote, allowed_user="wms-app")
    for key, value in load("training-data-pipeline.yaml")["jobs"]["train"]["env"].items():
        if key.startswith("GIT_CONFIG_"):
            monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("GITHUB_TOKEN", JOB_TOKEN)
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    with serve_git(repo.remote.parent, {JOB_TOKEN: "github-actions", APP_TOKEN: "wms-app"}) as url:
        repo.git("remote", "set-url", "origin", f"{url}/{repo.remote.name}")
        yield repo


def publish(github: FakeGitHub) -> str:
    project = load_settings(overrides={"git": {"host": "github", "api_url": github.url, "repository": REPO}})
    return publish_promotion(project, branch=None, gate_markdown="**promote**", dataset_summary="v2")


def test_main_changed_its_workflows_and_the_promotion_is_still_published(
    served: Repo, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_pr_routes(github)
    github.answer("POST /graphql", 200, {"data": {}})
    monkeypatch.setenv("WMS_GITHUB_TOKEN", APP_TOKEN)

    outcome = publish(github)

    assert PR["html_url"] in outcome.line
    tip = served.remote_branches()[BRANCH]
    assert tip == served.out("rev-parse", "HEAD")
    files = served.out("ls-tree", "-r", "--name-only", tip).splitlines()
    assert ".github/workflows/ci.yaml" in files and "data/dataset.json" in files


def test_without_a_token_that_may_push_workflows_the_refusal_says_what_to_give(
    served: Repo, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_pr_routes(github)
    monkeypatch.delenv("WMS_GITHUB_TOKEN", raising=False)

    with pytest.raises(BackendError) as refused:
        publish(github)

    message = str(refused.value)
    assert "\n" not in message
    assert "without `workflows` permission" in message and "WMS_GITHUB_TOKEN" in message
    assert "Workflows permission" in message
    assert served.remote_branches()[BRANCH] != served.out("rev-parse", "HEAD")
    assert not github.calls(f"POST /repos/{REPO}/pulls")  # no pull request for an unpushed branch
