"""The confined decoder: reads requests on stdin, answers raw pixels on stdout.

Run as a script (`python -I child.py`), never as part of `wms`, so it imports only what it needs
before it confines itself. The parent (`wms.sandbox.images`) imports its framing and `decode`, and
runs `decode` in its own process where no sandbox is wanted, so both ways read a file alike.

A message is a 4-byte big-endian length, that many bytes of JSON (the header), then the payload
that the header's "length" counts. The first answer says whether the child confined itself.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import mmap
import struct
import sys
import warnings
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError

# The largest header either side accepts; a real one is a few hundred bytes (a palette: 3 KB).
MAX_HEADER = 1 << 20

# What a decoder may still do once confined: move bytes over the pipes it holds, manage its own
# memory and threads, and exit. Every other call (open, socket, connect, execve, ptrace, ...)
# fails with EPERM, so code that a crafted file runs here can read nothing and send nothing but
# pixels to its parent.
ALLOWED_CALLS = (
    "read",
    "write",
    "close",
    "fstat",
    "newfstatat",
    "lseek",
    "brk",
    "mmap",  # never executable: see NO_EXEC_CALLS
    "munmap",
    "mremap",
    "madvise",
    "mprotect",
    "futex",
    "getrandom",
    "clock_gettime",
    "getpid",
    "gettid",
    "rt_sigreturn",
    "rt_sigprocmask",
    "sched_yield",
    "exit",
    "exit_group",
)


# Of those, the calls that make memory; allowed only where their protection (the third argument)
# leaves PROT_EXEC out. Code already mapped is all the child runs: a crafted file can no longer
# write its own code into memory and make it executable.
NO_EXEC_CALLS = frozenset({"mmap", "mprotect"})


def send(stream: BinaryIO, header: dict[str, Any], payload: bytes = b"") -> None:
    """Write one message: the header (with the payload's length) and the payload."""
    head = json.dumps(header | {"length": len(payload)}).encode()
    stream.write(struct.pack(">I", len(head)) + head)
    stream.write(payload)
    stream.flush()


# What Pillow calls a JPEG that carries more pictures behind an MPF marker, as phone cameras write
# one (a depth map, a preview). Its first picture is the photo, and Pillow decodes that as a JPEG,
# so it is answered as the JPEG it is.
MULTI_PICTURE_JPEG = "MPO"

# A thumbnail is made from a picture at least this many times its side: the box reduction before
# the bilinear step in `grey_thumbnail`, and the smallest a JPEG is decoded to for a summary.
REDUCING_GAP = 3


def grey_thumbnail(img: Image.Image, side: int) -> Image.Image:
    """The picture as a `side` x `side` grey (L) thumbnail: what wms.data.lookalike hashes.

    Bilinear after a box reduction to at least REDUCING_GAP times the side costs a fifth of a
    Lanczos resize from the full picture. On the 830 real photos it keeps every resized or
    re-encoded copy within 2 bits of its original, and distinct photos 10 bits apart or more, as
    Lanczos did (tests/data/test_lookalike.py checks both on the real photos)."""
    return img.convert("L").resize((side, side), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)


def _draft(img: Image.Image, fmt: str | None, side: int) -> None:
    """Have a JPEG (`fmt`, as answered) decode at the smallest DCT scale (1/2, 1/4 or 1/8) whose
    sides stay at least `side`: every byte of the file is still decoded, so a truncated or broken
    one fails as at full size, at a third of the cost for a 1-megapixel photo."""
    if fmt == "JPEG" and side > 0:
        img.draft(img.mode, (side, side))  # Pillow picks the scale; the mode stays


def _summary(img: Image.Image, answer: dict[str, Any], summary: dict[str, Any]) -> bytes:
    """What a check of every file needs of a decoded one, without its pixels, as `summary` asks:
    its "histogram"; a "sample_step" (a nearest-neighbour sample of one pixel in that many along
    each axis of the size in the header, from a draft where one was asked); a "thumbnail_side"
    (`grey_thumbnail`). The sample's and thumbnail's bytes."""
    payload = b""
    if summary.get("histogram"):
        answer["histogram"] = img.histogram()
    if step := summary.get("sample_step"):
        width, height = answer["size"]
        sample = img.resize((max(1, width // step), max(1, height // step)), Image.Resampling.NEAREST)
        answer["sample_size"] = list(sample.size)
        payload += sample.tobytes()
    if side := summary.get("thumbnail_side"):
        payload += grey_thumbnail(img, side).tobytes()
    return payload


def decode(request: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    """Decode `data` as one of `request["formats"]`: the answer header and the raw pixels.

    With "header_only", only the header is read (size, mode, format); with "max_pixels", a file
    whose header gives more pixels is answered "oversize" undecoded. With "summary" the answer
    holds what `_summary` gives instead of the pixels; with "digest" a BLAKE2b digest of them.
    """
    formats = [str(name) for name in request.get("formats", ())]
    max_pixels = request.get("max_pixels")
    try:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            width, height = img.size
            fmt = "JPEG" if img.format == MULTI_PICTURE_JPEG and "JPEG" in formats else img.format
            answer: dict[str, Any] = {"format": fmt, "mode": img.mode, "size": [width, height]}
            if isinstance(max_pixels, int) and width * height > max_pixels:
                return {"error": "oversize", "size": [width, height]}, b""
            if request.get("header_only"):
                return answer, b""
            summary = request.get("summary")
            if isinstance(summary, dict) and summary.get("draft"):
                _draft(img, fmt, REDUCING_GAP * int(summary.get("thumbnail_side") or 0))
            img.load()  # decoding everything is the only way to catch truncated files
            answer["orientation"] = int(img.getexif().get(0x0112, 1) or 1)
            if img.mode in ("P", "PA"):
                answer["palette"] = img.getpalette()
            transparency = img.info.get("transparency")
            if isinstance(transparency, bytes):
                answer["transparency"] = list(transparency)
            elif isinstance(transparency, int | tuple):
                answer["transparency"] = transparency
            if request.get("digest"):
                answer["digest"] = hashlib.blake2b(img.tobytes(), digest_size=32).hexdigest()
                return answer, b""
            if isinstance(summary, dict):
                return answer, _summary(img, answer, summary)
            return answer, img.tobytes()
    except UnidentifiedImageError as exc:
        return {"error": "unidentified", "message": str(exc)}, b""
    except Image.DecompressionBombError as exc:
        return {"error": "bomb", "message": str(exc)}, b""
    except Exception as exc:  # any decoder failure is a property of the file
        return {"error": "broken", "kind": type(exc).__name__, "message": str(exc)}, b""


def confine() -> str | None:
    """Load the seccomp filter; None when it holds, else why it could not be loaded."""
    try:
        import pyseccomp as seccomp  # ctypes over libseccomp, Linux only

        rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
        never_executable = seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_EXEC, 0)
        for call in ALLOWED_CALLS:
            try:
                rules.add_rule(seccomp.ALLOW, call, *([never_executable] if call in NO_EXEC_CALLS else []))
            except (ValueError, RuntimeError, OSError):  # a call this architecture does not have
                continue
        rules.load()
    except Exception as exc:  # no libseccomp, no pyseccomp, a kernel without seccomp
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _receive(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_HEADER:
        return None
    header = json.loads(stream.read(size))
    return header, stream.read(int(header.get("length", 0)))


def main() -> None:
    warnings.simplefilter("ignore")  # DecompressionBombWarning and the like: nobody reads stderr
    Image.init()  # every format plugin is imported now: once confined, no module file can be opened
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    why = confine()
    send(stdout, {"confined": why is None, "why": why})
    while (request := _receive(stdin)) is not None:
        send(stdout, *decode(*request))


if __name__ == "__main__":
    main()
