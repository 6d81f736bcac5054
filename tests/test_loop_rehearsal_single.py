"""One pushed batch through the production loop in the `single` layout (repository variable
`WMS_LAYOUT=single`), the workflows' own steps run as GitHub would run them for it, with the
runner of tests/workflow_runner.py and the helpers of the `split` rehearsal
(tests/test_loop_rehearsal.py, which says what each stand-in is).

In `single` every job that needs the instance runs on its own runner (`wms-gpu`): the pipeline
starts it first, trains there (`compute.train_on = "here"`, MLflow on the instance) and stops it
at the end. Rehearsed, for a batch whose promotion merges at once (the repository does not allow
auto-merge, so `git.merge_fallback` merges the pull request, here as GitHub would: the branch
squashed onto main):

1. a labeller's push and data-push.yaml's validate job, as in the split rehearsal;
2. training-data-pipeline.yaml's start-compute: ec2-control.yaml's start against moto's EC2,
   which leases the instance to the run and hands its id on;
3. the train job "on the instance" (this machine; the instance's MLflow is a real `mlflow server`
   on loopback, as on the instance): the guard, take-incoming, `wms pipeline run` with the start
   job's instance id, and the single-only `wms model prune --once-a-day`;
4. hold-compute (ec2-control.yaml's renew) and the deploy job (deploy-model.yaml with
   `reconcile: true` and the start job's instance id) with fake docker and helm and a fake
   Kubernetes API whose Service answers from the promoted version;
5. stop-compute (ec2-control.yaml's stop with the run's holder; GitHub's view of the runner's
   queue is a fake API that lists this run's own jobs only).

Between the jobs the reaper (compute-reaper.yaml) runs, as it does every 15 minutes: it must
leave the instance running, since the run holds a live lease on it from the start job to the
stop job. Every job's `if:` is evaluated with the values GitHub would have.

The instance runner's pre- and post-job scripts are done by their equivalent here: a job on it
that ends with its run's lease as it found it (its `wms` never renewed it) has that lease dropped.

A second test rehearses a batch that fails its check: Data push's validate and comment jobs, the
pipeline's conditions, and the sweeper's look, which records it rejected so that no instance
starts (see its docstring).

Not rehearsed, besides what the split rehearsal leaves out: the instance's lease guard,
release-deploy.yaml's run for the same merge (it starts, renews and stops the instance too in
`single`, with its own lease), the sweeper's look after a promotion, and waits in GitHub's
queue for the instance's one runner.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from tests.conftest import TINY_SETTINGS, Ec2Box, LiveServer
from tests.deploy.conftest import FakeCluster, write_kubeconfig
from tests.git_http import serve_git
from tests.remote.test_remote_training import descendants
from tests.test_loop_rehearsal import (
    BRANCH,
    JOB_TOKEN,
    LABELLER,
    PAT,
    RUN_ID,
    assert_promoted_deployed_and_stopped,
    data_push_passed,
    github_merges,
    labeller_pushes_a_batch,
    pushed,
    seeded_repository,
    strays,
)
from tests.test_workflows import load
from tests.vcs.test_github import NOT_ALLOWED, PR, REPO, FakeGitHub, github
from tests.workflow_runner import Runner, inputs_of, value_of

from wms.compute.leases import HOLDER_TAG_PREFIX, leases_of, live_holders, utc_now
from wms.config import ServeSettings, load_settings
from wms.deploy.base import stage_model
from wms.registry import MlflowRegistry
from wms.serve.app import create_app

__all__ = ["github"]  # a fixture defined elsewhere, used here

pytestmark = pytest.mark.slow

HOLDER = f"gh-run-{RUN_ID}"


def the_reaper_leaves_it_running(runner: Runner, repository: dict[str, Any], box: Ec2Box, after: str) -> None:
    """compute-reaper.yaml's round, as GitHub runs it every 15 minutes: the run's live lease keeps
    the instance running."""
    runner.run_job("compute-reaper.yaml", "reap", repository | {"github.event_name": "schedule"})
    assert box.state() == "running", f"the reaper stopped the instance after {after}: {box.tags()}"
    assert HOLDER in live_holders(box.describe(), utc_now()), f"no live lease of the run after {after}"


def on_the_instance(box: Ec2Box, job: Callable[[], dict[str, str]]) -> dict[str, str]:
    """A job on the instance's runner, with what its pre- and post-job scripts do to the run's lease
    (infrastructure/scripts/runner-job-lease.sh): a lease nobody renewed while the job ran (its
    `wms` never got to run) is dropped as the job ends."""
    key = HOLDER_TAG_PREFIX + HOLDER
    began = box.tags().get(key)
    outputs = job()
    if began is not None and box.tags().get(key) == began:
        box.client.delete_tags(Resources=[box.id], Tags=[{"Key": key}])
    return outputs


def minutes_left(box: Ec2Box, holder: str) -> float:
    expiry = leases_of(box.describe())[holder]
    assert expiry is not None
    return (expiry - utc_now()).total_seconds() / 60


def test_single_a_batch_merged_at_once_is_trained_and_deployed_on_the_instance_then_stopped(
    tmp_path: Any,
    aws_env: str,
    s3_bucket: str,
    ec2_box: Ec2Box,
    mlflow_server: str,
    github: FakeGitHub,
) -> None:
    before = descendants(os.getpid())  # the fixtures' servers (mlflow) already run
    name = f"single-{uuid.uuid4().hex[:8]}"  # the session's MLflow server is shared
    # The repository's own settings: tiny training, this test's MLflow names, the instance's tag.
    settings = TINY_SETTINGS + (
        f'\n[tracking]\nexperiment = "{name}"\nmodel_name = "{name}"\n'
        f'\n[compute]\ninstance_tag = "{ec2_box.tag}"\npoll_seconds = 0.05\n'
    )
    world = seeded_repository(tmp_path, settings)

    with serve_git(world.served, {JOB_TOKEN: "github-actions", PAT: "wms-bot", LABELLER: "labeller"}) as url:
        runner = Runner(
            f"{url}/meters.git", JOB_TOKEN, RUN_ID, REPO, world.env, world.aws, tmp_path / "runner"
        )
        runner.tmp.mkdir()
        sha = labeller_pushes_a_batch(runner.url, tmp_path / "labeller", world.env)
        repository = {
            "github.token": JOB_TOKEN,
            "github.repository": REPO,
            "github.run_id": RUN_ID,
            "github.event.repository.default_branch": "main",
            "vars.WMS_LAYOUT": "single",
            "vars.WMS_STORE_URL": f"s3://{s3_bucket}/store",
            # MLflow on the instance, at its loopback as the jobs there reach it
            "vars.WMS_TRACKING_URI": mlflow_server,
            "secrets.WMS_GITHUB_TOKEN": PAT,
        }
        # git.api_url: the fake GitHub API (the pull request, the merge, the runner's queue).
        to_github = {"WMS_GIT__API_URL": github.url}

        # 1. Data push, for the push of the branch.
        push = repository | pushed(sha)
        runner.run_job("data-push.yaml", "validate", push)

        # 2. The training pipeline, started by that run's success: first the instance.
        event = repository | data_push_passed(sha)
        pipeline = load("training-data-pipeline.yaml")["jobs"]
        start = pipeline["start-compute"]
        assert value_of(start["if"], event)  # single: the workflow starts the GPU
        started = runner.run_job(
            "ec2-control.yaml", "ec2", event | inputs_of("ec2-control.yaml", start["with"], event)
        )
        assert started["instance_id"] == ec2_box.id, started
        assert ec2_box.state() == "running"
        assert minutes_left(ec2_box, HOLDER) > 400  # the start's lease covers a wait for the runner
        event |= {f"needs.start-compute.outputs.{k}": v for k, v in started.items()}
        event |= {"needs.start-compute.result": "success"}
        the_reaper_leaves_it_running(runner, repository, ec2_box, "the start job")

        # 3. The train job on the instance's runner. The repository allows no auto-merge:
        # git.merge_fallback merges the pull request at once, which GitHub does on main.
        github.answer(f"GET /repos/{REPO}/pulls", 200, [])
        github.answer(f"POST /repos/{REPO}/pulls", 201, PR)
        github.answer(f"POST /repos/{REPO}/issues/{PR['number']}/labels", 200, [])
        github.answer("POST /graphql", 200, NOT_ALLOWED)
        github.answer(f"DELETE /repos/{REPO}/git/refs/heads/{BRANCH}", 204, None)
        statuses = f"POST /repos/{REPO}/statuses/{sha}"  # "WMS training" on the batch's commit
        github.answer(statuses, 201, {})
        merges: list[str] = []

        def merge(body: dict[str, Any] | None) -> tuple[int, Any, dict[str, str]]:
            [opened] = github.calls(f"POST /repos/{REPO}/pulls")
            merges.append(github_merges(runner.url, tmp_path / "github", world.env, opened.body["title"]))
            return 200, {"sha": merges[-1], "merged": True}, {}

        github.routes[f"PUT /repos/{REPO}/pulls/{PR['number']}/merge"] = merge
        # The gpu recipe stays, but trains as the tiny settings do, on the CPU (this machine has no
        # GPU): keys set in the environment win over a recipe's.
        tiny = {"device": "cpu", "image_size": 32, "base_channels": 8, "depth": 2, "batch_size": 8}
        here = {
            f"WMS_TRAIN__{k.upper()}": str(v) for k, v in (tiny | {"epochs": 10, "max_minutes": 0}).items()
        }
        train = on_the_instance(
            ec2_box, lambda: runner.run_job("training-data-pipeline.yaml", "train", event, here | to_github)
        )
        assert train["promoted"] == "true" and train["on_main"] == "true", train  # merged at once
        version = train["model_version"]
        assert len(merges) == 1
        assert any(f"promoted version {version}:" in s for s in runner.summaries)
        assert any("### Model files pruned" in s for s in runner.summaries)  # single's daily prune ran
        assert HOLDER + "-pipeline" not in live_holders(ec2_box.describe(), utc_now())  # released
        event |= {f"needs.train.outputs.{k}": v for k, v in train.items()} | {"needs.train.result": "success"}
        the_reaper_leaves_it_running(runner, repository, ec2_box, "the train job")

        # 4. Hold the instance for the deploy, then deploy what main now names, on the instance.
        hold = pipeline["hold-compute"]
        assert value_of(hold["if"], event)
        runner.run_job("ec2-control.yaml", "ec2", event | inputs_of("ec2-control.yaml", hold["with"], event))
        assert minutes_left(ec2_box, HOLDER) > 400
        event |= {"needs.hold-compute.result": "success"}
        the_reaper_leaves_it_running(runner, repository, ec2_box, "the hold job")
        deploy = pipeline["deploy"]
        assert value_of(deploy["if"], event)
        called = event | inputs_of("deploy-model.yaml", deploy["with"], event)
        assert called["inputs.instance_id"] == ec2_box.id and called["inputs.reconcile"] is True
        # The pod the chart starts serves the version it names: here, served in this process.
        project = load_settings(
            start=runner.tmp / "training-data-pipeline.yaml-train",
            overrides={"tracking": {"uri": mlflow_server}},
        )
        pod = stage_model(MlflowRegistry(project), version, tmp_path / "pod")
        with (
            LiveServer(create_app(pod, ServeSettings())) as upstream,
            FakeCluster(world.calls, world.state, upstream.url) as cluster,
        ):
            write_kubeconfig(
                world.home / ".kube" / "config", cluster.url
            )  # the runner's (~runner/.kube/config)
            on_the_instance(ec2_box, lambda: runner.run_job("deploy-model.yaml", "deploy", called))
        # The deploy left its run one whole lease for the stop job, cut from the hold's hours.
        assert 30 < minutes_left(ec2_box, HOLDER) <= 61
        event |= {"needs.deploy.result": "success"}
        the_reaper_leaves_it_running(runner, repository, ec2_box, "the deploy job")

        # 5. Stop compute, always, with the run's holder. GitHub's queue for the runner: only
        # this run's own jobs (its stop job on a GitHub-hosted runner).
        github.answer(f"GET /repos/{REPO}/actions/runs", 200, {"workflow_runs": [{"id": int(RUN_ID)}]})
        own_jobs = [
            {"name": "Merge, train, gate, promote", "status": "completed", "labels": ["wms-gpu"]},
            {
                "name": "Stop compute / stop the GPU instance",
                "status": "in_progress",
                "labels": ["ubuntu-latest"],
            },
        ]
        github.answer(f"GET /repos/{REPO}/actions/runs/{RUN_ID}/jobs", 200, {"jobs": own_jobs})
        stop = pipeline["stop-compute"]
        assert value_of(stop["if"], event)
        stopped = runner.run_job(
            "ec2-control.yaml", "ec2", event | inputs_of("ec2-control.yaml", stop["with"], event), to_github
        )
        assert stopped["instance_id"] == ec2_box.id
        assert github.calls(f"GET /repos/{REPO}/actions/runs")  # the stop asked who waits for wms-gpu
        # The labeller's commit: pending while the run had the batch, then its outcome.
        shown = [(c.body["state"], c.body["description"]) for c in github.calls(statuses)]
        assert [state for state, _ in shown] == ["pending", "success"], shown
        assert shown[1][1].startswith(f"promoted version {version}")

    # What an operator would look at.
    assert_promoted_deployed_and_stopped(world, s3_bucket, sha, mlflow_server, name, version, ec2_box, before)


def test_single_a_batch_that_fails_its_check_is_recorded_rejected_and_starts_no_gpu(
    tmp_path: Any, aws_env: str, s3_bucket: str, ec2_box: Ec2Box, github: FakeGitHub
) -> None:
    """A batch with a grey mask: Data push's validate job fails and its comment job says why on
    the commit and marks it rejected; the pipeline does not start, and the sweeper's next look
    (pipeline-sweeper.yaml's find job) records the batch rejected from that status and finds
    nothing to run, so its start job, the one that boots the GPU instance in `single`, is skipped.
    Before, the look counted the batch as never run, and the sweep booted the instance for a run
    that could only reject it."""
    before = descendants(os.getpid())
    settings = TINY_SETTINGS + f'\n[compute]\ninstance_tag = "{ec2_box.tag}"\n'
    world = seeded_repository(tmp_path, settings)

    with serve_git(world.served, {JOB_TOKEN: "github-actions", LABELLER: "labeller"}) as url:
        runner = Runner(
            f"{url}/meters.git", JOB_TOKEN, RUN_ID, REPO, world.env, world.aws, tmp_path / "runner"
        )
        runner.tmp.mkdir()
        sha = labeller_pushes_a_batch(runner.url, tmp_path / "labeller", world.env, grey_mask=True)
        repository = {
            "github.token": JOB_TOKEN,
            "github.repository": REPO,
            "github.event.repository.default_branch": "main",
            "vars.WMS_LAYOUT": "single",
            "vars.WMS_STORE_URL": f"s3://{s3_bucket}/store",
        }
        to_github = {"WMS_GIT__API_URL": github.url}
        # GitHub keeps the commit's statuses: the look reads what the comment job set.
        posted: list[dict[str, Any]] = []

        def post_status(body: dict[str, Any] | None) -> tuple[int, Any, dict[str, str]]:
            posted.append(dict(body or {}))
            return 201, {}, {}

        github.routes[f"POST /repos/{REPO}/statuses/{sha}"] = post_status
        github.routes[f"GET /repos/{REPO}/commits/{sha}/status"] = lambda _: (
            200,
            {"statuses": posted[-1:]},
            {},
        )
        github.answer(f"POST /repos/{REPO}/commits/{sha}/comments", 201, {"html_url": "https://x/c#1"})

        # 1. Data push: the validate job fails at its validation, and hands the report on.
        push = repository | pushed(sha)
        checked = runner.run_job("data-push.yaml", "validate", push, may_fail=True)
        assert runner.failed == ["data-push.yaml validate: Validate the new pairs"], runner.failed
        assert "non_binary_mask" in checked["report"]
        failed = {"needs.validate.result": "failure", "needs.validate.outputs.report": checked["report"]}
        runner.run_job("data-push.yaml", "comment", push | failed, to_github)
        [comment] = github.calls(f"POST /repos/{REPO}/commits/{sha}/comments")
        assert "non_binary_mask" in comment.body["body"]
        assert [(p["state"], p["context"]) for p in posted] == [("failure", "WMS training")]
        assert posted[0]["description"].startswith("rejected: the new pairs did not pass validation")

        # 2. The training pipeline: Data push failed, so neither the instance nor the training starts.
        event = repository | data_push_passed(sha) | {"github.event.workflow_run.conclusion": "failure"}
        pipeline = load("training-data-pipeline.yaml")["jobs"]
        assert not value_of(pipeline["start-compute"]["if"], event)
        assert not value_of(pipeline["train"]["if"], event | {"needs.start-compute.result": "skipped"})

        # 3. The sweeper's look, half an hour later: nothing to run, so no instance is started.
        sweeper = load("pipeline-sweeper.yaml")["jobs"]
        scheduled = repository | {"github.event_name": "schedule", "github.event.schedule": "7,37 * * * *"}
        found = runner.run_job("pipeline-sweeper.yaml", "find", scheduled, to_github)
        assert found["pending"] == "0", found
        after_look = scheduled | {
            "needs.find.result": "success",
            "needs.find.outputs.pending": found["pending"],
        }
        assert not value_of(sweeper["start-compute"]["if"], after_look)
        assert not value_of(sweeper["sweep"]["if"], after_look | {"needs.start-compute.result": "skipped"})

    record = boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"store/batches/{sha}.json")
    batch = json.loads(record["Body"].read())
    assert batch["status"] == "rejected" and "did not pass validation in Data push" in batch["summary"]
    assert any(f"{BRANCH}: rejected, not run" in s for s in runner.summaries)
    assert {p["state"] for p in posted} == {"failure"}  # the look said the same once it recorded it
    assert ec2_box.state() == "stopped" and not ec2_box.tags().get(HOLDER_TAG_PREFIX + HOLDER)
    assert not strays(before)
