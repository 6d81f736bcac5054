"""The code the instance runs: a wheel built from this checkout, installed by its hash.

    <remote_dir>/envs/<deps key>/        a virtual environment with WMS's dependencies
    <remote_dir>/envs/<deps key>.ok      written once that environment is complete
    <remote_dir>/code/<wheel sha256>/    the wheel itself (`pip install --no-deps --target`)

Two keys, because they change at different speeds: the dependencies (the CUDA build of torch
alone is several GB) are keyed by `constraints.txt` and the wheel's declared requirements, so
a code change does not download them again; the code is keyed by the wheel's sha256, and the
job runs with that folder first on PYTHONPATH. The wheel is reproducible (sorted files,
SOURCE_DATE_EPOCH), so an unchanged checkout gives the same hash and installs nothing.

Every new key is a new folder, and a new set of pins a new environment of several GB: an
install also removes the environments, code folders, uploads and job folders that nothing
has used for `KEEP_DAYS` days (using an install touches its `.ok` markers), so the instance's
disk does not fill with every dependency update. pip keeps no cache of its own there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wms.data.hashes import sha256_file
from wms.errors import BackendError, ConfigError, WmsError
from wms.vcs.git import head_commit

if TYPE_CHECKING:
    from wms.remote.ssh import Ssh

# Any fixed time works; 1980-01-01 is the earliest a zip file can hold.
SOURCE_DATE_EPOCH = "315532800"
EXTRAS = "s3"  # the instance reads an s3:// store itself
KEEP_DAYS = 14  # what no run used for this long goes at the next install


@dataclass(frozen=True)
class Bundle:
    """A built wheel and what it is keyed by."""

    wheel: Path
    sha256: str
    deps_key: str
    constraints: Path | None
    commit: str  # the checkout's commit, "+dirty" when it has uncommitted changes

    @property
    def code_key(self) -> str:
        return self.sha256[:16]


def source_checkout() -> Path:
    """The checkout this `wms` runs from (an editable install); ConfigError when there is none."""
    import wms

    root = Path(wms.__file__).resolve().parent.parent.parent  # <root>/src/wms/__init__.py
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "wms").is_dir():
        raise ConfigError(
            "training on the instance builds WMS from its source checkout, and this wms is not "
            "installed from one; clone the repository and install it with `make install` (pip install -e .)"
        )
    return root


def _copy_sources(root: Path, dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(root / "src", dst / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, dst / name)


def build_wheel(out_dir: Path, root: Path | None = None) -> Bundle:
    """Build the wheel of the checkout into `out_dir` (from a clean copy, so no stale build/ leaks in)."""
    root = root or source_checkout()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "src-copy"
    shutil.rmtree(work, ignore_errors=True)
    _copy_sources(root, work)
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    try:
        subprocess.run(
            [*command, "-w", str(out_dir), str(work)], env=env, check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip() or exc.stdout.strip() or "no output").splitlines()[-1]
        raise WmsError(
            f"could not build the wheel of {root}: {last}; "
            "install the build tools with pip install 'wms[ec2]'"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wheels = sorted(out_dir.glob("wms-*.whl"), key=lambda p: p.stat().st_mtime)
    wheel = wheels[-1]
    constraints = root / "constraints.txt"
    return Bundle(
        wheel=wheel,
        sha256=sha256_file(wheel),
        deps_key=deps_key(wheel, constraints if constraints.is_file() else None),
        constraints=constraints if constraints.is_file() else None,
        commit=head_commit(root, dirty_paths=("src", "pyproject.toml")),
    )


def deps_key(wheel: Path, constraints: Path | None) -> str:
    """What the dependency environment depends on: the pins, the requirements, the Python."""
    digest = hashlib.sha256()
    digest.update(f"py{sys.version_info.major}.{sys.version_info.minor} extras={EXTRAS}\n".encode())
    if constraints is not None:
        digest.update(constraints.read_bytes())
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line for line in zf.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")
        ]
    digest.update("\n".join(requires).encode())
    return digest.hexdigest()[:16]


def install_script(
    remote_dir: str, python: str, bundle: Bundle, wheel_path: str, constraints_path: str
) -> str:
    """The shell script that makes the environment and the code folder, each only when missing,
    then removes what no run used for `KEEP_DAYS` days.

    One install at a time per instance (flock): two jobs that start together share the work.
    """
    env = f"{remote_dir}/envs/{bundle.deps_key}"
    code = f"{remote_dir}/code/{bundle.code_key}"
    pins = f"-c {constraints_path}" if bundle.constraints is not None else ""
    return f"""set -eu
export PIP_NO_CACHE_DIR=1  # a copy of every torch wheel in ~/.cache/pip would stay for good
exec 9>"{remote_dir}/install.lock"
flock 9
if [ ! -f "{env}.ok" ]; then
  echo "creating the environment {bundle.deps_key} (the CUDA build of torch alone is several GB; once)"
  rm -rf "{env}"
  "{python}" -m venv "{env}"
  "{env}/bin/python" -m pip install -q --disable-pip-version-check {pins} "{wheel_path}[{EXTRAS}]"
  "{env}/bin/python" -m pip uninstall -q -y wms
  touch "{env}.ok"
fi
if [ ! -f "{code}.ok" ]; then
  echo "installing the code {bundle.code_key} (wheel {bundle.wheel.name})"
  rm -rf "{code}"
  "{env}/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "{code}" "{wheel_path}"
  touch "{code}.ok"
fi
touch "{env}.ok" "{code}.ok"
cd "{remote_dir}"
shopt -s nullglob
for part in envs/* code/*; do
  case $part in *.ok|"envs/{bundle.deps_key}"|"code/{bundle.code_key}") continue ;; esac
  stamp=$part.ok
  [ -e "$stamp" ] || stamp=$part
  if [ -n "$(find "$stamp" -maxdepth 0 -mtime +{KEEP_DAYS})" ]; then
    echo "removing $part, unused for over {KEEP_DAYS} days"
    rm -rf "$part" "$part.ok" || true  # tidying only: it never fails the install
  fi
done
find incoming jobs -mindepth 1 -maxdepth 1 -mtime +{KEEP_DAYS} -exec rm -rf {{}} + 2>/dev/null || true
"""


def install(ssh: Ssh, root: str, bundle: Bundle, python: str, notify: Callable[[str], None]) -> None:
    """Install `bundle` on the instance under `root` (its environment and code, each only when
    missing), showing the installer's lines as they come."""
    host = ssh.target.host
    env_ok, code_ok = f"{root}/envs/{bundle.deps_key}.ok", f"{root}/code/{bundle.code_key}.ok"
    ready = ssh.run(f"test -f {env_ok} && test -f {code_ok} && touch {env_ok} {code_ok}")  # in use: kept
    if ready[0] == 0:
        notify(f"code {bundle.code_key} already installed on {host}")
        return
    incoming = f"{root}/incoming/{bundle.code_key}"
    ssh.check(f"mkdir -p {incoming}", "make the upload folder")
    wheel = f"{incoming}/{bundle.wheel.name}"
    ssh.put(bundle.wheel, wheel)
    constraints = f"{root}/incoming/constraints-{bundle.deps_key}.txt"
    if bundle.constraints is not None:
        ssh.put(bundle.constraints, constraints)
    ssh.write_text(f"{incoming}/install.sh", install_script(root, python, bundle, wheel, constraints))
    lines: list[str] = []

    def show(chunk: bytes) -> None:
        for line in chunk.decode(errors="replace").splitlines():
            lines.append(line)
            notify(f"  {host}: {line}")

    if ssh.stream(f"bash {incoming}/install.sh", show) != 0:
        raise BackendError(
            f"installing WMS on {host} failed: {lines[-1] if lines else 'no output'}; "
            f"look with `wms compute exec -- cat {incoming}/install.sh`"
        )
