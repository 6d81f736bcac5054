"""`wms data ingest` builds on what main's dataset holds, even from a checkout that is behind main."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import TINY_SETTINGS

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo


def test_an_ingest_on_a_checkout_behind_main_is_refused_before_it_drops_promoted_pairs(
    repo: Repo, cli: Callable[..., Any], make_batch: Callable[..., Path]
) -> None:
    repo.write("wms.toml", TINY_SETTINGS + '\n[git]\nbase_branch = "main"\nhost = "github"\n')
    github = ("--set", "git.repository=acme/wms")

    def ingest(name: str, seed: int, *args: str) -> Any:
        return cli(*github, "data", "ingest", make_batch(name, count=4, seed=seed), *args)

    assert ingest("a", 1).exit_code == 0
    repo.commit("dataset v1")
    repo.git("push", "-q", "origin", "main")
    ahead = ingest("b", 2)  # this checkout ahead of main (not pushed yet) holds all of main's pairs
    assert ahead.exit_code == 0, ahead.output
    v2 = ahead.output.strip().splitlines()[-1]
    repo.commit("dataset v2")
    repo.git("push", "-q", "origin", "main")  # main gets v2 (as a promotion merged on GitHub would)
    repo.git("reset", "-q", "--hard", "HEAD~1")  # and this checkout is behind it, at v1
    versions = repo.work / ".wms" / "store" / "versions"
    before = sorted(versions.iterdir())

    stale = ingest("c", 3)
    assert stale.exit_code == 2, stale.output
    assert f"lacks 4 pair(s) of main's version {v2}" in stale.output and "Traceback" not in stale.output
    assert sorted(versions.iterdir()) == before  # nothing was written

    built = ingest("c", 3, "--base", v2)
    assert built.exit_code == 0, built.output
    manifest = json.loads((versions / f"{built.output.strip().splitlines()[-1]}.json").read_text())
    assert manifest["parent"] == v2 and manifest["counts"]["pairs"] == 12


def test_an_ingest_on_a_checkout_behind_a_corrected_mask_is_refused_before_it_drops_the_fix(
    repo: Repo, cli: Callable[..., Any], make_batch: Callable[..., Path], tmp_path: Path
) -> None:
    """Main's version differs from this checkout's only by a corrected mask (a batch that fixed
    one pair, promoted): a version built on the checkout's would put the old mask back."""
    repo.write("wms.toml", TINY_SETTINGS + '\n[git]\nbase_branch = "main"\nhost = "github"\n')
    github = ("--set", "git.repository=acme/wms")
    first = make_batch("a", count=4, seed=1)
    assert cli(*github, "data", "ingest", first).exit_code == 0
    repo.commit("dataset v1")
    repo.git("push", "-q", "origin", "main")
    fix, pid = tmp_path / "fix", "synth_s1_00000"
    for kind, source in (("images", pid), ("masks", "synth_s1_00001")):
        (fix / kind).mkdir(parents=True)
        (fix / kind / f"{pid}.png").write_bytes((first / kind / f"{source}.png").read_bytes())
    fixed = cli(*github, "data", "ingest", fix, "--correct-masks")
    assert fixed.exit_code == 0, fixed.output
    v2 = fixed.output.strip().splitlines()[-1]
    repo.commit("dataset v2: one mask corrected")
    repo.git("push", "-q", "origin", "main")
    repo.git("reset", "-q", "--hard", "HEAD~1")  # this checkout is behind main, at v1
    versions = repo.work / ".wms" / "store" / "versions"
    before = sorted(versions.iterdir())

    stale = cli(*github, "data", "ingest", make_batch("c", count=4, seed=3))
    line = " ".join(stale.output.split())
    assert stale.exit_code == 2, line
    assert f"lacks the corrected masks of 1 ({pid}) of main's version {v2}" in line
    assert "git pull" in line and "Traceback" not in line
    assert sorted(versions.iterdir()) == before  # nothing was written
