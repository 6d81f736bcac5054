"""The pre-push hook, installed in a real clone and run by real `git push`es to a bare remote."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wms.vcs.git import Git
from wms.vcs.hook import PushedRef, parse_push_lines, pre_push

ROOT = Path(__file__).resolve().parents[2]

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

DATA_BRANCH = re.compile(r"data/\d{8}-\d{6}")


@pytest.fixture
def hooked(repo: Repo, cli: Callable[..., object]) -> Repo:
    result = cli("hooks", "install")
    assert result.exit_code == 0, result.output
    return repo


def test_data_push_to_main_goes_to_a_data_branch_and_main_stays(hooked: Repo) -> None:
    before = hooked.remote_branches()["main"]
    hooked.add_pairs("m001", "m002")
    sha = hooked.commit("two new pairs")

    pushed = hooked.push("origin", "main")

    assert pushed.returncode != 0  # the push to main is stopped
    branches = hooked.remote_branches()
    assert branches["main"] == before
    [branch] = [b for b in branches if b != "main"]
    assert DATA_BRANCH.fullmatch(branch)
    assert branches[branch] == sha  # the very same commit
    assert f"pushed {sha[:7]} to {branch} on origin" in pushed.stderr
    assert "follow the pipeline" in pushed.stderr
    assert "git push --no-verify" in pushed.stderr


def test_data_mixed_with_code_is_refused_with_a_way_to_split(hooked: Repo) -> None:
    hooked.add_pairs("m001")
    hooked.write("src/app.py", "print('changed')\n")
    hooked.commit("data and code together")

    pushed = hooked.push("origin", "main")

    assert pushed.returncode != 0
    assert list(hooked.remote_branches()) == ["main"]  # no data branch either
    assert "mixes new data" in pushed.stderr
    assert "src/app.py" in pushed.stderr
    assert "split them" in pushed.stderr


def test_data_and_code_in_separate_commits_of_one_push_are_refused(hooked: Repo) -> None:
    hooked.write("src/app.py", "print('changed')\n")
    hooked.commit("code")
    hooked.add_pairs("m001")
    hooked.commit("data")

    pushed = hooked.push("origin", "main")

    assert pushed.returncode != 0
    assert list(hooked.remote_branches()) == ["main"]
    assert "mixes new data" in pushed.stderr


def test_code_only_push_passes_untouched(hooked: Repo) -> None:
    hooked.write("src/app.py", "print('changed')\n")
    sha = hooked.commit("code only")

    pushed = hooked.push("origin", "main")

    assert pushed.returncode == 0, pushed.stderr
    assert hooked.remote_branches() == {"main": sha}


def test_data_on_another_branch_passes_untouched(hooked: Repo) -> None:
    hooked.git("switch", "-q", "-c", "feature")
    hooked.add_pairs("m001")
    sha = hooked.commit("data on a feature branch")

    pushed = hooked.push("origin", "feature")

    assert pushed.returncode == 0, pushed.stderr
    assert hooked.remote_branches()["feature"] == sha
    assert len(hooked.remote_branches()) == 2


def test_no_verify_bypasses_the_hook(hooked: Repo) -> None:
    hooked.add_pairs("m001")
    sha = hooked.commit("data straight to main")

    pushed = hooked.push("--no-verify", "origin", "main")

    assert pushed.returncode == 0, pushed.stderr
    assert hooked.remote_branches() == {"main": sha}


def test_removing_incoming_files_is_not_new_data(hooked: Repo) -> None:
    hooked.add_pairs("m001")
    hooked.commit("data")
    assert hooked.push("--no-verify", "origin", "main").returncode == 0
    hooked.git("rm", "-q", "-r", "data/incoming/images", "data/incoming/masks")
    hooked.write("data/dataset.json", '{"version": "v1"}\n')
    sha = hooked.commit("pointer instead of pairs")

    pushed = hooked.push("origin", "main")

    assert pushed.returncode == 0, pushed.stderr
    assert hooked.remote_branches() == {"main": sha}


def test_install_keeps_a_foreign_hook_unless_forced(repo: Repo, cli: Callable[..., object]) -> None:
    hook = repo.work / ".git" / "hooks" / "pre-push"
    hook.write_text("#!/bin/sh\necho mine\n")

    refused = cli("hooks", "install")
    assert refused.exit_code == 2
    assert "--force" in refused.output
    assert hook.read_text() == "#!/bin/sh\necho mine\n"

    forced = cli("hooks", "install", "--force")
    assert forced.exit_code == 0, forced.output
    assert "wms hook pre-push" in hook.read_text()
    assert cli("hooks", "uninstall").exit_code == 0
    assert not hook.exists()


def test_install_honours_core_hooks_path(repo: Repo, cli: Callable[..., object]) -> None:
    repo.git("config", "core.hooksPath", ".githooks")
    assert cli("hooks", "install").exit_code == 0
    assert (repo.work / ".githooks" / "pre-push").is_file()


def test_first_push_of_a_new_base_branch_is_judged_against_what_the_remote_has(repo: Repo) -> None:
    # A remote sha of zeros: the branch is new there, so only commits no remote ref holds count.
    repo.add_pairs("m001")
    sha = repo.commit("data")
    refs = parse_push_lines(f"refs/heads/main {sha} refs/heads/trunk {'0' * 40}\n")
    outcome = pre_push(
        Git(repo.work),
        remote="origin",
        url=str(repo.remote),
        refs=refs,
        incoming="data/incoming",
        base_branch="trunk",
        branch_prefix="data/",
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert outcome.exit_code == 1
    assert outcome.data_branch == "data/20260102-030405"
    assert repo.remote_branches()["data/20260102-030405"] == sha


def test_github_remote_gets_a_link_to_the_actions_runs(repo: Repo) -> None:
    repo.add_pairs("m001")
    sha = repo.commit("data")
    base = repo.out("rev-parse", "origin/main")
    outcome = pre_push(
        Git(repo.work),
        remote="origin",
        url="git@github.com:acme/meters.git",
        refs=[PushedRef("refs/heads/main", sha, "refs/heads/main", base)],
        incoming="data/incoming",
        base_branch="main",
        branch_prefix="data/",
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert "https://github.com/acme/meters/actions?query=branch%3Adata%2F20260102-030405" in outcome.message
    # The training runs from main (workflow_run), so a filter on the data branch never lists it.
    training = "the run 'Train data/20260102-030405' on https://github.com/acme/meters/actions/workflows/"
    assert training + "training-data-pipeline.yaml" in outcome.message
    run_name = (ROOT / ".github/workflows/training-data-pipeline.yaml").read_text()
    assert "\nrun-name: Train ${{ github.event.workflow_run.head_branch }}\n" in run_name


def test_hook_file_runs_this_interpreter(repo: Repo, cli: Callable[..., object]) -> None:
    cli("hooks", "install")
    text = (repo.work / ".git" / "hooks" / "pre-push").read_text()
    assert "-m wms hook pre-push" in text
    assert Path(repo.work / ".git" / "hooks" / "pre-push").stat().st_mode & 0o111


def test_a_wms_package_in_the_checked_out_branch_does_not_run_in_the_hook(hooked: Repo) -> None:
    hooked.add_pairs("m001")
    sha = hooked.commit("a new pair")
    # Another person's branch, checked out to look at it, carries its own `wms` at the root.
    hooked.git("switch", "-q", "-c", "look")
    evil = "import pathlib; pathlib.Path('ran.txt').write_text('branch code ran')\n"
    hooked.write("wms/__init__.py", evil)
    hooked.write("wms/__main__.py", evil)
    hooked.commit("a package of its own")

    pushed = hooked.push("origin", "main")

    assert not (hooked.work / "ran.txt").exists()
    assert f"pushed {sha[:7]} to data/" in pushed.stderr  # the installed hook ran, and did its work


def test_a_data_branch_the_remote_refuses_is_reported_without_advice_to_bypass(hooked: Repo) -> None:
    """A failed push of the data branch says why and to push again, never to push the data to main."""
    refuse = hooked.remote / "hooks/pre-receive"
    refuse.write_text(
        '#!/bin/sh\nwhile read old new ref; do case "$ref" in refs/heads/data/*)\n'
        "  echo 'data branches are closed for maintenance' >&2; exit 1;; esac; done\n"
    )
    refuse.chmod(0o755)
    before = hooked.remote_branches()
    hooked.add_pairs("m001")
    hooked.commit("one new pair")

    pushed = hooked.push("origin", "main")

    assert pushed.returncode != 0
    assert hooked.remote_branches() == before  # nothing went anywhere, main included
    assert "data branches are closed for maintenance" in pushed.stderr  # the remote's reason
    assert "push again" in pushed.stderr
    assert "--no-verify" not in pushed.stderr  # that would put the data on main

    refuse.unlink()
    again = hooked.push("origin", "main")
    assert [b for b in hooked.remote_branches() if b != "main"], again.stderr


def test_pushing_the_same_data_again_names_its_branch_and_starts_no_second_run(hooked: Repo) -> None:
    """git says "failed to push some refs" after every redirect, so a labeller may well push again."""
    hooked.add_pairs("m001", "m002")
    sha = hooked.commit("two new pairs")
    first = hooked.push("origin", "main")
    [branch] = [b for b in hooked.remote_branches() if b != "main"]

    again = hooked.push("origin", "main")

    assert again.returncode != 0
    assert [b for b in hooked.remote_branches() if b != "main"] == [branch]  # no second branch
    assert f"{sha[:7]} is {branch} on origin" in again.stderr, first.stderr
    assert "nothing was pushed again" in again.stderr
