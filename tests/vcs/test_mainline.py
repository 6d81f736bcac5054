"""Main as a run reads it: with the GitHub host, the remote's main, fetched when read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tests.vcs.conftest import git

from wms.config import load_settings
from wms.vcs.mainline import MainLine

if TYPE_CHECKING:
    from tests.vcs.conftest import Repo


def test_a_checkout_of_main_is_not_main_when_main_lives_on_github(repo: Repo, tmp_path: Path) -> None:
    """A workflow checks main out, then waits and trains for hours while other promotions merge."""
    repo.write("wms.toml", '[git]\nbase_branch = "main"\nhost = "github"\nrepository = "acme/wms"\n')
    repo.write("data/dataset.json", json.dumps({"version": "v1"}) + "\n")
    repo.commit("main at v1")
    repo.push("-q", "origin", "main")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(repo.remote), str(other))
    (other / "data" / "dataset.json").write_text(json.dumps({"version": "v2"}) + "\n")
    git(other, "-c", "user.name=B", "-c", "user.email=b@example.com", "commit", "-qam", "another batch")
    git(other, "push", "-q", "origin", "main")

    main = MainLine(load_settings())
    pointer = main.dataset_pointer()
    assert pointer is not None and pointer["version"] == "v2"  # the checkout still says v1
    assert main.where.startswith("origin/main at ")

    repo.write("wms.toml", '[git]\nbase_branch = "main"\nhost = "local"\n')
    local = MainLine(load_settings()).dataset_pointer()  # the local host merges here: the checkout is main
    assert local is not None and local["version"] == "v1"


def test_a_new_file_in_the_shipped_sources_marks_the_commit_dirty(repo: Repo) -> None:
    """The wheel for the instance ships every file under src/: a run's commit tag must say so."""
    from wms.vcs.git import head_commit

    head = repo.out("rev-parse", "HEAD")
    assert head_commit(repo.work, dirty_paths=("src",)) == head
    repo.write("src/new_module.py", "x = 1\n")  # not added to git yet
    assert head_commit(repo.work, dirty_paths=("src",)) == f"{head}+dirty"
    repo.write(".gitignore", ".wms/\nsrc/new_module.py\n")  # a file git ignores (build output) does not count
    assert head_commit(repo.work, dirty_paths=("src",)) == head
