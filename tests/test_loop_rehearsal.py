"""One pushed batch through the whole production loop, the workflows' own steps run as GitHub
would run them for it, in the default `split` layout.

Rehearsed, each `run:` step taken from the workflow file and run with bash (`bash -e`, as
GitHub's default shell), its job's and its own `env:` resolved from the event, the repository's
variables and secrets, and what earlier jobs handed on; `$GITHUB_OUTPUT` and
`$GITHUB_STEP_SUMMARY` are files read afterwards:

1. a labeller pushes a commit of synthetic pairs under data/incoming/ to data/<timestamp> on a
   bare repository served over HTTP that answers only a token (a private repository);
2. data-push.yaml's validate job, in a checkout of main (`BATCH_SHA` = the pushed commit);
3. training-data-pipeline.yaml's train job for the `workflow_run` event of that run: the guard,
   take-incoming and `wms pipeline run`, with the dataset store on moto's S3, the GPU instance
   on moto's EC2 (found by its tag) and a real sshd on loopback standing in for it (the
   training runs there, in its own process, over SSH), a real `mlflow server`, and a fake
   GitHub API for the pull request and its auto-merge;
4. GitHub's auto-merge of that pull request (done here as GitHub does it: the branch squashed
   onto main), then release-deploy.yaml's reconcile job and deploy-model.yaml's deploy job
   with fake docker and helm and a fake Kubernetes API whose Service answers from the promoted
   version, served in this process, the next hour's heal check (`wms deploy status`) and
   pipeline-sweeper.yaml's look, which records the merged batch promoted;
5. the pipeline's stop-compute job: ec2-control.yaml's step with the run's holder.

Not rehearsed: GitHub's scheduling (jobs run here in the order the `needs:` allow), the `uses:`
actions, done by their equivalents (actions/checkout: a clone of main with the job's token,
none left on disk; setup-wms: `wms` of this source tree on PATH; aws-credentials: moto's keys
in the environment of the steps after it), training on a GPU (the job keeps the `gpu` recipe, its
keys overridden by the tiny settings' on the CPU), the image build and the cluster itself.
Nor the other ways through: a merge at once (the pipeline's own deploy job), a batch the gate
turns down; the `single` layout, with a merge at once and a batch that fails its check, is
tests/test_loop_rehearsal_single.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from tests.conftest import TINY_SETTINGS, Ec2Box, LiveServer
from tests.deploy.conftest import FAKE_TOOL, FakeCluster, write_kubeconfig
from tests.git_http import serve_git
from tests.remote.conftest import Sshd, running_sshd, seeded_remote
from tests.remote.test_remote_training import descendants, job_processes, wait_until
from tests.test_workflow_credentials import _wms_on_path
from tests.test_workflows import ROOT, load, triggers
from tests.vcs.test_github import PR, REPO, FakeGitHub, github
from tests.workflow_runner import Runner, git, inputs_of, value_of

from wms.compute.leases import HOLDER_TAG_PREFIX
from wms.config import ServeSettings, load_settings
from wms.deploy.base import stage_model
from wms.registry import MlflowRegistry
from wms.serve.app import create_app

__all__ = ["github", "seeded_remote"]  # fixtures defined elsewhere, used here

pytestmark = pytest.mark.slow

JOB_TOKEN, PAT, LABELLER = "ghs_jobtoken0123456789", "github_pat_wmsbot0123", "labeller-token-0123"
RUN_ID = "4242"  # the pipeline's workflow run: its holder gh-run-4242 and its pipeline's lease
BRANCH = "data/20261206-120000"
# What aws_env points at moto: the keys the aws-credentials action (and the instance's role) give.
AWS_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
SYNTH = ("--count", "24", "--size", "64", "--seed", "3")  # a few pairs of 64 px, the tiny settings' size

# -- the repository --------------------------------------------------------------------------------


def seed_main(work: Path, settings: str) -> None:
    """Main as the project has it: its sources, chart and Dockerfile (the deploy builds from the
    checkout), data/incoming/ kept by its placeholder, and the repository's wms.toml."""
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy2(ROOT / name, work / name)
    for folder in ("src", "docker", "devops", "infrastructure"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "data" / "incoming").mkdir(parents=True)
    (work / "data" / "incoming" / ".gitkeep").write_text("")
    (work / ".gitignore").write_text(".wms/\n/incoming/\nvalidation.*\n")
    (work / "wms.toml").write_text(settings)


@dataclass
class Repository:
    """The served repository (main seeded with `settings`) and the runner's world around it."""

    served: Path  # the folder serve_git serves: meters.git
    bare: Path
    home: Path  # the runner user's (~/.kube/config, ~/.gitconfig)
    calls: Path  # what the fake docker, helm and Kubernetes API were asked
    state: Path  # the fake cluster's objects
    env: dict[str, str]  # the runner's environment: the fake tools first on PATH
    aws: dict[str, str]  # what the aws-credentials action would give (moto's keys)


def seeded_repository(tmp_path: Path, settings: str) -> Repository:
    """A bare repository whose main holds the project with `settings`, and the runner's world:
    fake docker and helm on PATH, a home for git and kubectl, no WMS_/AWS_/GIT_ of this process."""
    served = tmp_path / "served"
    bare = served / "meters.git"
    served.mkdir()
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    home, tools = tmp_path / "home", tmp_path / "tools"
    (home / ".kube").mkdir(parents=True)
    tools.mkdir()
    for tool in ("docker", "helm"):  # the runner's, recording what they were asked
        (tools / tool).write_text(FAKE_TOOL.format(python=sys.executable, name=tool))
        (tools / tool).chmod(0o755)
    (home / ".gitconfig").write_text("[user]\n  name = Lab Eller\n  email = labeller@example.com\n")
    calls, state = tmp_path / "calls.jsonl", tmp_path / "cluster"
    calls.touch()
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WMS_", "AWS_", "GIT_"))} | {
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
        "GIT_TERMINAL_PROMPT": "0",
        "PATH": f"{tools}:{os.environ['PATH']}",
        "WMS_FAKE_LOG": str(calls),
        "WMS_FAKE_STATE": str(state),
    }
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    seed_main(seed, settings)
    git(seed, "add", "-A", env=env)
    git(seed, "commit", "-q", "-m", "main", env=env)
    git(seed, "push", "-q", str(bare), "main", env=env)
    return Repository(served, bare, home, calls, state, env, {k: os.environ[k] for k in AWS_KEYS})


def pushed(sha: str) -> dict[str, Any]:
    """What GitHub knows of the labeller's push, for Data push's jobs."""
    return {
        "github.sha": sha,
        "github.ref": f"refs/heads/{BRANCH}",
        "github.event.deleted": False,
        "github.event.head_commit.message": "24 new pairs",
    }


def data_push_passed(sha: str) -> dict[str, Any]:
    """The workflow_run event of a Data push run that succeeded: what starts the training pipeline."""
    return {
        "github.event_name": "workflow_run",
        "github.event.workflow_run.head_sha": sha,
        "github.event.workflow_run.head_branch": BRANCH,
        "github.event.workflow_run.conclusion": "success",
        "github.event.workflow_run.event": "push",
        "github.event.workflow_run.head_repository.full_name": REPO,
    }


def clone_as(url: str, user: str, token: str, work: Path, env: dict[str, str]) -> None:
    """A clone of main by `user`, who authenticates with `token`."""
    git(
        work.parent,
        "clone",
        "-q",
        "-b",
        "main",
        url.replace("://", f"://{user}:{token}@"),
        str(work),
        env=env,
    )


def labeller_pushes_a_batch(url: str, work: Path, env: dict[str, str], grey_mask: bool = False) -> str:
    """Step 1: the labeller's commit of new pairs on a data branch, pushed with their token; with
    `grey_mask`, one mask is grey rather than black and white (the check refuses the batch)."""
    clone_as(url, "labeller", LABELLER, work, env)
    git(work, "switch", "-q", "-c", BRANCH, env=env)
    subprocess.run(
        [str(_wms_on_path(work.parent / "bin") / "wms"), "data", "synth", "data/incoming", *SYNTH],
        cwd=work,
        env=env | {"PYTHONPATH": str(ROOT / "src")},
        check=True,
        capture_output=True,
    )
    if grey_mask:
        from PIL import Image

        first = sorted((work / "data/incoming/masks").iterdir())[0]
        Image.new("L", Image.open(first).size, 128).save(first)
    git(work, "add", "data/incoming", env=env)
    git(work, "commit", "-q", "-m", "24 new pairs", env=env)
    git(work, "push", "-q", "origin", BRANCH, env=env)
    return git(work, "rev-parse", "HEAD")


def github_merges(url: str, folder: Path, env: dict[str, str], title: str) -> str:
    """GitHub's auto-merge once the checks passed: the pull request's branch squashed onto main."""
    clone_as(url, "github", PAT, folder, env)
    git(folder, "fetch", "-q", "origin", BRANCH, env=env)
    git(folder, "merge", "-q", "--squash", "FETCH_HEAD", env=env)
    git(folder, "commit", "-q", "-m", f"{title} (#{PR['number']})", env=env)
    git(folder, "push", "-q", "origin", "main", env=env)
    return git(folder, "rev-parse", "HEAD")


def strays(before: set[int]) -> dict[int, str]:
    """This process's descendants that were not there `before`, with their command lines, leaving
    out those a process already there started (a session's browser forks helpers of its own)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    parents = {int(c): int(p) for c, p in zip(out[::2], out[1::2], strict=True)}
    found, me = {}, os.getpid()
    for pid in descendants(me) - before:
        up = parents.get(pid)
        while up is not None and up != me and up not in before:
            up = parents.get(up)
        if up in before:
            continue
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # ended meanwhile
    return found


# -- the rehearsal -----------------------------------------------------------------------------------


def assert_promoted_deployed_and_stopped(
    world: Repository,
    bucket: str,
    sha: str,
    tracking: str,
    model: str,
    version: str,
    box: Ec2Box,
    before: set[int],
) -> None:
    """What an operator would look at once the loop ran: the batch record, the `production` alias
    and main's pointer name the new version, the pairs are in the store and not on main, helm was
    asked for that version's release, the instance is stopped with no lease, no process is left."""
    from mlflow import MlflowClient

    record = boto3.client("s3").get_object(Bucket=bucket, Key=f"store/batches/{sha}.json")
    assert json.loads(record["Body"].read())["status"] == "promoted"
    assert MlflowClient(tracking).get_model_version_by_alias(model, "production").version == version
    pointer = git(world.served, "--git-dir", str(world.bare), "show", "main:models/production_current.json")
    assert str(json.loads(pointer)["to_version"]) == version
    on_main = git(
        world.served, "--git-dir", str(world.bare), "ls-tree", "-r", "--name-only", "main", "data/incoming"
    )
    assert on_main == "data/incoming/.gitkeep"  # the pairs live in the store, never on main
    helm = [json.loads(line) for line in world.calls.read_text().splitlines() if '"who": "helm"' in line]
    # the version's release, then the production address pointed at it
    install, entry = [c["args"] for c in helm if c["args"][:2] == ["upgrade", "--install"]]
    assert (
        f"model.version={version}" in install
        and install[install.index("--namespace") + 1] == f"model-{version}"
    )
    assert entry[entry.index("--namespace") + 1] == "wms" and f"upstream.namespace=model-{version}" in entry
    assert box.state() == "stopped"
    assert not [k for k in box.tags() if k.startswith(HOLDER_TAG_PREFIX)]
    deadline = time.monotonic() + 20
    while (left := strays(before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes the loop started are still running: {left}"


@pytest.fixture
def instance(tmp_path: Path, aws_env: str) -> Iterator[Sshd]:
    """The GPU instance's stand-in: an sshd on loopback whose sessions hold the instance's own AWS
    credentials (moto's here), as its IAM role gives them on EC2 (infrastructure/terraform/iam.tf):
    the training job there reads the dataset version from the store itself."""
    folder = tmp_path / "instance"
    folder.mkdir()
    profile = " ".join(f"{k}={os.environ[k]}" for k in AWS_KEYS)
    with running_sshd(folder, f"SetEnv {profile}") as server:
        yield server


def test_a_pushed_batch_is_trained_promoted_merged_deployed_and_the_gpu_stopped(
    tmp_path: Path,
    aws_env: str,
    s3_bucket: str,
    ec2_box: Ec2Box,
    instance: Sshd,
    seeded_remote: Path,
    mlflow_server: str,
    github: FakeGitHub,
) -> None:
    before = descendants(os.getpid())  # the fixtures' servers (mlflow, sshd) already run
    name = f"rehearsal-{uuid.uuid4().hex[:8]}"  # the session's MLflow server is shared
    # The repository's own settings: tiny training, this test's MLflow names, the instance's tag
    # and how SSH reaches the stand-in instance (its port, user and WMS folder).
    settings = TINY_SETTINGS + (
        f'\n[tracking]\nexperiment = "{name}"\nmodel_name = "{name}"\n'
        f'\n[compute]\ninstance_tag = "{ec2_box.tag}"\nssh_port = {instance.port}\n'
        f'ssh_user = "{instance.user}"\nremote_dir = "{seeded_remote}"\npoll_seconds = 0.05\n'
    )
    world = seeded_repository(tmp_path, settings)
    served, bare, home, calls, state = world.served, world.bare, world.home, world.calls, world.state
    base_env, aws = world.env, world.aws

    with serve_git(served, {JOB_TOKEN: "github-actions", PAT: "wms-bot", LABELLER: "labeller"}) as url:
        runner = Runner(f"{url}/meters.git", JOB_TOKEN, RUN_ID, REPO, base_env, aws, tmp_path / "runner")
        runner.tmp.mkdir()
        sha = labeller_pushes_a_batch(runner.url, tmp_path / "labeller", base_env)
        repository = {
            "github.token": JOB_TOKEN,
            "github.repository": REPO,
            "github.run_id": RUN_ID,
            "github.event.repository.default_branch": "main",
            "vars.WMS_STORE_URL": f"s3://{s3_bucket}/store",
            "vars.WMS_TRACKING_URI": mlflow_server,
            "vars.WMS_GPU_HOST": "127.0.0.1",  # the stand-in instance's address (WMS_LAYOUT unset: split)
            "secrets.WMS_GITHUB_TOKEN": PAT,
            "secrets.EC2_SSH_KEY": instance.key.read_text(),  # the key itself, as the secret holds it
        }

        # 2. Data push, for the push of the branch.
        push = repository | pushed(sha)
        runner.run_job("data-push.yaml", "validate", push)

        # 3. The training pipeline, started by that run's success.
        github.answer(f"GET /repos/{REPO}/pulls", 200, [])
        github.answer(f"POST /repos/{REPO}/pulls", 201, PR)
        github.answer(f"POST /repos/{REPO}/issues/{PR['number']}/labels", 200, [])
        github.answer("POST /graphql", 200, {"data": {"enablePullRequestAutoMerge": {"pullRequest": {}}}})
        statuses = f"POST /repos/{REPO}/statuses/{sha}"  # "WMS training" on the batch's commit
        github.answer(statuses, 201, {})
        event = repository | data_push_passed(sha)
        pipeline = load("training-data-pipeline.yaml")["jobs"]
        assert not value_of(pipeline["start-compute"]["if"], event)  # split: the pipeline starts the GPU
        event |= {"needs.start-compute.result": "skipped"}
        # The gpu recipe stays, but trains as the tiny settings do, on the CPU (this machine has no
        # GPU): keys set in the environment win over a recipe's. git.api_url: the fake GitHub API.
        tiny = {"device": "cpu", "image_size": 32, "base_channels": 8, "depth": 2, "batch_size": 8}
        here = {
            f"WMS_TRAIN__{k.upper()}": str(v) for k, v in (tiny | {"epochs": 10, "max_minutes": 0}).items()
        }
        here["WMS_GIT__API_URL"] = github.url
        train = runner.run_job("training-data-pipeline.yaml", "train", event, here)
        assert train["promoted"] == "true" and train["on_main"] == "false", train  # auto-merge pending
        version = train["model_version"]
        assert any(f"promoted version {version}:" in s for s in runner.summaries)  # the run's Summary page
        # The pull request carries the pointer commit: it shows the batch's status too, where a
        # reviewer looks (and where a required status check would wait for it).
        pointer = git(world.served, "--git-dir", str(world.bare), "rev-parse", f"refs/heads/{BRANCH}")
        [on_pull_request] = [c.body for c in github.calls(f"POST /repos/{REPO}/statuses/{pointer}")]
        assert on_pull_request["state"] == "success" and on_pull_request["context"] == "WMS training"
        assert on_pull_request["description"].startswith(f"published: promoted version {version}")
        event |= {f"needs.train.outputs.{k}": v for k, v in train.items()} | {"needs.train.result": "success"}
        for later in ("hold-compute", "deploy"):  # they wait for main to name the promotion
            assert not value_of(pipeline[later]["if"], event), later
        event |= {"needs.hold-compute.result": "skipped", "needs.deploy.result": "skipped"}

        # 5. Stop compute, always, with the run's holder.
        stop = pipeline["stop-compute"]
        assert value_of(stop["if"], event)
        runner.run_job("ec2-control.yaml", "ec2", event | inputs_of("ec2-control.yaml", stop["with"], event))

        # 4. GitHub's auto-merge once the checks passed, then release-deploy for that push to main.
        [opened] = github.calls(f"POST /repos/{REPO}/pulls")
        assert opened.body["head"] == BRANCH and opened.body["base"] == "main"
        merged = github_merges(runner.url, tmp_path / "github", base_env, opened.body["title"])
        changed = git(served, "--git-dir", str(bare), "diff", "--name-only", f"{merged}^", merged).split()
        assert "models/production_current.json" in changed  # a path that starts release-deploy.yaml:
        assert "models/production_current.json" in triggers(load("release-deploy.yaml"))["push"]["paths"]
        release = load("release-deploy.yaml")["jobs"]
        on_main = repository | {
            "github.event_name": "push",
            "github.sha": merged,
            "github.ref": "refs/heads/main",
            "needs.check.result": "skipped",
            "needs.start-compute.result": "skipped",
        }
        assert not value_of(release["start-compute"]["if"], on_main)  # split
        runner.run_job("release-deploy.yaml", "reconcile", on_main)
        on_main |= {"needs.reconcile.result": "success", "needs.hold-compute.result": "skipped"}
        assert value_of(release["deploy"]["if"], on_main)
        deploy = on_main | inputs_of("deploy-model.yaml", release["deploy"]["with"], on_main)
        # The pod the chart starts serves the version it names: here, served in this process.
        project = load_settings(
            start=runner.tmp / "release-deploy.yaml-reconcile", overrides={"tracking": {"uri": mlflow_server}}
        )
        pod = stage_model(MlflowRegistry(project), version, tmp_path / "pod")
        with (
            LiveServer(create_app(pod, ServeSettings())) as upstream,
            FakeCluster(calls, state, upstream.url) as cluster,
        ):
            write_kubeconfig(home / ".kube" / "config", cluster.url)  # the runner's (~runner/.kube/config)
            runner.run_job("deploy-model.yaml", "deploy", deploy)
            # The next hour's heal finds production serving what main names: nothing to deploy.
            hourly = repository | {"github.event_name": "schedule", "github.event.schedule": "41 * * * *"}
            assert runner.run_job("release-deploy.yaml", "check", hourly)["in_sync"] == "true"

        # The sweeper's look, within half an hour: main has the promotion, nothing is left to run.
        sweep = repository | {"github.event_name": "schedule"}
        found = runner.run_job("pipeline-sweeper.yaml", "find", sweep, {"WMS_GIT__API_URL": github.url})
        assert found["pending"] == "0", found
        # The commit the labeller pushed said where its batch stood at each turn.
        shown = [(c.body["state"], c.body["description"]) for c in github.calls(statuses)]
        assert [state for state, _ in shown] == ["pending", "success", "success"], shown
        assert shown[1][1].startswith(f"published: promoted version {version}")
        assert shown[2][1].startswith("promoted")  # the sweeper's look, once main had it
    # What an operator would look at.
    assert not job_processes(seeded_remote)
    wait_until(lambda: not instance.sessions(), 20, "the SSH sessions to end")
    assert_promoted_deployed_and_stopped(world, s3_bucket, sha, mlflow_server, name, version, ec2_box, before)
