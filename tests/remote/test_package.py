"""The wheel the instance runs: reproducible, keyed by its content, its dependencies keyed apart."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT

from wms.remote.package import build_wheel, install_script


def checkout_copy(dst: Path) -> Path:
    dst.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(REPO_ROOT / name, dst / name)
    shutil.copytree(
        REPO_ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return dst


def test_an_unchanged_checkout_builds_the_same_wheel_and_a_change_a_new_one(tmp_path: Path) -> None:
    root = checkout_copy(tmp_path / "checkout")
    first = build_wheel(tmp_path / "a", root=root)
    os.utime(root / "src" / "wms" / "__init__.py", (1e9, 1e9))  # only the file's time changes
    again = build_wheel(tmp_path / "b", root=root)
    assert (again.sha256, again.deps_key) == (first.sha256, first.deps_key)
    with zipfile.ZipFile(first.wheel) as zf:
        names = zf.namelist()
    assert "wms/remote/job.py" in names and not any("__pycache__" in n for n in names)

    (root / "src" / "wms" / "errors.py").write_text(
        (root / "src" / "wms" / "errors.py").read_text() + "\n# x\n"
    )
    changed = build_wheel(tmp_path / "c", root=root)
    assert changed.sha256 != first.sha256 and changed.deps_key == first.deps_key  # code only
    (root / "constraints.txt").write_text((root / "constraints.txt").read_text() + "pip==99\n")
    pins = build_wheel(tmp_path / "d", root=root)
    assert pins.deps_key != first.deps_key  # new pins: a new dependency environment


def test_the_install_script_makes_each_part_once_under_a_lock(tmp_path: Path) -> None:
    bundle = build_wheel(tmp_path / "w")
    script = install_script("/srv/wms", "python3.11", bundle, "/srv/wms/in/w.whl", "/srv/wms/in/c.txt")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid bash
    assert "flock 9" in script
    assert f'if [ ! -f "/srv/wms/envs/{bundle.deps_key}.ok" ]' in script
    assert '-c /srv/wms/in/c.txt "/srv/wms/in/w.whl[s3]"' in script
    assert f'--no-deps --target "/srv/wms/code/{bundle.code_key}"' in script
