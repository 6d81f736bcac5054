"""checkov's findings are fixed or skipped in place, and every skip says why.

checkov itself runs in `make test` (`make checkov`, before pytest) and in ci.yaml, with
.checkov.yaml; this test keeps its skips honest.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# `#checkov:skip=CKV_X_1: why` in Terraform, Dockerfiles and YAML comments; in Kubernetes
# manifests, the annotation `checkov.io/skip1: CKV_K8S_43=why`.
SKIP = re.compile(r"checkov(?::skip=|\.io/skip\d+:\s*)([A-Z0-9_]+)(.*)")
PLACES = ("infrastructure", "docker", ".github", "devops")


def skips() -> list[tuple[Path, str, str]]:
    found = []
    for place in PLACES:
        for path in sorted((ROOT / place).rglob("*")):
            if path.is_file() and ".terraform" not in path.parts:
                for check, rest in SKIP.findall(path.read_text(errors="replace")):
                    found.append((path.relative_to(ROOT), check, rest))
    return found


def test_every_skip_names_a_check_and_gives_a_reason() -> None:
    assert skips(), "no skip found: the pattern or the places are wrong"
    for path, check, rest in skips():
        reason = rest.lstrip(":=").strip().strip('"')
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check), (path, check)
        assert len(reason.split()) >= 4, f"{path}: the skip of {check} needs a one-line reason"


def test_the_config_scans_what_the_cloud_runs_and_skips_nothing_globally() -> None:
    config = yaml.safe_load((ROOT / ".checkov.yaml").read_text())
    assert {"terraform", "dockerfile", "github_actions", "secrets"} <= set(config["framework"])
    # No check is switched off for the whole project: each skip sits beside what it excuses.
    assert not {"skip-check", "soft-fail", "soft-fail-on", "baseline"} & set(config)
