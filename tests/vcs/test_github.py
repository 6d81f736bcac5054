"""The GitHub host against a fake GitHub API on loopback that records every request."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wms.config import load_settings
from wms.errors import BackendError, ConfigError
from wms.vcs import GitHubClient, GitHubHost, make_git_host, make_github_host
from wms.vcs.publish import publish_promotion

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

REPO = "acme/meters"
PR = {
    "number": 7,
    "node_id": "PR_kwDOabc",
    "html_url": "https://github.com/acme/meters/pull/7",
    "head": {"sha": "f" * 40},
}
NOT_ALLOWED = {
    "errors": [
        {"type": "UNPROCESSABLE", "message": "Pull request Auto merge is not allowed for this repository"}
    ]
}
EXPIRY = "GitHub-Authentication-Token-Expiration"  # GitHub's answers to a token that expires
Reply = tuple[int, Any, dict[str, str]]  # status, JSON body, extra headers
Handler = Callable[[dict[str, Any] | None], Reply]


@dataclass
class Request:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeGitHub:
    """Routes `METHOD /path` (query string stripped) to canned answers; records what came in."""

    url: str = ""
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def answer(self, route: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.routes[route] = lambda _body: (status, body, headers or {})

    def answer_in_turn(self, route: str, *replies: Reply) -> None:
        """One reply per request, in order; the last one repeats."""
        queue = list(replies)
        self.routes[route] = lambda _body: queue.pop(0) if len(queue) > 1 else queue[0]

    def calls(self, route: str) -> list[Request]:
        method, path = route.split(" ", 1)
        return [r for r in self.requests if r.method == method and r.path.split("?")[0] == path]


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()

    class Handle(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append(Request(self.command, self.path, body, dict(self.headers)))
            handler = fake.routes.get(f"{self.command} {self.path.split('?')[0]}")
            status, answer, headers = handler(body) if handler else (404, {"message": "Not Found"}, {})
            raw = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def host(github: FakeGitHub, **options: Any) -> GitHubHost:
    return GitHubHost(GitHubClient(github.url, "t0ken"), REPO, labels=["data", "model-promotion"], **options)


def new_pr_routes(github: FakeGitHub) -> None:
    github.answer(f"GET /repos/{REPO}/pulls", 200, [])
    github.answer(f"POST /repos/{REPO}/pulls", 201, PR)
    github.answer(f"POST /repos/{REPO}/issues/7/labels", 200, [{"name": "data"}])


def test_a_new_pull_request_is_labelled_and_set_to_auto_merge_with_squash(github: FakeGitHub) -> None:
    new_pr_routes(github)
    github.answer(
        "POST /graphql", 200, {"data": {"enablePullRequestAutoMerge": {"pullRequest": {"number": 7}}}}
    )

    outcome = host(github).publish("data/20260102-030405", "a title", "## Quality gate\n| dice |")

    assert outcome.line.startswith(PR["html_url"]) and "auto-merge (squash)" in outcome.line
    assert not outcome.merged  # it merges later: the pipeline must not deploy it now
    [query] = github.calls(f"GET /repos/{REPO}/pulls")
    assert "head=acme%3Adata%2F20260102-030405" in query.path and "state=open" in query.path
    [created] = github.calls(f"POST /repos/{REPO}/pulls")
    assert created.body == {
        "title": "a title",
        "head": "data/20260102-030405",
        "base": "main",
        "body": "## Quality gate\n| dice |",
    }
    assert created.headers["Authorization"] == "Bearer t0ken"
    [labels] = github.calls(f"POST /repos/{REPO}/issues/7/labels")
    assert labels.body == {"labels": ["data", "model-promotion"]}
    [mutation] = github.calls("POST /graphql")
    assert "enablePullRequestAutoMerge" in mutation.body["query"]
    assert mutation.body["variables"] == {"id": "PR_kwDOabc", "method": "SQUASH"}
    assert not github.calls(f"PUT /repos/{REPO}/pulls/7/merge")


def test_an_open_pull_request_for_the_branch_is_reused(github: FakeGitHub) -> None:
    github.answer(f"GET /repos/{REPO}/pulls", 200, [PR])
    github.answer(f"PATCH /repos/{REPO}/pulls/7", 200, PR)
    github.answer(f"POST /repos/{REPO}/issues/7/labels", 200, [])
    github.answer("POST /graphql", 200, {"data": {}})

    host(github).publish("data/20260102-030405", "new title", "new report")

    assert not github.calls(f"POST /repos/{REPO}/pulls")
    [patched] = github.calls(f"PATCH /repos/{REPO}/pulls/7")
    assert patched.body == {"title": "new title", "body": "new report"}


def test_without_auto_merge_in_the_repository_it_merges_at_once(github: FakeGitHub) -> None:
    new_pr_routes(github)
    github.answer("POST /graphql", 200, NOT_ALLOWED)
    github.answer(f"PUT /repos/{REPO}/pulls/7/merge", 200, {"sha": "abc1234def", "merged": True})
    github.answer(f"DELETE /repos/{REPO}/git/refs/heads/data/20260102-030405", 204, None)

    outcome = host(github).publish("data/20260102-030405", "a title", "body")

    assert "merged into main (abc1234)" in outcome.line and outcome.merged
    [merge] = github.calls(f"PUT /repos/{REPO}/pulls/7/merge")
    assert merge.body["merge_method"] == "squash"
    assert merge.body["sha"] == PR["head"]["sha"]
    assert github.calls(f"DELETE /repos/{REPO}/git/refs/heads/data/20260102-030405")


def test_fallback_off_leaves_the_pull_request_open(github: FakeGitHub) -> None:
    new_pr_routes(github)
    github.answer("POST /graphql", 200, NOT_ALLOWED)

    outcome = host(github, merge_fallback=False).publish("data/x", "t", "b")

    assert "open for review" in outcome.line and "Allow auto-merge" in outcome.line
    assert not outcome.merged
    assert not github.calls(f"PUT /repos/{REPO}/pulls/7/merge")


def test_a_merge_github_refuses_leaves_the_pull_request_open(github: FakeGitHub) -> None:
    new_pr_routes(github)
    github.answer("POST /graphql", 200, NOT_ALLOWED)
    github.answer(f"PUT /repos/{REPO}/pulls/7/merge", 405, {"message": "Pull Request is not mergeable"})
    github.answer(f"POST /repos/{REPO}/issues/7/comments", 201, {"html_url": PR["html_url"] + "#c1"})

    outcome = host(github).publish("data/x", "t", "b")

    assert "open for review" in outcome.line and "not mergeable" in outcome.line
    assert not outcome.merged
    [comment] = github.calls(f"POST /repos/{REPO}/issues/7/comments")
    assert (
        "could not merge" in comment.body["body"] and "Pull Request is not mergeable" in comment.body["body"]
    )
    assert "production_current.json" in comment.body["body"]


def test_other_graphql_errors_are_reported(github: FakeGitHub) -> None:
    new_pr_routes(github)
    github.answer("POST /graphql", 200, {"errors": [{"message": "Resource not accessible by integration"}]})

    with pytest.raises(BackendError, match="Resource not accessible by integration"):
        host(github).publish("data/x", "t", "b")


def test_a_bad_token_names_the_variable_to_set(github: FakeGitHub) -> None:
    github.answer(f"GET /repos/{REPO}/pulls", 401, {"message": "Bad credentials"})

    with pytest.raises(BackendError) as refused:
        host(github).publish("data/x", "t", "b")
    said = str(refused.value)
    assert "\n" not in said
    assert said.startswith(
        "GitHub refused the token WMS_GITHUB_TOKEN (GET /repos/acme/meters/pulls: Bad cred"
    )
    assert "it expired, was revoked or is wrong; make a new one and put it in WMS_GITHUB_TOKEN" in said


def test_a_token_that_expires_within_two_weeks_is_a_warning_on_the_job_and_its_summary(
    github: FakeGitHub, project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    runners = {"total_count": 0, "runners": []}
    project = load_settings(overrides={"git": {"host": "github", "api_url": github.url, "repository": REPO}})
    env = {"WMS_GITHUB_TOKEN": "pat", "GITHUB_TOKEN": "t", "GITHUB_ACTIONS": "true"}

    later = (datetime.now(UTC) + timedelta(days=60)).strftime("%Y-%m-%d %H:%M:%S UTC")
    github.answer(f"GET /repos/{REPO}/actions/runners", 200, runners, {EXPIRY: later})
    make_github_host(project, env=env).list_runners()
    assert "::warning" not in capsys.readouterr().err and not summary.exists()

    soon = datetime.now(UTC) + timedelta(days=10, hours=1)
    github.answer(
        f"GET /repos/{REPO}/actions/runners", 200, runners, {EXPIRY: f"{soon:%Y-%m-%d %H:%M:%S} UTC"}
    )
    host = make_github_host(project, env=env)
    host.list_runners()
    host.list_runners()
    said = f"the GitHub token WMS_GITHUB_TOKEN expires on {soon:%Y-%m-%d %H:%M} UTC (in 10 days)"
    err = capsys.readouterr().err
    assert err.count("::warning") == 1  # once per command, not per request
    assert f"::warning title=GitHub token expires soon::{said}" in err
    assert "put it in the secret WMS_GITHUB_TOKEN (environment wms-production" in err
    assert said in summary.read_text()
    assert len(github.calls(f"GET /repos/{REPO}/actions/runners")) == 3  # no request of its own


def test_validation_report_becomes_a_commit_comment(github: FakeGitHub) -> None:
    sha = "a" * 40
    github.answer(f"POST /repos/{REPO}/commits/{sha}/comments", 201, {"html_url": "https://c/1"})

    where = host(github).comment_on_commit(sha, "missing_mask: images/a.png")

    assert where == "https://c/1"
    [comment] = github.calls(f"POST /repos/{REPO}/commits/{sha}/comments")
    assert comment.body == {"body": "missing_mask: images/a.png"}


def test_runners_online_for_the_readiness_probe(github: FakeGitHub) -> None:
    github.answer(
        f"GET /repos/{REPO}/actions/runners",
        200,
        {
            "total_count": 2,
            "runners": [
                {"id": 1, "name": "gpu-1", "status": "online", "busy": True, "labels": [{"name": "wms-gpu"}]},
                {"id": 2, "name": "gpu-2", "status": "offline", "busy": False, "labels": []},
            ],
        },
    )
    h = host(github)

    assert h.is_online("gpu-1") is True
    assert h.is_online("gpu-2") is False
    assert h.is_online("nobody") is False
    assert h.list_runners()[0].labels == ["wms-gpu"]


def test_cli_lists_runners(
    github: FakeGitHub, project_dir: Any, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    github.answer(
        f"GET /repos/{REPO}/actions/runners",
        200,
        {"runners": [{"name": "gpu-1", "status": "online", "busy": False, "labels": [{"name": "wms-gpu"}]}]},
    )
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    result = cli(
        "--set", f"git.api_url={github.url}", "--set", f"git.repository={REPO}", "vcs", "runners", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"name": "gpu-1", "status": "online", "busy": False, "labels": ["wms-gpu"]}
    ]


def test_cli_keeps_a_scheduled_workflow_on(
    github: FakeGitHub, project_dir: Any, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GitHub turns off a public repository's schedules after 60 quiet days; enabling the
    workflow again through the API keeps its schedule (the reaper's, the sweeper's) running."""
    route = f"PUT /repos/{REPO}/actions/workflows/compute-reaper.yaml/enable"
    github.answer(route, 204, None)
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    where = ("--set", f"git.api_url={github.url}", "--set", f"git.repository={REPO}")

    result = cli(*where, "vcs", "keep-schedule", "compute-reaper.yaml")

    assert result.exit_code == 0, result.output
    assert len(github.calls(route)) == 1
    assert github.calls(route)[0].headers["Authorization"] == "Bearer t"

    github.answer(route, 403, {"message": "Resource not accessible by integration"})
    refused = cli(*where, "vcs", "keep-schedule", "compute-reaper.yaml")
    assert refused.exit_code != 0
    assert "Resource not accessible by integration" in refused.stderr and "Traceback" not in refused.output

    wrong = cli(*where, "vcs", "keep-schedule", "../compute-reaper")
    assert wrong.exit_code == 2 and "give e.g. compute-reaper.yaml" in wrong.stderr
    assert len(github.requests) == 2


def test_unreachable_api_is_one_clear_error() -> None:
    client = GitHubClient("http://127.0.0.1:9", "t", timeout=2)
    with pytest.raises(BackendError, match="could not reach"):
        GitHubHost(client, REPO).comment_on_commit("a" * 40, "x")


def test_a_passing_server_error_is_retried(github: FakeGitHub) -> None:
    sha = "a" * 40
    route = f"POST /repos/{REPO}/commits/{sha}/comments"
    github.answer_in_turn(
        route, (502, {"message": "Server Error"}, {}), (201, {"html_url": "https://c/1"}, {})
    )
    client = GitHubClient(github.url, "t0ken", backoff=0)

    assert GitHubHost(client, REPO).comment_on_commit(sha, "report") == "https://c/1"
    assert len(github.calls(route)) == 2


def test_a_lasting_server_error_is_one_line_after_the_retries(github: FakeGitHub) -> None:
    github.answer(f"GET /repos/{REPO}/actions/runners", 503, {"message": "Service Unavailable"})
    client = GitHubClient(github.url, "t0ken", retries=2, backoff=0)

    with pytest.raises(BackendError, match=r"GitHub answered 503 to GET .*: Service Unavailable") as caught:
        GitHubHost(client, REPO).list_runners()
    assert len(github.calls(f"GET /repos/{REPO}/actions/runners")) == 3
    assert "\n" not in str(caught.value) and "t0ken" not in str(caught.value)


def test_a_spent_rate_limit_is_reported_at_once_with_when_it_resets(github: FakeGitHub) -> None:
    reset = int(time.time()) + 30 * 60
    github.answer(
        f"GET /repos/{REPO}/pulls",
        403,
        {"message": "API rate limit exceeded for installation ID 1."},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )

    with pytest.raises(BackendError, match=r"rate limit is used up .*resets in about (29|30) min"):
        host(github).publish("data/x", "t", "b")
    assert len(github.calls(f"GET /repos/{REPO}/pulls")) == 1  # no half-hour wait inside the command


def test_a_rate_limit_that_resets_now_is_waited_for_once(github: FakeGitHub) -> None:
    spent = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()))}
    github.answer_in_turn(
        f"GET /repos/{REPO}/actions/runners",
        (403, {"message": "API rate limit exceeded for installation ID 1."}, spent),
        (200, {"total_count": 0, "runners": []}, {}),
    )

    assert host(github).list_runners() == []
    assert len(github.calls(f"GET /repos/{REPO}/actions/runners")) == 2


def test_a_refused_pull_request_carries_githubs_details(github: FakeGitHub) -> None:
    github.answer(f"GET /repos/{REPO}/pulls", 200, [])
    github.answer(
        f"POST /repos/{REPO}/pulls",
        422,
        {"message": "Validation Failed", "errors": [{"message": "No commits between main and data/x"}]},
    )

    with pytest.raises(BackendError, match=r"422 .*Validation Failed: No commits between main and data/x"):
        host(github).publish("data/x", "t", "b")


def test_on_enterprise_graphql_is_posted_to_api_graphql(github: FakeGitHub) -> None:
    github.answer(f"GET /api/v3/repos/{REPO}/pulls", 200, [])
    github.answer(f"POST /api/v3/repos/{REPO}/pulls", 201, PR)
    github.answer("POST /api/graphql", 200, {"data": {}})
    enterprise = GitHubHost(GitHubClient(f"{github.url}/api/v3", "t0ken"), REPO)

    assert "auto-merge" in enterprise.publish("data/x", "t", "b").line
    assert github.calls("POST /api/graphql")


def test_only_what_talks_to_github_loads_its_sdk() -> None:
    # githubkit and httpx take a good part of a second to import; the pre-push hook runs on every push.
    code = "import sys, wms.vcs, wms.vcs.hook, wms.vcs.publish; print('githubkit' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_factory_needs_a_token_and_a_repository(project_dir: Any) -> None:
    project = load_settings(overrides={"git": {"host": "github"}})
    with pytest.raises(ConfigError, match="WMS_GITHUB_TOKEN"):
        make_git_host(project, env={})
    with pytest.raises(ConfigError, match=r"git\.repository"):
        make_git_host(project, env={"GITHUB_TOKEN": "t"})
    chosen = make_git_host(project, env={"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": REPO})
    assert isinstance(chosen, GitHubHost) and chosen.repository == REPO
    preferred = make_git_host(
        project, env={"WMS_GITHUB_TOKEN": "app", "GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": REPO}
    )
    assert isinstance(preferred, GitHubHost) and preferred.client.token == "app"


def test_enterprise_graphql_sits_beside_the_rest_api() -> None:
    assert (
        GitHubClient("https://ghe.example.com/api/v3", "t").graphql_url
        == "https://ghe.example.com/api/graphql"
    )
    assert GitHubClient("https://api.github.com", "t").graphql_url == "https://api.github.com/graphql"


def test_publish_on_github_pushes_the_pointer_commit_and_opens_the_pr(
    repo: Repo, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_pr_routes(github)
    github.answer("POST /graphql", 200, {"data": {}})
    monkeypatch.setenv("WMS_GITHUB_TOKEN", "t0ken")
    branch = "data/20260102-030405"
    repo.git("switch", "-q", "-c", branch)
    repo.add_pairs("m001")
    repo.commit("a new pair")
    repo.write("data/dataset.json", '{"version": "v2"}\n')
    project = load_settings(overrides={"git": {"host": "github", "api_url": github.url, "repository": REPO}})

    outcome = publish_promotion(
        project, branch=None, gate_markdown="**promote**", dataset_summary="version v2"
    )

    assert PR["html_url"] in outcome.line
    remote_tip = repo.remote_branches()[branch]
    assert remote_tip == repo.out("rev-parse", "HEAD")
    files = repo.out("ls-tree", "-r", "--name-only", remote_tip).splitlines()
    assert "data/dataset.json" in files and "data/incoming/images/m001.png" not in files
    [created] = github.calls(f"POST /repos/{REPO}/pulls")
    assert "version v2" in created.body["body"] and "**promote**" in created.body["body"]


def test_compute_start_waits_for_the_runner_github_lists(
    github: FakeGitHub,
    ec2_box: Any,
    project_dir: Any,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    github.answer(
        f"GET /repos/{REPO}/actions/runners",
        200,
        {"runners": [{"name": "gpu-1", "status": "online", "busy": False, "labels": []}]},
    )
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    sets = {
        "compute.backend": "ec2",
        "compute.instance_tag": ec2_box.tag,
        "compute.ready_probe": "runner",
        "compute.runner_name": "gpu-1",
        "compute.poll_seconds": "0.1",
        "git.api_url": github.url,
        "git.repository": REPO,
    }
    flags = [part for key, value in sets.items() for part in ("--set", f"{key}={value}")]
    result = cli(*flags, "compute", "start", "--json")
    try:
        assert result.exit_code == 0, result.output
        assert github.calls(f"GET /repos/{REPO}/actions/runners")  # readiness was asked of GitHub
        assert ec2_box.state() == "running"
    finally:
        cli(*flags, "compute", "stop")
    assert ec2_box.state() == "stopped"


@pytest.mark.slow
def test_a_pull_request_that_cannot_merge_leaves_production_where_main_says(
    repo: Repo, github: FakeGitHub, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import TINY_SETTINGS

    from wms.data.synth import synthesize
    from wms.registry import MlflowRegistry

    new_pr_routes(github)
    github.answer("POST /graphql", 200, NOT_ALLOWED)
    github.answer(f"PUT /repos/{REPO}/pulls/7/merge", 405, {"message": "Pull Request is not mergeable"})
    github.answer(f"POST /repos/{REPO}/issues/7/comments", 201, {"html_url": PR["html_url"] + "#c1"})
    monkeypatch.setenv("WMS_GITHUB_TOKEN", "t0ken")
    repo.write(
        "wms.toml",
        TINY_SETTINGS + f'\n[git]\nhost = "github"\napi_url = "{github.url}"\nrepository = "{REPO}"\n',
    )
    repo.commit("settings")
    repo.git("push", "-q", "origin", "main")
    repo.git("switch", "-q", "-c", "data/20260102-030405")
    synthesize(repo.work / "data" / "incoming", count=40, size=64, seed=1)
    repo.commit("40 pairs")

    result = cli("pipeline", "run")

    assert result.exit_code == 0, result.output
    assert "GitHub would not merge it" in result.output and "production stays" in result.output
    [comment] = github.calls(f"POST /repos/{REPO}/issues/7/comments")
    assert "Nothing moved" in comment.body["body"]
    registry = MlflowRegistry(load_settings())
    assert registry.production() is None  # main names no model: the candidate waits for review
    assert [r.tags["gate"] for r in registry.list()] == ["pass"]
    assert repo.git("show", "origin/main:models/production_current.json", check=False).returncode != 0
    record = json.loads(next((repo.work / ".wms" / "runs").glob("*/run.json")).read_text())
    stages = {s["name"]: s for s in record["stages"]}
    assert (
        stages["reconcile"]["status"] == "skipped" and "pull request merges" in stages["reconcile"]["outcome"]
    )


def test_a_publish_that_failed_after_its_push_is_swept_and_published_again(
    repo: Repo, github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pointer commit reached the branch, then GitHub refused the pull request (an expired token)."""
    from tests.vcs.test_publish import _promotion

    from wms.batches import BatchLedger
    from wms.data.store import open_store
    from wms.sweep import pending

    github.answer(f"GET /repos/{REPO}/pulls", 200, [])
    github.answer_in_turn(
        f"POST /repos/{REPO}/pulls", (401, {"message": "Bad credentials"}, {}), (201, PR, {})
    )
    github.answer(f"POST /repos/{REPO}/issues/7/labels", 200, [])
    github.answer("POST /graphql", 200, {"data": {}})
    monkeypatch.setenv("WMS_GITHUB_TOKEN", "t0ken")
    repo.write("data/dataset.json", json.dumps({"version": "v1"}) + "\n")
    repo.write("models/production_history.jsonl", json.dumps({"to_version": "1"}) + "\n")
    repo.commit("main at v1")
    repo.git("push", "-q", "origin", "main")
    branch = "data/20260102-030405"
    repo.git("switch", "-q", "-c", branch)
    repo.add_pairs("m001")
    tip = repo.commit("a new pair")
    repo.git("push", "-q", "origin", branch)
    repo.git("switch", "-q", "main")
    repo.git("branch", "-q", "-D", branch)
    project = load_settings(overrides={"git": {"host": "github", "api_url": github.url, "repository": REPO}})
    files = _promotion(tmp_path / "promotion", {"version": "v2", "parent": "v1"}, ["1", "2"])
    publish = {
        "branch": branch,
        "sha": tip,
        "files": files,
        "gate_markdown": "**promote**",
        "dataset_summary": "v2",
    }

    with pytest.raises(BackendError, match="Bad credentials"):
        publish_promotion(project, **publish)
    stranded = repo.remote_branches()[branch]
    assert stranded != tip  # the pointer commit is on the branch, with no pull request

    # The run is recorded failed: the sweeper lists the batch (its own commit), not the pointer commit.
    store = open_store(project)
    ledger = BatchLedger(store.fs, store.root)
    ledger.start(branch, tip, "20260102-030500-abcdef")
    ledger.finish(tip, "failed", "failed at publish: GitHub answered 401")
    [todo] = pending(project, ledger)
    assert (todo.branch, todo.sha) == (branch, tip)
    assert "after pushing its pointer commit" in todo.why

    # Resumed, the publish goes on from the pushed commit (a fast-forward) and opens the pull request.
    assert PR["html_url"] in publish_promotion(project, **publish).line
    head = repo.remote_branches()[branch]
    assert head == stranded
    # A fresh run of the batch (the sweeper's: another promotion line) is published on top of it.
    again = _promotion(tmp_path / "again", {"version": "v2", "parent": "v1"}, ["1", "2b"])
    assert PR["html_url"] in publish_promotion(project, **{**publish, "files": again}).line
    head = repo.remote_branches()[branch]
    assert repo.git("merge-base", "--is-ancestor", stranded, head, check=False).returncode == 0
    assert repo.out("show", f"{head}:models/production_history.jsonl").splitlines() == [
        json.dumps({"to_version": v}) for v in ("1", "2b")
    ]
    assert "data/incoming/images/m001.png" not in repo.out("ls-tree", "-r", "--name-only", head)

    ledger.finish(tip, "published", "promoted version 2")
    assert pending(project, ledger) == []  # published: the pointer commit head is left alone
