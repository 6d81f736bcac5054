"""Writing many blobs into files: one fetch in a partial clone, one `git cat-file --batch` to read.

CI checks out with `filter: blob:none`: the clone holds every tree but no file's contents, and
git fetches a missing blob from the promisor remote when something first reads it, one network
round trip per object. A batch of a few hundred pairs took that many round trips through
`git cat-file blob`, one process per file. `write_blobs` first asks the promisor remote for all
the missing blobs at once, as git's own batch prefetch does, then streams every blob through one
`git cat-file --batch` into its file, so a large batch is never held in memory. A failure midway
removes what the call wrote: no partial set of files is left looking like a whole batch.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

from wms.vcs.git import Git, GitError

CHUNK = 1 << 20  # bytes copied at a time from git to a file


def prefetch(git: Git, tree: str, oids: set[str], what: str) -> None:
    """Fetch those of `oids` (blobs under `tree`) this clone lacks, in one round trip.

    Nothing to do in a full clone. Each promisor remote is asked in turn, as git does. When none
    gives them, GitError rather than falling back to git's lazy fetches: those run the same fetch
    against the same remote, one object at a time, so they would fail too, only N times slower.
    """
    remotes = git.promisor_remotes()
    missing = sorted(oids.intersection(git.missing_objects(tree))) if remotes else []
    if not missing:
        return
    failures = []
    for remote in remotes:
        failed = git.fetch_objects(remote, missing)
        if failed is None:
            return
        failures.append(f"{remote}: {failed}")
    raise GitError(
        f"could not fetch {len(missing)} file(s) of {what} ({'; '.join(failures)}); nothing was taken"
    )


class BlobReader:
    """One `git cat-file --batch` process that copies blob after blob into files."""

    def __init__(self, root: Path) -> None:
        # A file, not a pipe: a pipe nobody reads could fill and stall git. `close` closes it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except FileNotFoundError:
            self._stderr.close()
            raise GitError("git is not installed or not on PATH; install git and try again") from None

    def copy(self, oid: str, target: IO[bytes]) -> None:
        """Write blob `oid` into `target`; GitError when git has no such blob or stops."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        try:
            # One name at a time: git answers each before reading the next, so neither side can
            # block on a full pipe, and the answers are read in the order they were asked.
            stdin.write(f"{oid}\n".encode())
            stdin.flush()
        except BrokenPipeError:
            raise GitError(self._stopped()) from None
        fields = stdout.readline().decode(errors="replace").split()
        if not fields:
            raise GitError(self._stopped())
        if len(fields) != 3 or fields[1] != "blob":
            raise GitError(f"blob {oid[:12]} is {' '.join(fields[1:]) or 'unreadable'} in this repository")
        left = int(fields[2])
        while left:
            chunk = stdout.read(min(CHUNK, left))
            if not chunk:
                raise GitError(self._stopped())
            target.write(chunk)
            left -= len(chunk)
        if stdout.read(1) != b"\n":
            raise GitError(self._stopped())

    def _stopped(self) -> str:
        self._process.kill()
        self._process.wait()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return f"`git cat-file --batch` stopped: {lines[-1] if lines else 'no output'}"

    def close(self, ok: bool = True) -> None:
        """End git: at once after a failure (it may be midway through a blob), else once it has read all."""
        if not ok:
            self._process.kill()
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # git ended first (killed, or died)
                self._process.stdin.close()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(ok=kind is None)


def write_blobs(git: Git, planned: list[tuple[str, Path, str]], tree: str, what: str) -> list[Path]:
    """Write each (blob, target, name) of `planned`; `tree` holds the blobs, `what` names them.

    GitError naming the file when one cannot be fetched or read, with nothing this call wrote
    left behind: its files are removed, and so are the folders it made.
    """
    prefetch(git, tree, {blob for blob, _, _ in planned}, what)
    written: list[Path] = []
    made: list[Path] = []
    reading = ""
    try:
        with BlobReader(git.root) as reader:
            for blob, target, name in planned:
                reading = name
                _make_folders(target.parent, made)
                written.append(target)
                with target.open("wb") as file:
                    reader.copy(blob, file)
    except BaseException as error:
        _remove(written, made)
        if isinstance(error, GitError):
            raise GitError(f"could not read {reading} of {what}: {error}; nothing was taken") from None
        raise
    return written


def _make_folders(folder: Path, made: list[Path]) -> None:
    """`folder` and any parents it lacks, each one made added to `made` (outermost first)."""
    lacking = []
    while not folder.exists():
        lacking.append(folder)
        folder = folder.parent
    for path in reversed(lacking):
        path.mkdir()
        made.append(path)


def _remove(written: list[Path], made: list[Path]) -> None:
    for path in written:
        path.unlink(missing_ok=True)
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # something else put a file there meanwhile: leave it
            folder.rmdir()
