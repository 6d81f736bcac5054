"""release-deploy.yaml's hourly heal: in split, a scheduled run deploys main's production only
when the cluster does not serve it, once, red when that fails; in single it does nothing."""

from __future__ import annotations

from typing import Any

import pytest
from tests.test_workflows import DEFAULT_BRANCH, _needs, evaluate, for_layout, load, triggers

HOURLY = "41 * * * *"


def run(
    event: str, layout: str, check: str = "success", in_sync: str = "", deploy: str = "success"
) -> dict[str, str]:
    """Each job's result in one run, as GitHub decides from the jobs' `if:` in order. `check`,
    `in_sync` and `deploy` are what the check job and the deploy did, where they ran."""
    jobs = load("release-deploy.yaml")["jobs"]
    results: dict[str, str] = {}
    values: dict[str, Any] = {
        "github.event_name": event,
        "github.event.schedule": HOURLY if event == "schedule" else "",
        "github.event.repository.private": True,
        "vars.WMS_LAYOUT": layout,
    }
    for job_id in [
        "check",
        "start-compute",
        "reconcile",
        "hold-compute",
        "deploy",
        "stop-compute",
        "verify",
        "keep-schedule",
    ]:
        runs = evaluate(jobs[job_id]["if"], values)
        done = {"check": check, "deploy": deploy}.get(job_id, "success")
        results[job_id] = done if runs else "skipped"
        values[f"needs.{job_id}.result"] = results[job_id]
        if job_id == "check":
            values["needs.check.outputs.in_sync"] = in_sync if runs and check == "success" else ""
    return results


def test_a_push_deploys_as_before_in_both_layouts() -> None:
    split = run("push", "split")
    assert (split["check"], split["start-compute"], split["reconcile"], split["deploy"]) == (
        "skipped", "skipped", "success", "success",
    )  # fmt: skip
    assert split["verify"] == "skipped"
    single = run("push", "single")
    assert [single[j] for j in ("start-compute", "reconcile", "deploy", "stop-compute")] == ["success"] * 4


def test_the_hour_deploys_only_when_the_cluster_does_not_serve_mains_production() -> None:
    quiet = run("schedule", "split", in_sync="true")
    assert quiet["check"] == "success"
    assert {j for j, r in quiet.items() if r != "skipped"} == {"check"}  # one read, nothing else

    heal = run("schedule", "split", in_sync="false")
    assert [heal[j] for j in ("reconcile", "deploy", "verify")] == ["success"] * 3
    assert heal["start-compute"] == heal["stop-compute"] == "skipped"  # split never starts the GPU


def test_a_heal_that_fails_leaves_the_run_red_and_says_so_once() -> None:
    failed = run("schedule", "split", in_sync="false", deploy="failure")
    assert failed["verify"] == "success"  # the job itself runs: its `wms deploy status --check` exits 1
    verify = load("release-deploy.yaml")["jobs"]["verify"]
    assert [s["run"] for s in verify["steps"] if "run" in s] == ["wms deploy status --check"]
    # One attempt per hour: nothing in the run retries the deploy.
    text = str(load("release-deploy.yaml"))
    assert "continue-on-error" not in text and "retry" not in text.lower()


def test_a_check_that_cannot_ask_the_cluster_deploys_nothing() -> None:
    broken = run("schedule", "split", check="failure")
    assert [broken[j] for j in ("reconcile", "deploy", "verify")] == ["skipped"] * 3


def test_in_single_the_hour_does_nothing() -> None:
    """There the cluster sleeps with the GPU instance: a heal would start it every hour."""
    results = run("schedule", "single", in_sync="false")
    assert set(results.values()) == {"skipped"}


def test_the_check_reads_the_cluster_without_the_environment_and_hands_on_in_sync() -> None:
    workflow = load("release-deploy.yaml")
    assert {"cron": HOURLY} in triggers(workflow)["schedule"]
    check = workflow["jobs"]["check"]
    assert "environment" not in check  # a required reviewer never holds up the hourly read
    assert for_layout(check["runs-on"], "split")[-1] == "wms-serve"
    assert check["env"]["WMS_DEPLOY__TARGET"] == "k8s"
    (checkout,) = [s for s in check["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
    assert checkout["with"]["ref"] == DEFAULT_BRANCH
    assert checkout["with"]["fetch-depth"] == 0  # the image's commit is compared with main's history
    (status,) = [s for s in check["steps"] if "run" in s]
    assert status["run"] == "wms deploy status" and status["id"] == "status"
    assert check["outputs"]["in_sync"] == "${{ steps.status.outputs.in_sync }}"
    # The heal deploys what a push deploys, in the same environment and the same turn.
    jobs = workflow["jobs"]
    assert "check" in _needs(jobs["reconcile"]) and jobs["reconcile"]["environment"] == "wms-production"
    assert jobs["deploy"]["uses"] == "./.github/workflows/deploy-model.yaml"
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert all("concurrency" not in job for job in jobs.values())


@pytest.mark.parametrize(
    ("event", "layout", "group"),
    [
        ("push", "split", "wms-release"),
        ("push", "single", "wms-release"),
        ("workflow_dispatch", "single", "wms-release"),
        ("schedule", "split", "wms-release"),  # the heal queues with the push's deploys
        ("schedule", "single", "wms-release-idle"),  # does nothing: must not replace a waiting push run
    ],
)
def test_the_heal_shares_the_release_group_only_where_it_deploys(event: str, layout: str, group: str) -> None:
    """GitHub keeps one waiting run per group: a newer run replaces the one waiting, so a
    scheduled run that deploys nothing must not take a push's place in the queue."""
    expression = load("release-deploy.yaml")["concurrency"]["group"].removeprefix("${{").removesuffix("}}")
    for name, value in {"github.event_name": event, "vars.WMS_LAYOUT": layout}.items():
        expression = expression.replace(name, repr(value))
    expression = expression.replace("&&", " and ").replace("||", " or ")
    assert eval(expression, {"__builtins__": {}}) == group  # only the repository's own workflow


@pytest.mark.parametrize("layout", ["split", "single"])
def test_a_manual_run_deploys_as_a_push_does(layout: str) -> None:
    assert run("workflow_dispatch", layout)["deploy"] == "success"


def test_the_check_calls_stale_what_a_push_redeploys() -> None:
    """A change a push to main redeploys (release-deploy.yaml's paths) is one the pods lack until
    then; the pointer is compared as the version itself."""
    from wms.deploy.status import SERVED_PATHS

    paths = triggers(load("release-deploy.yaml"))["push"]["paths"]
    watched = {p.removesuffix("/**") for p in paths} - {"models/production_current.json"}
    assert watched == set(SERVED_PATHS)


@pytest.mark.parametrize(("event", "in_sync_then", "deploys"), [
    ("schedule", "true", False),  # a pipeline's deploy of that version finished while the heal's waited
    ("schedule", "false", True),
    ("push", "", True),  # no second look: a push deploys as before
])  # fmt: skip
def test_the_heals_deploy_looks_again_once_it_holds_the_deploy_group(
    event: str, in_sync_then: str, deploys: bool
) -> None:
    """The heal's check runs outside the deploy group; its deploy then waits there behind a
    running one (a data pipeline's, of the same version), after which building and rolling
    out the same version again would be waste."""
    passed = load("release-deploy.yaml")["jobs"]["deploy"]["with"]["unless_in_sync"]
    asked = evaluate(passed, {"github.event_name": event})
    (job,) = load("deploy-model.yaml")["jobs"].values()
    assert job["concurrency"]["group"] == "wms-deploy"
    steps = {s.get("name", ""): s for s in job["steps"]}
    status = steps["Ask the cluster again"]
    assert (
        status["run"] == "wms deploy status"
        and evaluate(status["if"], {"inputs.unless_in_sync": asked}) is asked
    )
    (checkout,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
    depth = checkout["with"]["fetch-depth"].removeprefix("${{").removesuffix("}}").replace("&&", " and ")
    depth = depth.replace("||", " or ").replace("inputs.unless_in_sync", repr(asked))
    assert eval(depth, {"__builtins__": {}}) == ("0" if asked else "1")  # the image's commit needs history
    values = {f"steps.{status['id']}.outputs.in_sync": in_sync_then if asked else ""}
    assert evaluate(steps["Deploy"]["if"], values) is deploys
