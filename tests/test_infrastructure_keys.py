"""The package keys the bootstrap trusts are the ones it pins: lib.sh's key_fingerprints and nvidia.sh.

nvidia.sh downloads NVIDIA's container-toolkit key and hands it to apt as the signer of a new
source. A key served in its place (a changed download) would let whoever serves it sign the
packages apt then installs as root; the script compares the key's fingerprint with the one
NVIDIA documents first. The keys here are made by gpg for the test, in homes of their own.
The AWS CLI comes from its snap, whose signature snapd checks, never from an unchecked zip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.test_infrastructure_scripts import SCRIPTS, _executable, _need

NVIDIA_KEY = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"  # what NVIDIA documents; nvidia.sh pins it
MakeKey = Callable[[str], tuple[Path, str]]
KEYRING = Path("/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg")


@pytest.fixture
def make_key(tmp_path: Path) -> Iterator[MakeKey]:
    """make_key(name) -> (armored public key file, its fingerprint); gpg's agents are stopped after.

    Each gpg home is a short folder of the system's temporary one, removed after: gpg-agent puts
    its sockets there, and under pytest's own folders (pytest-of-USER/pytest-NNN/popen-gwN/<test>)
    the home's path passes the 87 characters past which gpg-agent fails to start.
    """
    _need("gpg", "gpgconf")
    homes: list[Path] = []

    def make(name: str) -> tuple[Path, str]:
        home = Path(tempfile.mkdtemp(prefix=f"gpg-{name}-"))  # mode 0700
        homes.append(home)
        env = {**os.environ, "GNUPGHOME": str(home)}

        def gpg(*args: str) -> str:
            done = subprocess.run(
                ["gpg", "--batch", *args], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        gpg("--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>", "ed25519", "sign", "never")
        listing = gpg("--with-colons", "--list-keys")
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        key = tmp_path / f"{name}.asc"
        key.write_text(gpg("--armor", "--export", fingerprint))
        return key, fingerprint

    yield make
    for home in homes:
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _fingerprints(key: Path) -> list[str]:
    done = subprocess.run(
        ["bash", "-c", f'. "{SCRIPTS / "lib.sh"}" && key_fingerprints "$1"', "-", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_key_fingerprints_names_each_primary_key_of_a_key_file(make_key: MakeKey, tmp_path: Path) -> None:
    first, first_fpr = make_key("first")
    second, second_fpr = make_key("second")
    assert _fingerprints(first) == [first_fpr]
    both = tmp_path / "both.asc"
    both.write_text(first.read_text() + second.read_text())
    assert _fingerprints(both) == [first_fpr, second_fpr]
    page = tmp_path / "page.html"
    page.write_text("<html>not a key</html>")
    assert _fingerprints(page) == []


# nvidia.sh on a machine whose driver works and which lacks the container toolkit: `curl` serves
# $SERVED for any URL, apt-get and gpg's --dearmor only say they were called.
FAKE_CURL = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
cat "$SERVED" > "$out"
"""


@pytest.mark.skipif(KEYRING.exists(), reason=f"{KEYRING} exists here: the test could not see it written")
def test_nvidia_sh_trusts_no_package_key_but_nvidia_s(make_key: MakeKey, tmp_path: Path) -> None:
    served, served_fpr = make_key("impostor")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "curl", FAKE_CURL)
    _executable(bin_dir / "nvidia-smi", "#!/bin/sh\necho 'Tesla T4, 550.54.15'\n")
    _executable(bin_dir / "apt-get", '#!/bin/sh\necho "apt-get $*" >> "$CALLS"\n')
    calls = tmp_path / "calls"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",  # no nvidia-ctk: the toolkit is to be installed
        "SERVED": str(served),
        "CALLS": str(calls),
        "TMPDIR": str(tmp_path),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "nvidia.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "package key" in line]
    assert f"fingerprint(s) {served_fpr}, expected {NVIDIA_KEY}" in line
    assert "the container toolkit is not installed" in line
    assert not calls.exists() and not KEYRING.exists()  # apt was told nothing, no keyring written
    assert NVIDIA_KEY in (SCRIPTS / "nvidia.sh").read_text()


def _base_without_aws(tmp_path: Path, *, snap: bool) -> tuple[subprocess.CompletedProcess[str], Path]:
    """base.sh on a node with no `aws` (the serving node's Ubuntu image), snap there or not."""
    if any(Path(folder, "aws").exists() for folder in ("/usr/bin", "/bin")):
        pytest.skip("this machine has aws in /usr/bin: base.sh would not install it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    record = '#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n'
    _executable(bin_dir / "curl", record)  # a download of the zip would show here
    _executable(bin_dir / "dpkg-query", "#!/bin/sh\necho 'install ok installed'\n")
    if snap:
        _executable(bin_dir / "snap", record)
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "CALLS": str(calls),
        "APT_PACKAGES": "curl",
        "RUNNER_USER": "root",
        "AWS_REGION": "eu-central-1",
        "ENVIRONMENT_FILE": str(tmp_path / "environment"),
        "AWS_COMMAND": str(tmp_path / "aws"),
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "base.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    return done, calls


def test_the_aws_cli_comes_from_its_signed_snap_and_services_find_it(tmp_path: Path) -> None:
    done, calls = _base_without_aws(tmp_path, snap=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls.read_text().splitlines() == [
        "snap wait system seed.loaded",  # a first boot's seeding done, or snap refuses the install
        "snap install aws-cli --classic",
    ]  # no curl: nothing downloaded outside snapd's checks
    # systemd's services (the MLflow backup, the lease guard) have no /snap/bin on their PATH.
    command = tmp_path / "aws"
    assert command.stat().st_mode & 0o111
    assert command.read_text().splitlines()[-1] == 'exec /snap/bin/aws "$@"'


def test_a_node_with_neither_aws_nor_snap_says_so_and_downloads_nothing(tmp_path: Path) -> None:
    done, calls = _base_without_aws(tmp_path, snap=False)
    assert done.returncode == 1
    (line,) = [line for line in done.stdout.splitlines() if "aws" in line]
    assert "no aws and no snap" in line and "serving_ami_id" in line
    assert not calls.exists() and not (tmp_path / "aws").exists()
