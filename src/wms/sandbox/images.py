"""Decode image files that others made: in the confined child where it can run, else here.

`decode_file` and `decode_bytes` (the pixels), `summarize_file` and `pixel_digest` (what a check
of every file needs, without the pixels) and `read_header` are what every reader of pushed,
labelled or captured files calls (`wms.train.preprocess`, `wms.data.validate`,
`wms.data.prepare`, `wms.drift`). They raise what `Image.open` and `load` raise for such a file,
so callers keep their messages. What the child answers is checked here before a Pillow image is
built from it: its mode, size, format and byte count, since a child that a crafted file took over
may answer anything. `wms.sandbox.process` runs the child.

`configure` sets, once, from `data.decode_sandbox`: "auto" (the child where this machine can
confine it, Linux with libseccomp; else here, said once through `tell_when_unconfined`),
"required" (a machine that cannot confine it stops with a ConfigError instead of decoding here)
or "off" (always here). `settle` finds out in a parent what its workers will do (`wms.data._pool`).
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from PIL import Image, UnidentifiedImageError

from wms.errors import ConfigError
from wms.sandbox import DecodeSandbox, child
from wms.sandbox.process import MAX_PIXELS, DecoderProcess, Stopped, printable

# The modes a decoder may answer; frombytes builds each from raw bytes without parsing them.
MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"}
    | {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
)
_ORIENTATION = 0x0112


class BrokenImage(OSError):
    """A file that its decoder failed on: `kind` names what the decoder raised (or "crash")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # out of a worker process, as it went in
        return type(self), (self.kind, self.message)


class TooManyPixels(ValueError):
    """The file's header gives more pixels than the caller allows; it was not decoded."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(f"{size[0]}x{size[1]} pixels")
        self.size = size

    def __reduce__(self) -> tuple[type, tuple[tuple[int, int]]]:
        return type(self), (self.size,)


@dataclass(frozen=True)
class Header:
    """What a file's header says, before any pixel is decoded."""

    format: str
    mode: str
    size: tuple[int, int]


@dataclass(frozen=True)
class Summary:
    """What `summarize_file` learns of a decoded file, without its pixels crossing the pipe."""

    format: str
    mode: str
    size: tuple[int, int]  # as stored, before EXIF orientation
    orientation: int  # EXIF orientation, 1 when none
    palette: list[int] | None  # a palette image's RGB palette
    histogram: list[int] | None = None  # Pillow's histogram of the pixels, where asked
    sample: Image.Image | None = None  # one pixel in `sample_step` along each axis, in `mode`
    thumbnail: Image.Image | None = None  # grey, `thumbnail_side` square (child.grey_thumbnail)


def decode_file(path: Path, formats: tuple[str, ...], max_pixels: int | None = None) -> Image.Image:
    """The image in `path` decoded as one of `formats` (FileNotFoundError where there is none)."""
    return decode_bytes(path.read_bytes(), formats, max_pixels)


def decode_bytes(data: bytes, formats: tuple[str, ...], max_pixels: int | None = None) -> Image.Image:
    """`data` decoded as one of `formats`, as a loaded Pillow image that holds no file.

    Its `format` is the decoder's, its `getexif()` holds the file's orientation (nothing else of
    its EXIF), and a palette image keeps its palette and transparency. With `max_pixels`, a file
    whose header gives more is not decoded: TooManyPixels names its size.
    """
    answer, raw, head = _decoded(data, formats, max_pixels=max_pixels)
    return _rebuild(answer, raw, head)


def summarize_file(
    path: Path,
    formats: tuple[str, ...],
    max_pixels: int | None = None,
    histogram: bool = False,
    sample_step: int | None = None,
    thumbnail_side: int | None = None,
    draft: bool = False,
) -> Summary:
    """The file in `path` decoded as one of `formats` and summed up (`Summary`, with what is
    asked): a check of every file gets a fraction of the bytes of its pixels back. Raises what
    `decode_file` raises.

    With `draft` (for a sample and a thumbnail, not a histogram), a JPEG is decoded at the
    smallest DCT scale that still gives the thumbnail its detail (`child._draft`): its sample
    then comes from that, so it matches the sample of another JPEG with the same coefficients,
    not the one of a PNG of its full-size pixels."""
    if draft and histogram:
        raise ValueError("a draft's histogram is not the file's: ask for one or the other")
    summary = {
        "histogram": histogram,
        "sample_step": sample_step,
        "thumbnail_side": thumbnail_side,
        "draft": draft,
    }
    answer, raw, head = _decoded(path.read_bytes(), formats, max_pixels=max_pixels, summary=summary)
    fmt, mode, size = head.format, head.mode, head.size
    sample_size = _size(answer, "sample_size") if sample_step else (0, 0)
    cut = _raw_length(mode, sample_size) if sample_step else 0
    counts = answer.get("histogram") if histogram else None
    if (
        (sample_step and sample_size != (max(1, size[0] // sample_step), max(1, size[1] // sample_step)))
        or len(raw) != cut + (thumbnail_side or 0) ** 2
        or (histogram and not (_ints(counts, 1024) and counts))  # 256 per band, at most four bands
    ):
        raise BrokenImage("crash", "the decoder answered a summary that does not add up")
    palette = answer.get("palette")
    return Summary(
        format=fmt,
        mode=mode,
        size=size,
        orientation=_orientation(answer),
        palette=palette if _ints(palette, 768, 255) else None,
        histogram=counts,
        sample=Image.frombytes(mode, sample_size, bytes(raw[:cut])) if sample_step else None,
        thumbnail=(
            Image.frombytes("L", (thumbnail_side, thumbnail_side), bytes(raw[cut:]))
            if thumbnail_side
            else None
        ),
    )


def pixel_digest(path: Path, formats: tuple[str, ...]) -> tuple[str, tuple[int, int], str]:
    """The mode, size and a BLAKE2b digest of the pixels of the file in `path`: files with equal
    ones hold the same pixels. Raises what `decode_file` raises."""
    answer, _, head = _decoded(path.read_bytes(), formats, digest=True)
    digest = answer.get("digest")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise BrokenImage("crash", "the decoder answered no digest")
    return head.mode, head.size, digest


def read_header(path: Path, formats: tuple[str, ...]) -> Header:
    """The format, mode and size that the header of `path` gives (its pixels are not decoded)."""
    return _decoded(path.read_bytes(), formats, header_only=True)[2]


def configure(mode: DecodeSandbox) -> None:
    """Where later decodes run (`data.decode_sandbox`); set once, where the settings are read."""
    global _mode
    _mode = mode


def tell_when_unconfined(notice: Callable[[str], None]) -> None:
    """Have `notice` hear, once, that "auto" decodes in this process because this machine cannot
    confine the child (the CLI prints it as a warning), so the fallback is never silent."""
    global _notice
    _notice = notice


def confined() -> bool:
    """Whether decodes in this process run in the confined child (starting it to find out)."""
    with _lock:
        return _child_here() is not None


def settle() -> tuple[DecodeSandbox, str | None]:
    """Find out, before worker processes start, where decodes run: ConfigError here where
    "required" cannot be met, the notice here where "auto" falls back. The answer is what `adopt`
    gives each worker, so none starts a child only to learn what its parent knows."""
    with _lock:
        _child_here()
        return _mode, _why_not


def adopt(mode: DecodeSandbox, why_not: str | None) -> None:
    """In a worker process (`wms.data._pool`), its parent's settled answer: a spawned worker
    (macOS) starts with the defaults, and would otherwise decode as "auto" whatever was set."""
    global _mode, _why_not
    _mode, _why_not = mode, why_not


_mode: DecodeSandbox = "auto"
_child: DecoderProcess | None = None
_why_not: str | None = None  # why this machine cannot confine the child, once found out
_notice: Callable[[str], None] | None = None
_lock = threading.Lock()


def _child_here() -> DecoderProcess | None:
    """This process's confined child (started on first use), or None where decodes run here."""
    global _child, _why_not
    if _mode == "off":
        return None
    if _child is None and _why_not is None:
        try:
            started = DecoderProcess()
        except OSError as exc:  # no interpreter to run it with, no process left to start
            _why_not = f"it could not be started: {exc}"
        else:
            if started.confined:
                _child = started
            else:
                started.close()
                _why_not = started.why
        if _child is None and _mode == "auto":
            _tell(_why_not)
    if _child is None and _mode == "required":
        raise ConfigError(
            "data.decode_sandbox = required, but this machine cannot confine the image decoder "
            f"({_why_not}): install libseccomp (Debian and Ubuntu: libseccomp2), "
            "or set data.decode_sandbox = auto to decode in the process itself"
        )
    return _child


def _tell(why: str | None) -> None:
    global _notice
    if _notice is not None:
        _notice(
            f"images are decoded in this process, unconfined: this machine cannot confine the image "
            f"decoder ({why}); install libseccomp (Debian and Ubuntu: libseccomp2) to confine it, "
            "or set data.decode_sandbox = off to decode here without this warning"
        )
        _notice = None


def _ask(request: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes | bytearray]:
    global _child
    with _lock:
        here = _child_here()
        if here is None:
            return child.decode(request, data)
        try:
            return here.ask(request, data)
        except Stopped as exc:
            here.kill()
            _child = None
            return {"error": "broken", "kind": "crash", "message": f"the decoder stopped on it ({exc})"}, b""


def _raise_error(answer: dict[str, Any]) -> None:
    error = answer.get("error")
    if error is None:
        return
    message = printable(answer.get("message"))
    if error == "oversize":
        raise TooManyPixels(_size(answer))
    if error == "unidentified":
        raise UnidentifiedImageError(message)
    if error == "bomb":
        raise Image.DecompressionBombError(message)
    raise BrokenImage(printable(answer.get("kind")) or "Error", message)


def _decoded(
    data: bytes, formats: tuple[str, ...], **request: Any
) -> tuple[dict[str, Any], bytes | bytearray, Header]:
    """The decoder's answer to `request` for `data`, raised where it is an error, and what it says
    of the file once that is sound: a format asked for, a mode frombytes builds, a size in bounds."""
    answer, raw = _ask({"formats": list(formats)} | request, data)
    _raise_error(answer)
    fmt, mode = answer.get("format"), answer.get("mode")
    if fmt not in formats or mode not in MODES:
        raise BrokenImage("crash", f"the decoder answered format {fmt!r}, mode {mode!r}")
    return answer, raw, Header(str(fmt), str(mode), _size(answer))


def _rebuild(answer: dict[str, Any], raw: bytes | bytearray, head: Header) -> Image.Image:
    """A Pillow image from an answer, once its every field is what a real decode gives."""
    fmt, mode, size = head.format, head.mode, head.size
    if len(raw) != _raw_length(mode, size):
        raise BrokenImage("crash", f"the decoder answered {len(raw)} bytes for {mode} {size}")
    img = Image.frombytes(mode, size, raw)
    img.format = fmt
    palette = answer.get("palette")
    if mode in ("P", "PA") and _ints(palette, 768, 255):
        img.putpalette(palette)
    transparency = answer.get("transparency")
    if isinstance(transparency, int) and not isinstance(transparency, bool):
        img.info["transparency"] = transparency
    elif _ints(transparency, 256, 255):
        img.info["transparency"] = bytes(transparency) if mode in ("P", "PA") else tuple(transparency)
    if (orientation := _orientation(answer)) != 1:
        exif = Image.Exif()
        exif[_ORIENTATION] = orientation
        img.info["exif"] = exif.tobytes()
    return img


def _raw_length(mode: str, size: tuple[int, int]) -> int:
    """How many bytes Pillow's `tobytes` gives for an image of this mode and size."""
    return len(Image.new(mode, (size[0], 1)).tobytes()) * size[1]


def _orientation(answer: dict[str, Any]) -> int:
    orientation = answer.get("orientation")
    return orientation if isinstance(orientation, int) and orientation in range(1, 9) else 1


def _ints(value: Any, most: int, top: int | None = None) -> TypeGuard[list[int]]:
    """A list of at most `most` integers from 0 (to `top`, where given)."""
    return (
        isinstance(value, list)
        and len(value) <= most
        and all(isinstance(v, int) and v >= 0 and (top is None or v <= top) for v in value)
    )


def _size(answer: dict[str, Any], key: str = "size") -> tuple[int, int]:
    size = answer.get(key)
    if (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
        and size[0] * size[1] <= MAX_PIXELS
    ):
        return size[0], size[1]
    raise BrokenImage("crash", "the decoder answered no sound size")


def _after_fork() -> None:
    # A forked worker (wms.data._pool) must not talk to its parent's child, nor take a lock that a
    # parent thread held at the fork: it starts its own on first use.
    global _child, _lock
    if _child is not None:
        _child.disown()
    _child, _lock = None, threading.Lock()


def _close_child() -> None:
    if _child is not None and _child.owner == os.getpid():
        _child.close()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_close_child)
