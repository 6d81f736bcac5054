"""The wheel the instance runs: reproducible, keyed by its content, its dependencies keyed apart."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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


def test_an_install_removes_what_no_run_used_for_weeks_and_keeps_the_rest(tmp_path: Path) -> None:
    """Each new set of pins is a new environment of several GB on the GPU instance's disk."""
    bundle = build_wheel(tmp_path / "w")
    root = tmp_path / "remote"
    month_ago = time.time() - 30 * 86400
    made = {}
    for part, age in [
        (f"envs/{bundle.deps_key}", month_ago),  # the one this install uses, however old
        (f"code/{bundle.code_key}", month_ago),
        ("envs/0ld0ld0ld0ld0ld0", month_ago),  # last month's pins
        ("envs/2daysago2daysag", time.time() - 2 * 86400),
        ("code/0ldc0de0ldc0de0", month_ago),
        ("jobs/20250101-000000-abcdef", month_ago),
        ("jobs/20250301-000000-abcdef", time.time()),
        ("incoming/0ldc0de0ldc0de0", month_ago),
    ]:
        (root / part).mkdir(parents=True)
        (root / part / "payload").write_bytes(b"x")
        if part.startswith(("envs/", "code/")):
            (root / f"{part}.ok").touch()
            os.utime(root / f"{part}.ok", (age, age))
        os.utime(root / part, (age, age))
        made[part] = age
    (root / "envs" / "half-made").mkdir()  # an install cut short a month ago: no .ok
    os.utime(root / "envs" / "half-made", (month_ago, month_ago))
    script = install_script(str(root), "python3", bundle, str(root / "w.whl"), str(root / "c.txt"))
    subprocess.run(["bash"], input=script, text=True, check=True, capture_output=True)
    left = {f"{p.parent.name}/{p.name}" for p in root.glob("*/*") if not p.name.endswith(".ok")}
    assert left == {
        f"envs/{bundle.deps_key}",
        f"code/{bundle.code_key}",
        "envs/2daysago2daysag",
        "jobs/20250301-000000-abcdef",
    }
    assert not (root / "envs" / "0ld0ld0ld0ld0ld0.ok").exists()
    assert "export PIP_NO_CACHE_DIR=1" in script  # nor a copy of every torch wheel in ~/.cache/pip
