"""What the pipeline tells its workflow after publishing: `on_main` only when main already has the promotion.

The data pipeline's deploy job runs on `on_main=true`; a pull request left to auto-merge or for
review, or a publish that failed, must not deploy (release-deploy.yaml deploys after the merge).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from wms import promotion
from wms.cli.pipeline import report_to_github
from wms.config import load_settings
from wms.errors import BackendError
from wms.runs import PipelineRun, StageRecord
from wms.vcs.base import Published

PR = "https://github.com/o/r/pull/7"
# What the git host says it did; on_main follows `merged`, whatever the line's words.
OUTCOMES = {
    Published(f"{PR} merged into main (abc1234); auto-merge was not possible: not allowed", True): "true",
    Published("merged data/20260102-030405 into main (abc1234)", True): "true",
    Published(f"{PR} opened with auto-merge (squash): it merges when the checks pass", False): "false",
    Published(
        f"{PR} is open for review: auto-merge cannot be enabled (not allowed); turn on …", False
    ): "false",
    Published(
        f"{PR} is open for review: GitHub would not merge it (405 merged into main (x)); …", False
    ): "false",
}


def published(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, publish: Callable[..., Published]
) -> dict[str, str]:
    """Run the publish stage of a promoted run with `publish` as the git host's answer; its $GITHUB_OUTPUT."""
    monkeypatch.setattr("wms.vcs.publish.publish_promotion", publish)
    output = project_dir / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    project = load_settings(start=project_dir, overrides={"git": {"host": "github"}})
    files = project_dir / "promotion"
    files.mkdir()
    run = PipelineRun("r1", "incoming", project_dir / "run", promoted=True)
    run.outputs |= {"promotion_files": str(files), "model_version": "2", "batch": {"branch": "data/x"}}
    try:
        promotion.publish(project, run, StageRecord("publish"))
    finally:
        report_to_github(run)
    return github_output(output)


def github_output(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.mark.parametrize(("outcome", "on_main"), OUTCOMES.items())
def test_on_main_is_true_only_where_publishing_merged_into_main(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, outcome: Published, on_main: str
) -> None:
    values = published(project_dir, monkeypatch, lambda *a, **k: outcome)
    assert (values["promoted"], values["on_main"]) == ("true", on_main)


def test_a_publish_that_failed_is_not_on_main(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> Published:
        raise BackendError("GitHub API at https://api.github.com does not answer")

    with pytest.raises(BackendError):
        published(project_dir, monkeypatch, refused)
    values = github_output(project_dir / "github_output")
    assert (values["promoted"], values["on_main"]) == ("true", "false")
