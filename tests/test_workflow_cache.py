"""No job a push to a data branch starts restores GitHub's cache.

GitHub lets a run restore the cache entries of its own branch (and of the default branch), and
any job of a run on that branch can write them: a workflow pushed to the branch on a GitHub-hosted
runner, which the self-hosted runners' pre-job check never sees, and whose change a later commit
takes back before the batch is pushed. Restoring such an entry unpacks whatever files it holds
into the job that restores it, where the train job holds wms-production's secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from tests.test_workflows import ROOT, load

SETUP_WMS = "./.github/actions/setup-wms"


def jobs_a_data_branch_starts() -> list[tuple[str, str, dict[str, Any]]]:
    """The data pipeline's jobs and those of every workflow it calls, however deep."""
    found, seen, todo = [], set(), ["training-data-pipeline.yaml"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for job_id, job in load(name)["jobs"].items():
            if str(job.get("uses", "")).startswith("./.github/workflows/"):
                todo.append(Path(job["uses"]).name)
            else:
                found.append((name, job_id, job))
    return found


def test_no_job_of_a_data_branchs_run_restores_a_cache() -> None:
    jobs = jobs_a_data_branch_starts()
    assert {(name, job_id) for name, job_id, _ in jobs} >= {
        ("training-data-pipeline.yaml", "validate"),
        ("training-data-pipeline.yaml", "train"),
        ("ec2-control.yaml", "ec2"),
        ("deploy-model.yaml", "deploy"),
    }
    for name, job_id, job in jobs:
        for step in job.get("steps", []):
            uses = str(step.get("uses", ""))
            assert not uses.startswith(("actions/cache", "actions/setup-python")), (name, job_id, uses)
            if uses == SETUP_WMS:
                assert (step.get("with") or {}).get("pip-cache") == "false", (name, job_id)


def test_setup_wms_caches_pip_only_when_asked() -> None:
    action = yaml.safe_load((ROOT / ".github" / "actions" / "setup-wms" / "action.yaml").read_text())
    assert action["inputs"]["pip-cache"]["default"] == "true"  # CI and the runs on main keep theirs
    cached = [s for s in action["runs"]["steps"] if "cache" in (s.get("with") or {})]
    assert [s["uses"].split("@")[0] for s in cached] == ["actions/setup-python"]
    # setup-python restores nothing when `cache` is empty.
    assert cached[0]["with"]["cache"] == (
        "${{ inputs.pip-cache == 'true' && runner.environment == 'github-hosted' && 'pip' || '' }}"
    )  # self-hosted runners keep no pip cache (tests/test_infrastructure_disk.py)
    assert not any("actions/cache" in str(s.get("uses", "")) for s in action["runs"]["steps"])
