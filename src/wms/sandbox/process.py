"""The decoder process of `wms.sandbox.images`: starting it, and the conversation with it.

It runs `wms/sandbox/child.py` as a script with `python -I` and an empty environment, over two
pipes of its own; an answer that is late, cut short or out of protocol stops the conversation
(`Stopped`), and its caller kills the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from wms.sandbox import child

# One file gets this long in the child; a decoder caught in a loop is killed and the file called
# broken. Pillow decodes its largest allowed image (179 million pixels) in a few seconds.
DECODE_SECONDS = 120.0
START_SECONDS = 60.0  # Python and Pillow's start, on a loaded machine
# Pillow's own limit: it refuses more than twice MAX_IMAGE_PIXELS; 4 bytes per pixel at most (F, I).
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux's number; Python names it from 3.10
# The decoder, run as a script of its own (its module name would import `wms`).
CHILD_SCRIPT = Path(child.__file__)


class Stopped(Exception):
    """The child died, hung or answered out of protocol: it is killed and the next call starts one."""


class DecoderProcess:
    """One decoder process, and the conversation with it."""

    def __init__(self) -> None:
        # `-I`: no PYTHON* variables, no user site; env={}: no credentials reach it by inheritance.
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(CHILD_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},
            bufsize=0,
        )
        self.owner = os.getpid()
        for stream in (self.proc.stdin, self.proc.stdout):
            _widen(stream)
        try:
            hello, _ = self._answer(START_SECONDS)
        except Stopped as exc:
            self.close()
            hello = {"confined": False, "why": f"the decoder did not start ({exc})"}
        self.confined = hello.get("confined") is True
        self.why = printable(hello.get("why")) or "no reason given"

    def ask(self, request: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes | bytearray]:
        assert self.proc.stdin is not None
        try:
            child.send(self.proc.stdin, request, data)  # type: ignore[arg-type]
        except OSError as exc:  # BrokenPipeError: it died
            raise Stopped(self._death(str(exc))) from None
        return self._answer(DECODE_SECONDS)

    def _answer(self, seconds: float) -> tuple[dict[str, Any], bytes | bytearray]:
        deadline = time.monotonic() + seconds
        (size,) = struct.unpack(">I", self._read(4, deadline, seconds))
        if size > child.MAX_HEADER:
            raise Stopped(f"an answer header of {size} bytes")
        try:
            header = json.loads(self._read(size, deadline, seconds))
        except ValueError:
            raise Stopped("an answer that is not JSON") from None
        length = header.get("length") if isinstance(header, dict) else None
        if not isinstance(length, int) or not 0 <= length <= 4 * MAX_PIXELS:
            raise Stopped("an answer without a sound length")
        return header, self._read(length, deadline, seconds)

    def _read(self, n: int, deadline: float, seconds: float) -> bytearray:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buffer = bytearray(n)
        view, got = memoryview(buffer), 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise Stopped(f"no answer within {seconds:.0f} s")
            read = os.readv(fd, [view[got:]])
            if not read:
                raise Stopped(self._death("it closed its output"))
            got += read
        return buffer

    def _death(self, fallback: str) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return fallback
        if code < 0:
            return f"killed by signal {-code}"
        return f"it exited with {code}"

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # end of input: it exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        """After a Stopped: end it now, whatever it is doing."""
        self.proc.kill()
        self.close()

    def disown(self) -> None:
        """In a forked copy of the owner: drop the pipes without touching the owner's process."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.proc.returncode = 0  # not this process's child: Popen must neither wait nor warn


def _widen(stream: Any) -> None:
    """A pipe of 1 MiB (Linux's most for a user) rather than 64 KiB: a photo's pixels cross it in
    a few turns instead of dozens."""
    with contextlib.suppress(OSError):  # another kernel, or a lower limit: the default size works
        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, 1 << 20)


def printable(value: Any) -> str:
    """A decoder's message as one printable line of at most 300 characters."""
    return re.sub(r"[^\x20-\x7e]", "?", str(value))[:300] if value is not None else ""
