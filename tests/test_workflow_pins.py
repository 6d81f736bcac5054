"""Every third-party action runs at a fixed commit: a tag can be moved to other code, which would
then run on the self-hosted runners with the job's secrets. A tool CI downloads runs only once
its checksum matches what its release publishes."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*(\S+)\s+# v\d+(\.\d+)*\s*$")


def action_files() -> list[Path]:
    return sorted(
        [
            *(ROOT / ".github" / "workflows").glob("*.yaml"),
            *(ROOT / ".github" / "actions").glob("*/action.yaml"),
        ]
    )


def uses(node: object) -> list[str]:
    """Every `uses:` value in a workflow or composite action."""
    if isinstance(node, dict):
        found = [str(v) for k, v in node.items() if k == "uses"]
        return found + [u for v in node.values() for u in uses(v)]
    if isinstance(node, list):
        return [u for v in node for u in uses(v)]
    return []


def test_third_party_actions_are_pinned_by_commit_with_their_version_beside() -> None:
    checked = 0
    for path in action_files():
        text = path.read_text()
        for ref in uses(yaml.safe_load(text)):
            if ref.startswith("./"):  # this repository's own actions and reusable workflows
                continue
            checked += 1
            assert PINNED.match(ref), f"{path.name}: {ref} is not pinned to a 40-character commit"
            (line,) = {line.strip() for line in text.splitlines() if f"uses: {ref}" in line}
            assert VERSION_COMMENT.search(line), f"{path.name}: {line!r} does not say which version it is"
    assert checked >= 10  # the checkouts, setup-python, setup-helm and setup-terraform


def dependabot() -> dict[str, Any]:
    """`.github/dependabot.yml`'s entries by ecosystem."""
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    return {u["package-ecosystem"]: u for u in config["updates"]}


def test_dependabot_config_is_one_github_accepts() -> None:
    """GitHub skips a dependabot.yml it cannot read and says so only on the repository's Insights
    page. The schema is SchemaStore's dependabot-2.0.json (Apache-2.0), as check-jsonschema 0.39.0
    ships it (`check-jsonschema --builtin-schema vendor.dependabot`)."""
    schema = json.loads((ROOT / "tests" / "schemas" / "dependabot.schema.json").read_text())
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    jsonschema.validate(config, schema)
    wrong = {**config, "updates": [{**config["updates"][0], "schedule": {"interval": "fortnightly"}}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)


def test_dependabot_proposes_weekly_grouped_updates_for_the_pins_it_can_read() -> None:
    entries = dependabot()
    assert set(entries) == {"github-actions", "pip", "terraform"}
    for ecosystem, entry in entries.items():
        assert entry["schedule"]["interval"] == "weekly", ecosystem
    # Minor and patch releases come as one pull request per ecosystem, majors one by one.
    for ecosystem in ("github-actions", "pip"):
        groups = entries[ecosystem]["groups"].values()
        assert any(
            sorted(g.get("update-types", [])) == ["minor", "patch"] and "patterns" not in g for g in groups
        )
    assert (ROOT / entries["pip"]["directory"].lstrip("/") / "constraints.txt").is_file()
    assert (ROOT / entries["terraform"]["directory"].lstrip("/") / "versions.tf").is_file()


def test_dependabot_reads_every_composite_action() -> None:
    """For github-actions, "/" reads .github/workflows only: a composite action's pins (setup-python,
    configure-aws-credentials) are updated only where its folder is named."""
    directories = dependabot()["github-actions"]["directories"]
    assert "/" in directories
    actions = {f"/{p.parent.relative_to(ROOT)}" for p in (ROOT / ".github" / "actions").glob("*/action.yaml")}
    assert len(actions) >= 2
    assert actions <= set(directories), f"not read by Dependabot: {sorted(actions - set(directories))}"


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_dependabot_reads_constraints_txt_as_requirements() -> None:
    """Dependabot's pip ecosystem takes a .txt file (any name) as requirements only when each of its
    lines is blank, a comment or a requirement; one line of another kind and the pins go unread."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    for line in lines:
        assert (
            not line.strip() or line.startswith("#") or re.fullmatch(r"[A-Za-z0-9][\w.-]*==[\w.+!-]+", line)
        ), line
    assert len(pins()) > 100


def test_the_mlflow_packages_move_in_one_pull_request() -> None:
    """mlflow pins mlflow-skinny and mlflow-tracing at its own version: a pull request that moves one
    of them alone cannot be installed."""
    patterns = dependabot()["pip"]["groups"]["mlflow"]["patterns"]
    mlflow = {name for name in pins() if name.startswith("mlflow")}
    assert mlflow >= {"mlflow", "mlflow-skinny", "mlflow-tracing"}
    for name in mlflow:
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns), name
    # Groups are filled in order: the mlflow group comes before the one of all minor and patch releases.
    assert next(iter(dependabot()["pip"]["groups"])) == "mlflow"


def test_dependabot_pull_requests_start_no_job_that_holds_a_secret() -> None:
    """A Dependabot pull request comes from a branch dependabot/<ecosystem>/... of this repository:
    every job it starts runs code nobody has reviewed yet."""
    started = []
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yaml")):
        workflow = yaml.safe_load(path.read_text())
        on = workflow.get("on", workflow.get(True)) or {}
        pushes = (on.get("push") or {}).get("branches", []) if "push" in on else []
        if (
            "pull_request" not in on
            and "pull_request_target" not in on
            and not any(
                fnmatch.fnmatchcase("dependabot/pip/mlflow-3.18.0", b.replace("**", "*")) for b in pushes
            )
        ):
            continue
        assert "pull_request_target" not in on, path.name
        for job_id, job in workflow["jobs"].items():
            if "startsWith(github.head_ref, 'data/')" in str(job.get("if", "")):
                continue  # data branches' pull requests only
            started.append(f"{path.name}:{job_id}")
            text = yaml.safe_dump(job)
            assert "environment" not in job and "secrets." not in text, (path.name, job_id)
    assert "ci.yaml:test" in started


def test_a_known_vulnerability_in_a_pin_fails_a_daily_run() -> None:
    """pip-audit looks up each pin of constraints.txt as written (--no-deps --disable-pip: nothing
    installed, not the multi-GB torch either) and exits non-zero on a known vulnerability; --strict
    makes a pin it could not look up fail the run too, instead of passing unchecked."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "dependency-audit.yaml").read_text())
    on = workflow.get("on", workflow.get(True))
    assert on["schedule"] and "workflow_dispatch" in on
    job = workflow["jobs"]["pip-audit"]
    runs = [s["run"] for s in job["steps"] if "run" in s]
    (install,) = [r for r in runs if "pip install" in r]
    assert re.search(r"\bpip-audit==\d+\.\d+\.\d+$", install), install
    (audit,) = [r.split() for r in runs if r.startswith("pip-audit")]
    assert audit[audit.index("-r") + 1] == "constraints.txt"
    assert {"--no-deps", "--disable-pip", "--strict"} <= set(audit)
    assert not {"--ignore-vuln", "--desc"} & set(audit)
    assert "environment" not in job and "secrets." not in yaml.safe_dump(job)
    assert workflow["permissions"] == {"contents": "read"}


# `curl -fsSLO URL` as the step calls it: the file of that name from $RELEASE, into the current folder.
FAKE_CURL = '#!/bin/sh\nfor arg; do url=$arg; done\ncp "$RELEASE/${url##*/}" .\n'


def _install_kubeconform(tmp_path: Path, tarball: bytes, published: str) -> subprocess.CompletedProcess[str]:
    """ci.yaml's kubeconform install step, under GitHub's `bash -e`, against a fake release."""
    (step,) = [
        s
        for s in yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yaml").read_text())["jobs"]["helm"][
            "steps"
        ]
        if str(s.get("name", "")).startswith("Install kubeconform")
    ]
    release, work, bin_dir = tmp_path / "release", tmp_path / "work", tmp_path / "bin"
    for folder in (release, work, bin_dir):
        folder.mkdir(exist_ok=True)
    curl = bin_dir / "curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(curl.stat().st_mode | stat.S_IXUSR)
    (release / "kubeconform-linux-amd64.tar.gz").write_bytes(tarball)
    (release / "CHECKSUMS").write_text(
        f"{'0' * 64}  kubeconform-darwin-amd64.tar.gz\n{published}  kubeconform-linux-amd64.tar.gz\n"
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RELEASE": str(release),
        "KUBECONFORM_VERSION": "v0.6.7",
    }
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )


def test_ci_runs_kubeconform_only_as_its_release_checksums_say(tmp_path: Path) -> None:
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum is not installed (GitHub's runners have it)")
    build = tmp_path / "build"
    build.mkdir()
    (build / "kubeconform").write_text("#!/bin/sh\necho kubeconform\n")
    packed = tmp_path / "kubeconform-linux-amd64.tar.gz"
    subprocess.run(["tar", "-czf", packed, "-C", build, "kubeconform"], check=True)
    tarball = packed.read_bytes()

    accepted = _install_kubeconform(tmp_path, tarball, hashlib.sha256(tarball).hexdigest())
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert (tmp_path / "work" / "kubeconform").exists()
    (tmp_path / "work" / "kubeconform").unlink()

    refused = _install_kubeconform(tmp_path, tarball + b"changed", hashlib.sha256(tarball).hexdigest())
    assert refused.returncode == 1
    assert not (tmp_path / "work" / "kubeconform").exists()
    (error,) = [line for line in refused.stdout.splitlines() if line.startswith("::error::")]
    assert "does not match its release's CHECKSUMS: not run" in error
