"""Images decoded in the confined child: what it may do, what it answers, and a child that fails."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

from wms.data.synth import synthesize
from wms.data.validate import validate_dataset
from wms.errors import ConfigError
from wms.sandbox import child, images, process
from wms.suggest import write_photo
from wms.train.preprocess import open_image, open_mask

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")


@pytest.fixture(autouse=True)
def fresh_decoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts its own child and leaves none behind (the module keeps one per process)."""
    monkeypatch.setattr(images, "_child", None)
    monkeypatch.setattr(images, "_why_not", None)
    monkeypatch.setattr(images, "_mode", "auto")
    monkeypatch.setattr(images, "_notice", None)
    yield
    if images._child is not None:
        images._child.close()


def encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def test_the_confined_child_can_open_no_file_reach_no_socket_start_no_program_nor_make_code() -> None:
    probe = textwrap.dedent(
        f"""
        import ctypes, mmap, os, socket, sys
        sys.path.insert(0, {str(Path(child.__file__).parent)!r})
        import child
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: no file to open
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

        def mprotect(prot):
            page = mmap.mmap(-1, mmap.PAGESIZE)  # read and write: still allowed
            address = ctypes.addressof(ctypes.c_char.from_buffer(page))
            if libc.mprotect(address, mmap.PAGESIZE, prot) != 0:
                raise PermissionError(ctypes.get_errno(), "mprotect")

        assert child.confine() is None, "not confined"
        rx, rwx = mmap.PROT_READ | mmap.PROT_EXEC, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        for name, attempt in [
            ("open", lambda: open({__file__!r}, "rb")),
            ("socket", lambda: socket.socket()),
            ("exec", lambda: os.execv("/bin/true", ["true"])),
            ("listdir", lambda: os.listdir("/")),
            ("executable mmap", lambda: mmap.mmap(-1, mmap.PAGESIZE, prot=rwx)),
            ("executable mprotect", lambda: mprotect(rx)),
            ("read-only mprotect", lambda: mprotect(mmap.PROT_READ)),
        ]:
            try:
                attempt()
            except PermissionError:
                print(name, "refused")
            else:
                print(name, "ALLOWED")
        """
    )
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    refused = ("open", "socket", "exec", "listdir", "executable mmap", "executable mprotect")
    assert done.stdout.split("\n")[:-1] == [*(f"{n} refused" for n in refused), "read-only mprotect ALLOWED"]


def test_the_child_starts_with_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-decoder")
    assert images.confined()
    assert images._child is not None
    environ = Path(f"/proc/{images._child.proc.pid}/environ").read_bytes()
    assert b"not-for-the-decoder" not in environ and environ == b""


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_photo_decoded_in_the_child_has_the_pixels_pillow_gives_here(fmt: str) -> None:
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: the person sees it 37 wide
    data = encoded(photo, fmt, exif=exif.tobytes()) if fmt in ("JPEG", "PNG", "WEBP") else encoded(photo, fmt)
    with Image.open(io.BytesIO(data)) as here:
        expected = ImageOps.exif_transpose(here).convert("RGB")
    decoded = images.decode_bytes(data, FORMATS)
    assert images.confined()
    assert decoded.format == fmt
    upright = ImageOps.exif_transpose(decoded).convert("RGB")
    assert upright.size == expected.size
    assert upright.tobytes() == expected.tobytes()


def test_a_jpeg_with_extra_pictures_from_a_phone_reads_as_the_jpeg_it_is(tmp_path: Path) -> None:
    # Phone cameras append pictures (a depth map, a preview) to a JPEG behind an MPF marker;
    # Pillow calls such a file MPO and decodes its first picture, the photo.
    photo = Image.effect_mandelbrot((320, 240), (-2.0, -1.2, 0.8, 1.2), 40).convert("RGB")
    path = tmp_path / "phone.jpg"
    photo.save(path, format="MPO", save_all=True, append_images=[photo.convert("L").convert("RGB")])
    assert Image.open(path, formats=["JPEG"]).format == "MPO"
    with Image.open(path, formats=["JPEG"]) as here:
        expected = here.convert("RGB").tobytes()

    assert images.confined()
    assert images.read_header(path, ("JPEG",)).format == "JPEG"
    assert open_image(path).tobytes() == expected
    summary = images.summarize_file(path, ("JPEG",), sample_step=8, thumbnail_side=8, draft=True)
    assert summary.format == "JPEG" and summary.size == (320, 240)
    kept = write_photo(path, tmp_path / "kept")  # a labelling batch keeps it as it came
    assert kept.suffix == ".jpg" and kept.read_bytes() == path.read_bytes()


def test_a_palette_mask_keeps_its_palette_and_transparency_and_a_16_bit_photo_its_depth() -> None:
    mask = Image.new("P", (8, 6))
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.paste(1, (2, 2, 5, 5))
    decoded = images.decode_bytes(encoded(mask, "PNG", transparency=0), ("PNG",))
    assert decoded.mode == "P" and decoded.getpalette()[:6] == [0, 0, 0, 255, 255, 255]
    assert decoded.info["transparency"] == 0
    assert np.array_equal(np.asarray(decoded), np.asarray(mask))
    deep = Image.fromarray(np.full((4, 5), 40000, dtype=np.uint16))
    decoded = images.decode_bytes(encoded(deep, "PNG"), ("PNG",))
    assert decoded.mode.startswith("I") and decoded.getextrema() == (40000, 40000)


def test_what_the_child_cannot_decode_raises_what_pillow_raises(tmp_path: Path) -> None:
    photo = encoded(Image.new("RGB", (40, 30), "white"), "JPEG")
    with pytest.raises(UnidentifiedImageError):
        images.decode_bytes(b"no image at all", FORMATS)
    with pytest.raises(UnidentifiedImageError):
        images.decode_bytes(photo, ("PNG",))  # a JPEG where only PNG is read
    with pytest.raises(images.BrokenImage, match="OSError") as broken:
        images.decode_bytes(photo[:200], FORMATS)
    again = pickle.loads(pickle.dumps(broken.value))  # as a worker process hands it back
    assert (type(again), str(again)) == (images.BrokenImage, str(broken.value))
    with pytest.raises(images.TooManyPixels) as big:
        images.decode_bytes(photo, FORMATS, max_pixels=100)
    assert big.value.size == (40, 30)
    assert images.read_header(write(tmp_path / "a.jpg", photo), FORMATS) == images.Header(
        "JPEG", "RGB", (40, 30)
    )
    with pytest.raises(FileNotFoundError):
        images.decode_file(tmp_path / "gone.png", FORMATS)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def fake_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """Runs `body` as the decoder: it gets `send`, `receive` and the child module's framing."""
    script = tmp_path / "fake_child.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys, time
            sys.path.insert(0, {str(Path(child.__file__).parent)!r})
            from child import send, _receive as receive
            out, inp = sys.stdout.buffer, sys.stdin.buffer
            """
        )
        + textwrap.dedent(body)
    )
    monkeypatch.setattr(process, "CHILD_SCRIPT", script)


def test_a_decoder_that_dies_on_a_file_makes_it_broken_and_the_next_file_gets_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_child(
        tmp_path,
        monkeypatch,
        """
        send(out, {"confined": True})
        receive(inp)
        os.kill(os.getpid(), signal.SIGSEGV)
        """,
    )
    photo = encoded(Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(images.BrokenImage, match=r"decoder stopped on it \(killed by signal 11\)"):
        images.decode_bytes(photo, FORMATS)
    assert images._child is None  # dropped, killed
    monkeypatch.setattr(process, "CHILD_SCRIPT", Path(child.__file__))
    assert images.decode_bytes(photo, FORMATS).size == (4, 4)


@pytest.mark.parametrize(
    "answer",
    [
        '{"format": "PNG", "mode": "RGB", "size": [4, 4]}, b"x" * 47',  # a byte short
        '{"format": "EPS", "mode": "RGB", "size": [4, 4]}, b"x" * 48',  # a format not asked for
        '{"format": "PNG", "mode": "RGB", "size": [-4, -4]}, b""',
        '{"format": "PNG", "mode": "RGB", "size": [1, 100000000000]}, b""',
    ],
)
def test_a_lying_decoder_gets_no_image_built_from_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    fake_child(
        tmp_path,
        monkeypatch,
        f"""
        send(out, {{"confined": True}})
        receive(inp)
        send(out, {answer})
        """,
    )
    with pytest.raises(images.BrokenImage, match="crash"):
        images.decode_bytes(b"anything", ("PNG",))


def test_a_decoder_that_hangs_is_killed_and_the_file_called_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_child(tmp_path, monkeypatch, 'send(out, {"confined": True})\nreceive(inp)\ntime.sleep(60)\n')
    monkeypatch.setattr(process, "DECODE_SECONDS", 0.5)
    with pytest.raises(images.BrokenImage, match=r"no answer within 0 s|no answer within 1 s"):
        images.decode_bytes(b"anything", ("PNG",))


def test_where_the_child_cannot_confine_itself_auto_decodes_here_and_required_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_child(tmp_path, monkeypatch, 'send(out, {"confined": False, "why": "OSError: no libseccomp"})\n')
    photo = encoded(Image.new("L", (5, 3), 9), "PNG")
    assert images.decode_bytes(photo, ("PNG",)).getextrema() == (9, 9)
    assert not images.confined()
    images.configure("required")
    with pytest.raises(
        ConfigError, match=r"cannot confine the image decoder \(OSError: no libseccomp\).*libseccomp2"
    ):
        images.decode_bytes(photo, ("PNG",))


def test_validation_and_training_inputs_decode_nothing_in_the_process_that_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Pillow's decoding taken away here, a dataset still validates and loads: the child did it."""
    synthesize(tmp_path / "data", count=20, size=32, seed=4)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded in the process that holds the settings")

    monkeypatch.setattr(Image, "open", refuse)
    report = validate_dataset(tmp_path / "data", size=32)
    assert report.pairs == 20 and not report.errors
    pair = next((tmp_path / "data" / "images").iterdir())
    assert open_image(pair).size == (32, 32)
    assert open_mask(tmp_path / "data" / "masks" / f"{pair.stem}.png").mode == "L"


def test_required_on_a_machine_that_cannot_confine_the_decoder_stops_the_command_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Any]
) -> None:
    synthesize(tmp_path / "data", count=4, size=32, seed=2)
    fake_child(tmp_path, monkeypatch, 'send(out, {"confined": False, "why": "OSError: no libseccomp"})\n')
    monkeypatch.chdir(tmp_path)
    done = cli("--set", "data.decode_sandbox=required", "data", "validate", "--any-size", "data")
    assert done.exit_code == 2
    assert "cannot confine the image decoder (OSError: no libseccomp)" in done.output
    assert "Traceback" not in done.output
    monkeypatch.setattr(images, "_why_not", None)
    done = cli("data", "validate", "--any-size", "data")  # auto: decoded here, and said so once
    assert done.exit_code == 0, done.output
    assert done.output.count("warning: images are decoded in this process, unconfined") == 1
    assert "(OSError: no libseccomp)" in done.output


@pytest.mark.parametrize("mode", ["required", "auto"])
def test_workers_take_the_answer_their_parent_found_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Any], mode: str
) -> None:
    """Enough pairs for worker processes: "required" stops before they start, "auto" warns once
    (not once per worker), and the child is started once, by the parent, not by each worker."""
    synthesize(tmp_path / "data", count=24, size=32, seed=3)
    starts = tmp_path / "starts"
    fake_child(
        tmp_path,
        monkeypatch,
        f'open({str(starts)!r}, "a").write("x")\n'
        'send(out, {"confined": False, "why": "OSError: no libseccomp"})\n',
    )
    monkeypatch.chdir(tmp_path)
    done = cli("--set", f"data.decode_sandbox={mode}", "data", "validate", "--any-size", "data")
    assert "Traceback" not in done.output
    if mode == "required":
        assert done.exit_code == 2
        assert "cannot confine the image decoder (OSError: no libseccomp)" in done.output
    else:
        assert done.exit_code == 0, done.output
        assert done.output.count("unconfined") == 1
        assert "24 pairs" in done.output
    assert starts.read_text() == "x"


def test_spawned_workers_decode_where_their_parent_settled(tmp_path: Path) -> None:
    """A spawned worker (the platform default off Linux) starts with the module's defaults, so
    without its parent's answer it would decode as "auto" whatever data.decode_sandbox says."""
    if not images.confined():
        pytest.skip("this machine cannot confine the decoder, so auto and off decode alike")
    script = tmp_path / "spawned.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing
            from wms.data import _pool
            from wms.sandbox import images

            def in_a_child(_):
                return images.confined()

            if __name__ == "__main__":
                _pool._context = lambda: multiprocessing.get_context("spawn")
                images.configure("off")
                print(sorted(set(_pool.parallel_map(in_a_child, list(range(16)), workers=2))))
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[False]"


def test_a_pipeline_that_requires_the_confined_decoder_is_refused_before_it_records_or_locks_anything(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    project_dir: Path,
    make_batch: Callable[..., Path],
) -> None:
    from tests.test_pipeline import run

    batch = make_batch("b1", seed=5)
    fake_child(tmp_path, monkeypatch, 'send(out, {"confined": False, "why": "OSError: no libseccomp"})\n')
    before = sorted(p.relative_to(project_dir) for p in project_dir.rglob("*"))
    with pytest.raises(ConfigError, match="cannot confine the image decoder"):
        run(project_dir, batch, "train.epochs=0", "data.decode_sandbox=required")
    assert sorted(p.relative_to(project_dir) for p in project_dir.rglob("*")) == before


def test_a_summary_matches_what_the_pixels_give_and_a_lying_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mask = Image.new("L", (40, 24))
    mask.paste(255, (0, 0, 10, 24))
    path = write(tmp_path / "m.png", encoded(mask, "PNG"))
    summary = images.summarize_file(path, ("PNG",), histogram=True, sample_step=8, thumbnail_side=4)
    assert summary.histogram == mask.histogram()
    assert (
        summary.sample is not None
        and summary.sample.tobytes() == mask.resize((5, 3), Image.NEAREST).tobytes()
    )
    assert summary.thumbnail is not None and summary.thumbnail.size == (4, 4)
    assert images.pixel_digest(path, ("PNG",)) == images.pixel_digest(
        write(tmp_path / "same.png", encoded(mask, "PNG", compress_level=1)), ("PNG",)
    )
    photo = Image.effect_mandelbrot((400, 300), (-2.0, -1.2, 0.8, 1.2), 60).convert("RGB")
    jpeg = write(tmp_path / "p.jpg", encoded(photo, "JPEG", quality=95))
    drafted = images.summarize_file(jpeg, ("JPEG",), sample_step=8, thumbnail_side=32, draft=True)
    full = images.summarize_file(jpeg, ("JPEG",), sample_step=8, thumbnail_side=32)
    assert drafted.size == full.size == (400, 300) and drafted.mode == full.mode == "RGB"
    assert drafted.sample is not None and full.sample is not None
    assert drafted.sample.size == full.sample.size == (50, 37)
    assert drafted.thumbnail is not None and full.thumbnail is not None
    close = np.abs(np.asarray(drafted.thumbnail, np.int16) - np.asarray(full.thumbnail, np.int16))
    assert close.mean() < 4  # the draft (1/2 scale here) is the same picture, a little softer
    with pytest.raises(ValueError, match="histogram"):
        images.summarize_file(jpeg, ("JPEG",), histogram=True, draft=True)
    assert images._child is not None
    images._child.close()
    monkeypatch.setattr(images, "_child", None)
    fake_child(
        tmp_path,
        monkeypatch,
        """
        send(out, {"confined": True})
        receive(inp)
        send(out, {"format": "PNG", "mode": "L", "size": [40, 24], "histogram": [-1]})
        """,
    )
    with pytest.raises(images.BrokenImage, match="does not add up"):
        images.summarize_file(path, ("PNG",), histogram=True)
