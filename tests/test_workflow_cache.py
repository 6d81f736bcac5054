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
    found, seen, todo = [], set(), ["data-push.yaml", "training-data-pipeline.yaml"]
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
        ("data-push.yaml", "validate"),
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


def test_setup_wms_installs_again_only_when_the_pins_or_extras_change(tmp_path: Path) -> None:
    """A self-hosted runner's Python keeps the last job's editable install of this checkout: the
    hourly heal reinstalled it every run (pip: about 10 s, and its build backend fetched from the
    index). The install step runs here with a fake `python` whose pip makes wms importable."""
    import os
    import shutil
    import stat
    import subprocess

    action = yaml.safe_load((ROOT / ".github" / "actions" / "setup-wms" / "action.yaml").read_text())
    (step,) = [s for s in action["runs"]["steps"] if s.get("name") == "Install wms"]
    checkout, prefix, bin_dir = tmp_path / "checkout", tmp_path / "prefix", tmp_path / "bin"
    for folder in (checkout, prefix, bin_dir):
        folder.mkdir()
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, checkout / name)
    log = tmp_path / "calls.log"
    python = bin_dir / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'echo "python $*" >> {log}\n'
        'case "$2" in *sys.prefix*) echo ' + str(prefix) + "; exit 0 ;; esac\n"
        f'if [ "$2" = "import wms" ]; then [ -f {prefix}/wms ]; exit; fi\n'
        '[ -z "$PIP_FAILS" ] || exit 1\n'
        f"touch {prefix}/wms\n"
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)

    def install(**env: str) -> subprocess.CompletedProcess[str]:
        log.write_text("")
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=checkout,
            env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "EXTRAS": "s3", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def pip_ran() -> bool:
        return "-m pip install" in log.read_text()

    assert install().returncode == 0 and pip_ran()  # a new runner
    again = install()
    assert again.returncode == 0 and not pip_ran(), again.stdout + again.stderr  # the next hour
    assert "nothing to install" in again.stdout
    assert install(EXTRAS="s3,ec2").returncode == 0 and pip_ran()  # other extras
    with (checkout / "constraints.txt").open("a") as fh:
        fh.write("\n# a pin moved\n")
    assert install(EXTRAS="s3,ec2").returncode == 0 and pip_ran()
    assert install(EXTRAS="s3,ec2").returncode == 0 and not pip_ran()
    (prefix / "wms").unlink()  # uninstalled by hand
    assert install(EXTRAS="s3,ec2").returncode == 0 and pip_ran()
    # Another job's install that fails halfway may have moved packages under the last one's.
    assert install(EXTRAS="s3", PIP_FAILS="1").returncode != 0
    assert install(EXTRAS="s3,ec2").returncode == 0 and pip_ran()
