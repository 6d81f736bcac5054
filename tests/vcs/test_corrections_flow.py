"""A data branch cut from main before another labeller corrected a mask does not undo that fix.

Real git with the local host and a folder store: main at dataset version v1, labeller A's data
branch cut there, labeller B's correction of one mask in v2 on main, then A's batch taken from
git (`wms vcs take-incoming`) and run as CI runs it (`wms pipeline run --branch --sha`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.conftest import TINY_SETTINGS

from wms.config import load_settings
from wms.data.store import open_store
from wms.data.synth import synthesize

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

pytestmark = pytest.mark.slow
BRANCH = "data/20261126-120000"
PID = "synth_s1_00000"
GITHUB = ("--set", "git.repository=acme/wms")  # never reached: the run stops at its merge


def ingested(cli: Callable[..., Any], *args: object) -> str:
    """`wms data ingest ARGS` on main; the new version's id."""
    done = cli(*GITHUB, "data", "ingest", *args)
    assert done.exit_code == 0, done.output
    return str(done.output.strip().splitlines()[-1])


def b_fixes_the_mask(first: Path, fix: Path) -> Path:
    """Labeller B's correction, in folder `fix`: the pair PID's photo with another pair's mask."""
    for kind, source in (("images", PID), ("masks", "synth_s1_00001")):
        (fix / kind).mkdir(parents=True)
        (fix / kind / f"{PID}.png").write_bytes((first / kind / f"{source}.png").read_bytes())
    return fix


@pytest.mark.parametrize("host", ["local", "github"])  # main read from the working tree, or origin/main
@pytest.mark.parametrize(
    ("a_mask", "why"),
    [
        # A's folder was pulled from v1 (or still holds the batch main took in) and pushed whole
        ("synth_s1_00000", "its mask is the one version {v1} held"),
        # A fixed the same mask on v1, differently from B
        ("synth_s1_00002", "corrected since version {v1}, where this batch left main"),
    ],
)
def test_a_batch_cut_before_a_mask_was_corrected_on_main_is_refused_and_the_fix_stays(
    repo: Repo, cli: Callable[..., Any], tmp_path: Path, a_mask: str, why: str, host: str
) -> None:
    repo.write("wms.toml", TINY_SETTINGS + f'\n[git]\nbase_branch = "main"\nhost = "{host}"\n')
    repo.commit("tiny settings for the test")
    first = tmp_path / "first"
    synthesize(first, count=30, size=64, seed=1)
    v1 = ingested(cli, first)
    repo.commit("dataset v1", "data/dataset.json")
    repo.git("push", "-q", "origin", "main")

    repo.git("switch", "-q", "-c", BRANCH)  # labeller A: the pair with its mask, and a new pair
    synthesize(repo.work / "data" / "incoming", count=1, size=64, seed=2)
    repo.write(f"data/incoming/images/{PID}.png", (first / "images" / f"{PID}.png").read_bytes())
    repo.write(f"data/incoming/masks/{PID}.png", (first / "masks" / f"{a_mask}.png").read_bytes())
    sha = repo.commit("A's batch")

    repo.git("switch", "-q", "main")  # meanwhile labeller B corrects the pair's mask: v2 on main
    fix = b_fixes_the_mask(first, tmp_path / "fix")
    v2 = ingested(cli, fix, "--correct-masks")
    repo.commit("dataset v2: B's fix", "data/dataset.json")
    repo.git("push", "-q", "origin", "main")

    taken = tmp_path / "taken"
    assert cli(*GITHUB, "vcs", "take-incoming", "--sha", sha, "--out", taken).exit_code == 0
    result = cli(*GITHUB, "pipeline", "run", "--new-data", taken, "--branch", BRANCH, "--sha", sha)
    line = " ".join(result.output.split())
    assert result.exit_code == 1, line
    assert f"version {v2} has corrected since: {PID} ({why.format(v1=v1)})" in line
    assert f"pull the current version (`wms data pull {v2} DIR`), fix their masks on top of it" in line

    store = open_store(load_settings(start=repo.work))
    assert [v.id for v in store.versions()] == [v1, v2]  # nothing written
    fixed = hashlib.sha256((fix / "masks" / f"{PID}.png").read_bytes()).hexdigest()
    assert store.manifest(v2)["pairs"][PID]["mask"]["sha256"] == fixed
    assert json.loads((repo.work / "data" / "dataset.json").read_text())["version"] == v2
    record = json.loads((repo.work / ".wms" / "store" / "batches" / f"{sha}.json").read_text())
    assert record["status"] == "rejected", record


def test_a_batch_whose_head_commit_names_a_pair_in_restore_masks_puts_its_older_mask_back(
    repo: Repo, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's correction turned out wrong: A, on main as it is now, sends the pair's first mask back
    and says so in the commit message; refused without that line, taken with it."""
    repo.write("wms.toml", TINY_SETTINGS + '\n[git]\nbase_branch = "main"\nhost = "local"\n')
    repo.commit("tiny settings for the test")
    first = tmp_path / "first"
    synthesize(first, count=30, size=64, seed=1)
    v1 = ingested(cli, first)
    fix = b_fixes_the_mask(first, tmp_path / "fix")
    v2 = ingested(cli, fix, "--correct-masks")
    repo.commit("dataset v2: B's fix", "data/dataset.json")
    repo.git("push", "-q", "origin", "main")

    repo.git("switch", "-q", "-c", BRANCH)
    for kind in ("images", "masks"):
        repo.write(f"data/incoming/{kind}/{PID}.png", (first / kind / f"{PID}.png").read_bytes())
    plain = repo.commit("A's batch: the first mask back")
    repo.git("commit", "-q", "--amend", "-m", f"A's batch: the first mask back\n\nRestore-masks: {PID}")
    named = repo.out("rev-parse", "HEAD")

    monkeypatch.setenv("WMS_FAULT_STAGE", "start_compute")  # the versions are written by then
    outcomes = {}
    for sha in (plain, named):
        taken = tmp_path / f"taken-{sha[:8]}"
        assert cli(*GITHUB, "vcs", "take-incoming", "--sha", sha, "--out", taken).exit_code == 0
        result = cli(*GITHUB, "pipeline", "run", "--new-data", taken, "--branch", BRANCH, "--sha", sha)
        outcomes[sha] = " ".join(result.output.split())
    assert f"{PID} (its mask is the one version {v1} held)" in outcomes[plain]
    assert "`Restore-masks: ID, …`" in outcomes[plain]
    assert "1 mask(s) corrected (1 put back to an earlier mask)" in outcomes[named], outcomes[named]

    store = open_store(load_settings(start=repo.work))
    [v3] = [v for v in store.versions() if v.id not in (v1, v2)]  # v1's content, but a child of v2
    assert v3.parent == v2
    assert store.manifest(v3.id)["pairs"] == store.manifest(v1)["pairs"]
