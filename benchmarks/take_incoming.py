"""How long `wms vcs take-incoming` takes to write a batch: one git process per file vs one batch.

    PYTHONPATH=src .venv/bin/python benchmarks/take_incoming.py [--pairs 200] [--size 20000] [--repeat 1]

Builds a data branch of N synthetic pairs (random bytes: git does not look inside), pushes it to
a bare repository served over HTTP on loopback (tests/git_http.py: git's own http-backend behind
Basic auth, the token passed as CI passes it, through GIT_CONFIG_* variables), and for each way
of taking the batch makes a fresh `--filter=blob:none` clone, as CI's checkout does, and times
the take alone. "per file" is a copy of the old loop (one `git cat-file blob` per file, each
missing blob fetched lazily by git, one round trip each); "one batch" is `write_incoming` (one
fetch of all missing blobs, then one `git cat-file --batch`). A second row does the same in a
full clone, where nothing is fetched. Loopback has no network latency: on GitHub each round trip
also pays the network's, so the blob-less ratio there is larger. The server is stopped and
every file removed at the end; the fastest of --repeat rounds is shown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.git_http: the served repository the tests use

from tests.git_http import serve_git  # noqa: E402

from wms.vcs.git import Git, token_env  # noqa: E402
from wms.vcs.guard import write_incoming  # noqa: E402

TOKEN = "bench-token"
BRANCH = "data/bench"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def data_branch(tmp: Path, pairs: int, size: int) -> tuple[Path, str]:
    """A bare repository whose BRANCH adds `pairs` image+mask pairs under data/incoming; its commit."""
    work, bare = tmp / "work", tmp / "served" / "meters.git"
    git(tmp, "init", "-q", "-b", "main", str(work))
    git(tmp, "init", "-q", "--bare", "-b", "main", str(bare))
    git(bare, "config", "uploadpack.allowFilter", "true")
    git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    (work / "data" / "incoming").mkdir(parents=True)
    (work / "data" / "incoming" / ".gitkeep").write_text("")
    git(work, "add", "-A")
    git(work, "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "main")
    git(work, "switch", "-q", "-c", BRANCH)
    for kind in ("images", "masks"):
        folder = work / "data" / "incoming" / kind
        folder.mkdir()
        for i in range(pairs):
            (folder / f"p{i:05}.png").write_bytes(os.urandom(size))
    git(work, "add", "-A")
    git(work, "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "pairs")
    git(work, "push", "-q", str(bare), "main", BRANCH)
    return bare, git(work, "rev-parse", "HEAD")


def per_file(root: Path, sha: str, out: Path) -> None:
    """The old loop, kept here only to compare with: `ls-tree`, then one `git cat-file blob` per file."""
    prefix = "data/incoming/"
    listing = git(root, "ls-tree", "-r", "-z", "--full-tree", sha, "--", prefix.rstrip("/"))
    for entry in filter(None, listing.split("\0")):
        meta, _, path = entry.partition("\t")
        blob = meta.split()[2]
        relative = Path(path[len(prefix) :])
        if relative.name.startswith("."):
            continue
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["git", "cat-file", "blob", blob], cwd=root, capture_output=True, check=True)
        target.write_bytes(done.stdout)


def one_batch(root: Path, sha: str, out: Path) -> None:
    write_incoming(Git(root), sha, "data/incoming", out)


def timed(
    take: Callable[[Path, str, Path], None],
    source: str,
    sha: str,
    scratch: Path,
    requests: list[str],
    lazy: bool,
) -> tuple[float, int, dict[str, bytes]]:
    """Seconds to take the batch from a fresh clone of `source`, the fetches it made, what it wrote."""
    clone = scratch / "clone"
    git(
        scratch, "clone", "-q", "--no-checkout", *(["--filter=blob:none"] if lazy else []), source, str(clone)
    )
    requests.clear()
    started = time.perf_counter()
    take(clone, sha, scratch / "out")
    seconds = time.perf_counter() - started
    fetches = sum("info/refs?service=git-upload-pack" in r for r in requests)
    files = {
        p.relative_to(scratch / "out").as_posix(): p.read_bytes() for p in (scratch / "out").rglob("*.png")
    }
    return seconds, fetches, files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=20_000, help="bytes in each image and mask")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.pairs} pairs ({2 * args.pairs} files of {args.size} bytes), fastest of {args.repeat}")
    header = f"{'clone':<22} {'per file (s)':>12} {'one batch (s)':>13} {'ratio':>7} {'fetches':>9}"
    print(header)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config = tmp / "gitconfig"
        config.write_text("")  # the machine's own git settings stay out of the timings
        os.environ.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1", **token_env(TOKEN))
        bare, sha = data_branch(tmp, args.pairs, args.size)
        requests: list[str] = []
        with serve_git(bare.parent, {TOKEN: "bench"}, requests) as url:
            for label, lazy in (("blob:none, HTTP", True), ("full clone", False)):
                best: dict[str, tuple[float, int]] = {}
                wrote: dict[str, dict[str, bytes]] = {}
                for round_ in range(args.repeat):
                    for way, take in (("per file", per_file), ("one batch", one_batch)):
                        scratch = tmp / f"{way}-{lazy}-{round_}".replace(" ", "-")
                        scratch.mkdir()
                        seconds, fetches, wrote[way] = timed(
                            take, f"{url}/meters.git", sha, scratch, requests, lazy
                        )
                        if way not in best or seconds < best[way][0]:
                            best[way] = (seconds, fetches)
                        shutil.rmtree(scratch)
                assert wrote["per file"] == wrote["one batch"] and len(wrote["per file"]) == 2 * args.pairs
                (old, old_fetches), (new, new_fetches) = best["per file"], best["one batch"]
                fetches = f"{old_fetches} / {new_fetches}"
                print(f"{label:<22} {old:>12.2f} {new:>13.2f} {old / new:>6.1f}x {fetches:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
