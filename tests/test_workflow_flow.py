"""The workflows as GitHub runs them together: what one job hands the next, and what it reaches."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from tests.conftest import Ec2Box
from tests.test_workflows import DEFAULT_BRANCH, ROOT, WORKFLOWS, _needs, evaluate, for_layout, load, triggers
from tests.workflow_expressions import FUNCTIONS, value_of

from wms.compute.ec2 import Ec2Compute
from wms.config import ComputeSettings

SRC = ROOT / "src"

# The single layout: ec2-control's mlflow_url is the instance's public (Elastic) address, for a
# laptop in the allowed network; the repository variable is terraform's mlflow_url_internal.
PUBLIC_MLFLOW = "http://203.0.113.10:5000"
INTERNAL_MLFLOW = "http://172.31.20.5:5000"
CONTEXT = {
    "needs.start-compute.outputs.mlflow_url": PUBLIC_MLFLOW,
    "vars.WMS_TRACKING_URI": INTERNAL_MLFLOW,
}


def first_set(expression: str, values: dict[str, str]) -> str:
    """`${{ a || b || 'literal' }}` as GitHub evaluates it: the first operand that is not empty."""
    inner = expression.strip().removeprefix("${{").removesuffix("}}")
    for operand in (part.strip() for part in inner.split("||")):
        value = operand.strip("'") if operand.startswith("'") else values.get(operand, "")
        if value:
            return value
    return ""


def deploy_tracking_uri(caller: dict[str, Any]) -> str:
    """The MLflow address deploy-model.yaml's job gets when `caller` (a job that uses it) calls it."""
    deploy = load("deploy-model.yaml")["jobs"]["deploy"]
    inputs = {f"inputs.{k}": first_set(str(v), CONTEXT) for k, v in caller.get("with", {}).items()}
    return first_set(deploy["env"]["WMS_TRACKING__URI"], CONTEXT | inputs)


@pytest.mark.parametrize(
    ("name", "job"),
    [
        ("training-data-pipeline.yaml", "train"),
        ("pipeline-sweeper.yaml", "sweep"),
        ("release-deploy.yaml", "reconcile"),
        ("training-data-pipeline.yaml", "deploy"),
        ("release-deploy.yaml", "deploy"),
    ],
)
def test_jobs_on_the_instance_reach_mlflow_inside_the_vpc(
    name: str, job: str, terraform: dict[str, Any]
) -> None:
    """In the single layout these jobs run on the GPU instance, which cannot reach its own public
    address on MLflow's port: its security group lets out only the web and the VPC. Given the
    start job's public mlflow_url they failed at once ('MLflow at http://<EIP>:5000 does not
    answer'): every pipeline, sweep and release deploy of that layout."""
    egress = terraform["resource"]["aws_security_group.instance"]["egress"]
    out_anywhere = {r["from_port"] for r in egress if r["cidr_blocks"] == ["0.0.0.0/0"]}
    assert "${var.mlflow_port}" not in out_anywhere and 5000 not in out_anywhere

    spec = for_layout(load(name)["jobs"][job], "single")
    if "uses" in spec:
        assert spec["uses"] == "./.github/workflows/deploy-model.yaml"
        assert deploy_tracking_uri(spec) == INTERNAL_MLFLOW
    else:
        assert "wms-gpu" in spec["runs-on"]
        assert first_set(spec["env"]["WMS_TRACKING__URI"], CONTEXT) == INTERNAL_MLFLOW


# -- release-deploy.yaml: a change to what serves, on main, redeploys ---------------------------


def watched_by(pattern: str) -> re.Pattern[str]:
    """A push `paths` filter as GitHub matches it: `**` crosses folders, `*` stays in one."""
    parts = re.split(r"(\*\*|\*)", pattern)
    body = "".join({"**": ".*", "*": "[^/]*"}.get(part, re.escape(part)) for part in parts)
    return re.compile(body + r"\Z")


def served_files() -> set[str]:
    """The files a push to main may change what serves through: every module `wms serve` imports
    (in the image, built from src/), the packaged settings, the image's pins and Dockerfile,
    and the chart and values `wms deploy` installs it with."""
    import grimp

    from wms.config import load_settings
    from wms.deploy.k8s_image import CONTEXT_FILES

    graph = grimp.build_graph("wms")
    modules = {"wms.serve.app", "wms.cli.main"}  # the image runs `wms serve`: wms.cli.main:run
    modules |= {m for start in list(modules) for m in graph.find_upstream_modules(start)}
    files = {"src/wms/wms.toml"}
    for module in modules:
        path = SRC / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        files.add(path.relative_to(ROOT).as_posix())
    deploy = load_settings(start=ROOT).settings.deploy
    chart_values = Path(deploy.chart) / "values.yaml"
    files |= {Path(p).as_posix() for p in (deploy.dockerfile, chart_values, deploy.values_file)}
    files |= set(CONTEXT_FILES) - {"README.md"}  # the README is only the package's description
    return files


def test_a_change_to_anything_that_serves_redeploys() -> None:
    """The filter watched src/wms/serve/** only: a fix to photo decoding in
    wms/train/preprocess.py (16-bit PNGs, the band-wise resize that keeps a pod in its memory
    limit) or to a serve default in wms/wms.toml reached main and served nothing new."""
    paths = triggers(load("release-deploy.yaml"))["push"]["paths"]
    patterns = [watched_by(p) for p in paths]
    files = served_files()
    assert {"src/wms/train/preprocess.py", "src/wms/crops.py", "src/wms/serve/app.py"} <= files
    assert all((ROOT / name).is_file() for name in files)
    unwatched = [name for name in sorted(files) if not any(p.match(name) for p in patterns)]
    assert unwatched == [], "these change what serves, but a push of them to main redeploys nothing"


# -- a cancelled run still stops the instance -----------------------------------------------------

STOPPING = ["training-data-pipeline.yaml", "pipeline-sweeper.yaml", "release-deploy.yaml"]


def runs_when_cancelled(job: dict[str, Any], values: dict[str, str]) -> bool:
    """Whether GitHub runs (or keeps running) `job` once its run is cancelled. Without `if:` a job
    has the implicit success(), false in a cancelled run; `values` fills in the inputs."""
    cancelled = FUNCTIONS | {"cancelled": lambda: True, "success": lambda: False}
    return bool(value_of(str(job.get("if", "success()")), values, cancelled))


@pytest.mark.parametrize(
    "name", ["training-data-pipeline.yaml", "pipeline-sweeper.yaml", "release-deploy.yaml"]
)
def test_a_cancelled_run_still_stops_the_instance_and_starts_none(name: str) -> None:
    """A person cancels a long training run: the caller's stop-compute job (`always()`) starts
    ec2-control.yaml, whose own job had no `if:` and so was skipped in the cancelled run; the
    GPU ran on until every lease had run out (the single layout's start lease: 7 hours)."""
    caller = load(name)["jobs"]
    (stop,) = [job for job in caller.values() if job.get("with", {}).get("action") == "stop"]
    assert "always()" in stop["if"]
    (ec2,) = load("ec2-control.yaml")["jobs"].values()
    assert runs_when_cancelled(ec2, {"inputs.action": "stop"})
    assert not runs_when_cancelled(ec2, {"inputs.action": "start"})


# -- a run's deploy that waits for the runner keeps its instance ----------------------------------

JOB_LEASE_SECONDS = 1  # compute.lease_minutes of the jobs on the instance, in this test


def ec2_control(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, action: str, run: str, lease_minutes: Any = 60
) -> Any:
    """ec2-control.yaml's step, as a calling run's job runs it (`wms compute ACTION --holder ...`)."""
    (step,) = [s for s in load("ec2-control.yaml")["jobs"]["ec2"]["steps"] if s.get("id") == "compute"]
    monkeypatch.setenv("WMS_COMPUTE__LEASE_MINUTES", str(lease_minutes))
    words = {"$ACTION": action, "$HOLDER": f"gh-run-{run}"}
    command = [words.get(word, word) for word in shlex.split(step["run"])]
    assert command[:2] == ["wms", "compute"], command
    return cli(*command[1:])


def job_on_the_instance_ends(box: Ec2Box, run: str) -> None:
    """The last renewal of a job's `wms` on the instance (keep_job_lease): one job lease from now."""
    cfg = ComputeSettings(backend="ec2", instance_id=box.id, lease_minutes=JOB_LEASE_SECONDS / 60)
    Ec2Compute(cfg, holder=f"gh-run-{run}").renew_lease(held_only=True)


@pytest.mark.parametrize(
    ("name", "first"), [("training-data-pipeline.yaml", "train"), ("release-deploy.yaml", "reconcile")]
)
def test_a_deploy_queued_behind_another_runs_job_is_not_stopped_as_it_begins(
    name: str,
    first: str,
    project_dir: Path,
    ec2_box: Ec2Box,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """single, one runner on the GPU instance: run 7's job there ended and left its run one
    compute.lease_minutes for its deploy job, which then waited for the runner behind run 8's
    train job (hours). When that job ended, the deploy took the runner, and run 8's stop job,
    seconds later, found no live lease but its own and stopped the instance under the deploy."""
    monkeypatch.setenv("WMS_COMPUTE__BACKEND", "ec2")
    monkeypatch.setenv("WMS_COMPUTE__INSTANCE_ID", ec2_box.id)
    monkeypatch.setenv("WMS_COMPUTE__POLL_SECONDS", "0.02")
    ec2_box.client.start_instances(InstanceIds=[ec2_box.id])
    jobs = {k: for_layout(v, "single") for k, v in load(name)["jobs"].items()}
    start = jobs["start-compute"]["with"]
    for run in ("7", "8"):  # both runs' start jobs lease the instance
        assert ec2_control(cli, monkeypatch, "renew", run, start["lease_minutes"]).exit_code == 0
    job_on_the_instance_ends(ec2_box, "7")  # run 7's first job on the instance

    # What runs of run 7 before its deploy job waits for the runner: its GitHub-hosted jobs that
    # need that first job and that the deploy needs.
    done = {"result": "success", "outputs.on_main": "true"}
    values = {f"needs.{job}.{key}": value for job in ("start-compute", first) for key, value in done.items()}
    values["vars.WMS_LAYOUT"] = "single"
    for job_id in _needs(jobs["deploy"]):
        job = jobs[job_id]
        if first in _needs(job) and evaluate(job["if"], values):
            assert job["uses"] == "./.github/workflows/ec2-control.yaml", job_id
            call = job["with"]
            held = ec2_control(cli, monkeypatch, call["action"], "7", call.get("lease_minutes", 60))
            assert held.exit_code == 0, held.output

    job_on_the_instance_ends(ec2_box, "8")  # run 8's train job took the runner, and ran on ...
    time.sleep(JOB_LEASE_SECONDS + 0.5)  # ... past run 7's job lease
    job_on_the_instance_ends(ec2_box, "8")  # it ends; run 7's deploy takes the runner
    stopped = ec2_control(cli, monkeypatch, "stop", "8")  # run 8's stop job
    assert stopped.exit_code == 0, stopped.output
    assert ec2_box.state() == "running", stopped.stdout
    assert "kept running: held by gh-run-7" in json.loads(stopped.stdout)["detail"]

    job_on_the_instance_ends(ec2_box, "7")  # the deploy's `wms` ran, and ended
    assert json.loads(ec2_control(cli, monkeypatch, "stop", "7").stdout)["state"] == "stopped"


# -- secrets reach main's code only ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yaml")))
def test_every_job_with_secrets_runs_mains_code(name: str) -> None:
    """Run by hand on another branch, a workflow is read from that branch, and a checkout without
    `ref` takes that branch's src/ and .github/actions/ too, which the ruleset on
    .github/workflows/** does not cover: 'Manual EC2 Control' or the reaper run on a pushed
    branch ran its code with the wms-compute keys."""
    for job_id, job in load(name)["jobs"].items():
        if "environment" not in job:
            continue
        checkouts = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
        assert checkouts, (name, job_id)
        for checkout in checkouts:
            assert checkout.get("with", {}).get("ref") == DEFAULT_BRANCH, (name, job_id)


# -- the tools a job needs are installed --------------------------------------------------------

OVER_SSH = [("training-data-pipeline.yaml", "train"), ("pipeline-sweeper.yaml", "sweep")]


def installed(extras: str) -> set[str]:
    """The distributions `pip install -e ".[EXTRAS]"` (setup-wms) installs from pyproject.toml,
    by name, with the extras that name wms[...] followed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names: set[str] = set()
    todo, seen = ["", *extras.split(",")], set()
    while todo:
        extra = todo.pop().strip()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in project["optional-dependencies"][extra] if extra else project["dependencies"]:
            name = re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower()
            if name == "wms":
                todo += spec[spec.index("[") + 1 : spec.index("]")].split(",")
            else:
                names.add(name)
    return names


@pytest.mark.parametrize(("name", "job"), OVER_SSH)
def test_jobs_that_train_over_ssh_install_what_it_needs(name: str, job: str) -> None:
    """In the split layout (the default) these jobs train on the GPU instance over SSH, which
    needs paramiko and builds a wheel of the checkout: the ec2 extra. They installed wms[s3]
    only, so every run started the GPU instance and then failed with 'training on the instance
    needs paramiko'."""
    spec = for_layout(load(name)["jobs"][job], "split")
    assert spec["env"]["WMS_COMPUTE__TRAIN_ON"] == "instance"
    (setup,) = [s for s in spec["steps"] if s.get("uses") == "./.github/actions/setup-wms"]
    action = yaml.safe_load((ROOT / ".github/actions/setup-wms/action.yaml").read_text())
    extras = setup.get("with", {}).get("extras", action["inputs"]["extras"]["default"])
    ec2 = installed("ec2") - installed("")
    assert {"paramiko", "setuptools", "boto3"} <= ec2
    assert ec2 - installed(extras) == set()


# -- a deleted data branch starts nothing ---------------------------------------------------------


def runs_on_push(job: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether GitHub runs `job` for a push whose payload is `event` (`deleted`, `head_commit`)."""
    pushed = {
        "github.event.head_commit.message": (event.get("head_commit") or {}).get("message"),
        "github.event.deleted": bool(event.get("deleted")),
    }
    return bool(value_of(str(job.get("if", "success()")), pushed))


def test_deleting_a_data_branch_validates_nothing_and_starts_no_gpu() -> None:
    """Deleting a data/ branch is a push event too (head_commit null, GITHUB_SHA the default
    branch's head): GitHub's 'automatically delete head branches' after each merged batch, or a
    person's clean-up, ran the validation on main's commit, which has no new pairs, failed it and
    commented the failure on main. Data push skips it (and the pipeline's pointer commit): a run
    whose every job was skipped ends `skipped`, and the pipeline starts the GPU (single:
    start-compute; split: the train job) only after a Data push run that succeeded."""
    validate = load("data-push.yaml")["jobs"]["validate"]
    assert runs_on_push(validate, {"head_commit": {"message": "New labelled pairs"}})
    assert not runs_on_push(validate, {"head_commit": {"message": "Data pointers for the promoted model 3"}})
    assert not runs_on_push(validate, {"deleted": True, "head_commit": None})
    # Every other job of Data push waits on validate: skipped with it.
    assert all(
        job.get("needs") == "validate"
        for name, job in load("data-push.yaml")["jobs"].items()
        if name != "validate"
    )
    jobs = load("training-data-pipeline.yaml")["jobs"]
    for conclusion, starts in [
        ("success", True),
        ("skipped", False),
        ("failure", False),
        ("cancelled", False),
    ]:
        values = {
            "vars.WMS_LAYOUT": "single",
            "github.event.workflow_run.conclusion": conclusion,
            "github.event.workflow_run.event": "push",
            "github.event.workflow_run.head_repository.full_name": "o/meters",
            "github.repository": "o/meters",
            "needs.start-compute.result": "success" if starts else "skipped",
        }
        assert evaluate(jobs["start-compute"]["if"], values) is starts, conclusion
        assert evaluate(jobs["train"]["if"], values | {"vars.WMS_LAYOUT": "split"}) is starts, conclusion
    assert not re.search(r"always\(\)|cancelled\(\)|failure\(\)", jobs["start-compute"]["if"])


def _raw_batch(root: Path, make_batch: Callable[..., Path]) -> Path:
    """Pairs as a camera and a labelling tool leave them: 96 px, JPEG masks, one photo EXIF-rotated."""
    batch = make_batch("raw", count=3, size=96)
    for mask in sorted((batch / "masks").iterdir()):
        Image.open(mask).save(mask.with_suffix(".jpg"), quality=75)  # not binary any more
        mask.unlink()
    turned = sorted((batch / "images").iterdir())[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: stored a quarter the other way
    Image.open(turned).transpose(Image.Transpose.ROTATE_90).save(turned, exif=exif)
    shutil.move(batch, root)
    return root


def test_raw_photos_under_auto_prepare_pass_the_validate_job_as_they_pass_the_pipeline(
    project_dir: Path, make_batch: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    """With data.auto_prepare on, the pipeline prepares what a labeller pushes, but the workflow's
    validate job checked the raw files at data.size and rejected them all as wrong_size."""
    settings = project_dir / "wms.toml"
    settings.write_text(settings.read_text().replace("size = 64", "size = 64\nauto_prepare = true", 1))
    [step] = [s for s in load("data-push.yaml")["jobs"]["validate"]["steps"] if s.get("id") == "validate"]
    incoming = _raw_batch(project_dir / "incoming", make_batch)
    command = shlex.split(step["run"])
    assert command[:2] == ["wms", "data"] and "incoming" in command

    passed = cli(*command[1:])
    assert passed.exit_code == 0, passed.output

    (incoming / "images/broken.jpg").write_bytes(b"not a photo")
    shutil.copy(next((incoming / "masks").iterdir()), incoming / "masks/broken.jpg")
    refused = cli(*command[1:])
    assert refused.exit_code == 1
    assert "images/broken.jpg" in (project_dir / "validation.md").read_text()  # the commit comment names it
