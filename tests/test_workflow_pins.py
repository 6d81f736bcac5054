"""Every third-party action runs at a fixed commit: a tag can be moved to other code, which would
then run on the self-hosted runners with the job's secrets. A tool CI downloads runs only once
its checksum matches what its release publishes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

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


def test_dependabot_proposes_updates_for_the_pinned_actions() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert ecosystems["github-actions"]["directory"] == "/"


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
