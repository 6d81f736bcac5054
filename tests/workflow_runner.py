"""A workflow job's `run:` steps, run as a GitHub runner runs them: bash, the job's and each step's
`env:` resolved from a context of `${{ }}` names (the event, vars, secrets, needs, steps), real
$GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY files, and the repository's own `uses:` actions done by
their equivalents here (see Runner). Used by tests/test_loop_rehearsal.py."""

from __future__ import annotations

import base64
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.test_workflow_credentials import _wms_on_path, read_github_output
from tests.test_workflows import ROOT, load, triggers
from tests.workflow_expressions import status_functions, value_of


def text_of(value: Any) -> str:
    """A value as it lands in an environment variable or an output."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def resolve(text: Any, context: dict[str, Any]) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: text_of(value_of(m[1], context)), str(text))


# -- a job's steps as the runner runs them -------------------------------------------------------


@dataclass
class Runner:
    """A self-hosted or GitHub-hosted runner: its environment, and what the `uses:` steps stand for."""

    url: str  # the served repository
    token: str  # the job's github.token
    run_id: str  # GITHUB_RUN_ID
    repository: str  # GITHUB_REPOSITORY, owner/name
    base_env: dict[str, str]
    aws_env: dict[str, str]
    tmp: Path
    summaries: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "workflow job: step" of each step that failed

    def checkout(self, folder: Path) -> None:
        """actions/checkout of main, persist-credentials false: its token reaches git for the
        clone only (an extra header, as the action passes it) and stays off disk."""
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        header = f"http.extraHeader=Authorization: Basic {basic}"
        git(self.tmp, "-c", header, "clone", "-q", "-b", "main", self.url, str(folder), env=self.base_env)

    def run_job(
        self,
        workflow: str,
        job_id: str,
        context: dict[str, Any],
        unlike_github: dict[str, str] | None = None,
        may_fail: bool = False,
    ) -> dict[str, str]:
        """Run the job's steps in a fresh checkout of main (a job run again gets its own, named
        `-2`, `-3`...); its `outputs:` as GitHub resolves them. `unlike_github` replaces
        variables of the job's `env:` that cannot hold here. A failed step fails the test unless
        `may_fail`: then it is listed in `failed`, and only the later steps whose `if:` holds
        after a failure run, as on GitHub."""
        job = load(workflow)["jobs"][job_id]
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        needed_failed = any(context.get(f"needs.{n}.result") == "failure" for n in needs)
        condition = job.get("if", "success()")
        assert value_of(condition, context, status_functions(needed_failed)), (
            f"{workflow} {job_id} would not run"
        )
        folder = self.tmp / f"{workflow}-{job_id}"
        again = 1
        while folder.exists():  # the same job again (ec2-control's start, renew, stop): a fresh checkout
            again += 1
            folder = self.tmp / f"{workflow}-{job_id}-{again}"
        env = dict(self.base_env) | {k: resolve(v, context) for k, v in job.get("env", {}).items()}
        env |= {"GITHUB_RUN_ID": self.run_id, "GITHUB_REPOSITORY": self.repository, "GITHUB_ACTIONS": "true"}
        if "github.sha" in context:  # the pushed commit (a comment step names it so)
            env["GITHUB_SHA"] = str(context["github.sha"])
        env |= unlike_github or {}
        steps: dict[str, Any] = {}
        failed = False
        for number, step in enumerate(job["steps"]):
            uses = str(step.get("uses", ""))
            if uses.startswith("actions/checkout@"):
                self.checkout(folder)
            elif uses == "./.github/actions/setup-wms":
                env["PATH"] = f"{_wms_on_path(self.tmp / 'bin')}:{env['PATH']}"
                env["PYTHONPATH"] = str(ROOT / "src")
            elif uses == "./.github/actions/aws-credentials":
                env |= self.aws_env
            else:
                seen = context | steps
                if not value_of(step.get("if", "success()"), seen, status_functions(failed)):
                    if "id" in step:
                        steps[f"steps.{step['id']}.outcome"] = "skipped"
                    continue
                files = self.tmp / f"{folder.name.replace('.', '_')}-{number}"  # one pair a step
                output, summary = files.with_suffix(".output"), files.with_suffix(".md")
                output.touch()
                summary.touch()
                step_env = {k: resolve(v, seen) for k, v in step.get("env", {}).items()}
                done = subprocess.run(
                    ["bash", "-e", "-c", step["run"]],
                    cwd=folder,
                    env=env | step_env | {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)},
                    capture_output=True,
                    text=True,
                    timeout=240,
                )
                what = f"{workflow} {job_id}: {step.get('name')}"
                assert done.returncode == 0 or may_fail, f"{what}\n{done.stderr[-4000:]}"
                failed |= done.returncode != 0
                if done.returncode != 0:
                    self.failed.append(what)
                self.summaries.append(summary.read_text())
                if "id" in step:
                    steps[f"steps.{step['id']}.outcome"] = "success" if done.returncode == 0 else "failure"
                    steps |= {
                        f"steps.{step['id']}.outputs.{k}": v for k, v in read_github_output(output).items()
                    }
        return {k: resolve(v, context | steps) for k, v in job.get("outputs", {}).items()}


def inputs_of(workflow: str, given: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A called workflow's `inputs.*`: the caller's `with:` resolved, else the declared default."""
    declared = triggers(load(workflow))["workflow_call"]["inputs"]
    values = {f"inputs.{k}": spec.get("default", "") for k, spec in declared.items()}
    for key, value in given.items():
        text = str(value)
        values[f"inputs.{key}"] = value_of(text, context) if text.startswith("${{") else value
    return values


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()
