"""Publishing a promotion with the local host: pointers replace the pairs, the branch merges into main."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from wms.config import load_settings
from wms.data import synthesize
from wms.errors import MainMoved, UsageError
from wms.vcs.publish import NOT_ON_DATA_BRANCH, publish_promotion

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

GATE = "| metric | candidate | baseline |\n|---|---|---|\n| dice | 0.91 | 0.88 |\n\n**promote**: dice +0.03"
BRANCH = "data/20260102-030405"


def promoted(repo: Repo) -> None:
    """A data branch as the pipeline leaves it after a promotion: new pointer files beside the pairs."""
    repo.git("switch", "-q", "-c", BRANCH)
    repo.add_pairs("m001", "m002")
    repo.commit("two new pairs")
    repo.write("data/dataset.json", json.dumps({"version": "v2", "counts": {"pairs": 2}}) + "\n")
    repo.write("models/production_current.json", json.dumps({"to_version": "3"}) + "\n")
    repo.write("models/production_history.jsonl", json.dumps({"to_version": "3"}) + "\n")


def test_local_publish_merges_pointers_not_pairs_and_deletes_the_branch(repo: Repo) -> None:
    promoted(repo)

    outcome = publish_promotion(
        load_settings(), branch=None, gate_markdown=GATE, dataset_summary="dataset version `v2`"
    )

    head = repo.out("rev-parse", "--short", "HEAD")
    assert outcome.line == f"merged {BRANCH} into main ({head})" and outcome.merged
    assert repo.out("branch", "--show-current") == "main"
    assert repo.out("branch", "--list", BRANCH) == ""
    tracked = repo.out("ls-files").splitlines()
    assert "data/dataset.json" in tracked
    assert "models/production_current.json" in tracked
    assert "models/production_history.jsonl" in tracked
    assert [p for p in tracked if p.startswith("data/incoming/")] == ["data/incoming/.gitkeep"]
    assert len(repo.out("rev-list", "--parents", "-n", "1", "HEAD").split()) == 3  # a merge commit
    message = repo.out("log", "-1", "--format=%B")
    assert "model version 3 to production" in message
    assert "**promote**: dice +0.03" in message
    assert "dataset version `v2`" in message


def test_merged_main_passes_the_hook(repo: Repo, cli: Callable[..., object]) -> None:
    # The pairs came and went inside the merged history: main only gains pointer files.
    assert cli("hooks", "install").exit_code == 0
    promoted(repo)
    publish_promotion(load_settings(), branch=BRANCH, gate_markdown=GATE, dataset_summary="v2")

    pushed = repo.push("origin", "main")

    assert pushed.returncode == 0, pushed.stderr
    assert repo.remote_branches()["main"] == repo.out("rev-parse", "HEAD")


def test_not_on_a_data_branch_publishes_nothing(repo: Repo) -> None:
    before = repo.out("rev-parse", "HEAD")
    outcome = publish_promotion(load_settings(), branch=None, gate_markdown=GATE, dataset_summary="")
    assert outcome.line == NOT_ON_DATA_BRANCH
    assert repo.out("rev-parse", "HEAD") == before


def test_a_project_that_is_no_git_repository_publishes_nothing(project_dir: object) -> None:
    outcome = publish_promotion(load_settings(), branch=None, gate_markdown=GATE, dataset_summary="")
    assert outcome.line == NOT_ON_DATA_BRANCH


def test_another_branch_is_published_from_a_worktree_with_main_taken_in(repo: Repo, tmp_path: Path) -> None:
    # CI: the checkout holds main's code; the data branch is only ever a worktree of its own.
    repo.git("switch", "-q", "-c", BRANCH)
    repo.add_pairs("m001", "m002")
    branch_tip = repo.commit("two new pairs")
    repo.git("switch", "-q", "main")
    repo.write("models/production_history.jsonl", json.dumps({"to_version": "1"}) + "\n")
    repo.commit("main moved on after the branch was cut")
    files = tmp_path / "promotion"
    (files / "data").mkdir(parents=True)
    (files / "models").mkdir()
    (files / "data" / "dataset.json").write_text(json.dumps({"version": "v2"}) + "\n")
    (files / "models" / "production_current.json").write_text(json.dumps({"to_version": "2"}) + "\n")
    history = [json.dumps({"to_version": "1"}), json.dumps({"to_version": "2"})]
    (files / "models" / "production_history.jsonl").write_text("\n".join(history) + "\n")

    outcome = publish_promotion(
        load_settings(), branch=BRANCH, sha=branch_tip, files=files, gate_markdown=GATE, dataset_summary="v2"
    )

    assert outcome.line.startswith(f"merged {BRANCH} into main")
    assert repo.out("branch", "--show-current") == "main"
    assert json.loads((repo.work / "models" / "production_current.json").read_text())["to_version"] == "2"
    assert (repo.work / "models" / "production_history.jsonl").read_text().splitlines() == history
    assert not (repo.work / "data" / "incoming" / "images" / "m001.png").exists()
    assert repo.out("worktree", "list").count("\n") == 0  # the temporary worktree is gone


def test_a_branch_that_is_no_data_branch_is_refused(repo: Repo) -> None:
    with pytest.raises(UsageError, match="not a data branch"):
        publish_promotion(load_settings(), branch="feature", gate_markdown=GATE, dataset_summary="")


def test_detached_checkout_is_named_after_the_branch(repo: Repo) -> None:
    # actions/checkout may leave HEAD detached at the pushed commit.
    promoted(repo)
    repo.commit("pointers written")
    repo.git("checkout", "-q", "--detach")
    repo.git("branch", "-q", "-D", BRANCH)

    outcome = publish_promotion(load_settings(), branch=BRANCH, gate_markdown=GATE, dataset_summary="v2")

    assert outcome.line.startswith(f"merged {BRANCH} into main")


def test_cli_publish_and_local_validation_comment(repo: Repo, cli: Callable[..., object]) -> None:
    promoted(repo)
    gate = repo.write(".wms/gate.md", GATE)

    result = cli("vcs", "publish", "--gate-report", gate)

    assert result.exit_code == 0, result.output
    assert f"merged {BRANCH} into main" in result.output
    assert "dataset version `v2`" in repo.out("log", "-1", "--format=%B")

    report = repo.write(".wms/validation.md", "| missing_mask | images/a.png |")
    sha = repo.out("rev-parse", "HEAD")
    commented = cli("vcs", "comment-validation", "--report", report)
    assert commented.exit_code == 0, commented.output
    saved = repo.work / ".wms" / "reports" / f"commit-{sha[:12]}.md"
    assert "missing_mask" in saved.read_text()


def test_cli_publish_with_a_missing_report_says_so(repo: Repo, cli: Callable[..., object]) -> None:
    result = cli("vcs", "publish", "--gate-report", "nowhere.md")
    assert result.exit_code == 2
    assert "cannot read the gate report nowhere.md" in result.output


def _promotion(folder: Path, dataset: dict[str, str], history: list[str]) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "data" / "dataset.json").write_text(json.dumps(dataset) + "\n")
    (folder / "models" / "production_current.json").write_text(json.dumps({"to_version": history[-1]}) + "\n")
    lines = [json.dumps({"to_version": v}) for v in history]
    (folder / "models" / "production_history.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_a_promotion_built_on_an_older_main_is_refused_not_published(repo: Repo, tmp_path: Path) -> None:
    """Another batch's promotion reached main while this run trained: publishing would undo it."""
    repo.write("data/dataset.json", json.dumps({"version": "v1"}) + "\n")
    repo.write("models/production_history.jsonl", json.dumps({"to_version": "1"}) + "\n")
    repo.commit("main at v1")
    repo.git("switch", "-q", "-c", BRANCH)
    repo.add_pairs("m001")
    tip = repo.commit("a new pair")
    repo.git("switch", "-q", "main")
    repo.write("data/dataset.json", json.dumps({"version": "v2", "parent": "v1"}) + "\n")
    repo.write("models/production_history.jsonl", "".join(json.dumps({"to_version": v}) + "\n" for v in "12"))
    repo.commit("another batch promoted")
    publish = {"branch": BRANCH, "sha": tip, "gate_markdown": GATE, "dataset_summary": "v3"}

    stale = _promotion(tmp_path / "stale", {"version": "v3", "parent": "v1"}, ["1", "3"])
    with pytest.raises(MainMoved, match="moved to version v2 while this run merged onto v1"):
        publish_promotion(load_settings(), files=stale, **publish)
    assert repo.out("rev-parse", BRANCH) == tip  # nothing committed on the branch
    assert json.loads((repo.work / "data" / "dataset.json").read_text())["version"] == "v2"

    # On main's dataset, but not on its ledger (production moved by hand meanwhile): refused too.
    unaware = _promotion(tmp_path / "unaware", {"version": "v3", "parent": "v2"}, ["1", "3"])
    with pytest.raises(MainMoved, match="production moved while it trained"):
        publish_promotion(load_settings(), files=unaware, **publish)

    current = _promotion(tmp_path / "current", {"version": "v3", "parent": "v2"}, ["1", "2", "3"])
    assert publish_promotion(load_settings(), files=current, **publish).line.startswith(f"merged {BRANCH}")
    assert json.loads((repo.work / "data" / "dataset.json").read_text())["version"] == "v3"


def test_the_validation_comment_names_every_file_to_fix_and_what_to_do(
    repo: Repo, cli: Callable[..., object]
) -> None:
    """The comment is where a labeller on GitHub learns why the batch was refused."""
    batch = repo.work / "incoming"
    ids = synthesize(batch, 6, size=64, seed=3)
    for stem in ids[:3]:  # three masks saved grey, not 0/255
        Image.new("L", (64, 64), 128).save(batch / f"masks/{stem}.png")
    report = repo.work / ".wms/validation.md"
    checked = cli("data", "validate", batch, "--size", "64", "--markdown", report)
    assert checked.exit_code == 1

    assert cli("vcs", "comment-validation", "--report", report).exit_code == 0

    sha = repo.out("rev-parse", "HEAD")
    comment = (repo.work / ".wms" / "reports" / f"commit-{sha[:12]}.md").read_text()
    for stem in ids[:3]:
        assert f"masks/{stem}.png" in comment
    assert "push to main again" in comment and "data/incoming" in comment
