"""What every command group shares: the settings state, consoles and progress bars."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from typer.core import TyperGroup, TyperOption

from wms.config import Project, load_settings, parse_overrides, stray_env_variables
from wms.errors import UsageError, WmsError
from wms.guards import Interrupted

# Markup is off: what is printed (paths, messages, names) is shown as written, a `[train]` or
# `[/x]` in it included. Colour comes from `styled` pieces, never from the text.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


INTERRUPT_NOTE = "wms.interrupt_note"


def on_interrupt(ctx: typer.Context, note: str | Callable[[], str]) -> None:
    """What Ctrl-C (or SIGTERM) leaves behind in this command and what to do then, said in the
    one line printed when it comes; a command sets it again as its state changes, or gives a
    function that reads that state when the signal comes."""
    ctx.meta[INTERRUPT_NOTE] = note


def _interrupt_note(ctx: typer.Context) -> str | None:
    note = ctx.meta.get(INTERRUPT_NOTE)
    return note() if callable(note) else note


def _type_unless_flag(option: TyperOption, ctx: Any) -> str | None:
    """The value type typer's --help panel shows beside an option: none beside a flag, which
    takes no value (typer 0.29 shows `<bool>` there, and on --help itself)."""
    return None if option.is_flag else _typer_display_type(option, ctx)


_typer_display_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _type_unless_flag  # type: ignore[method-assign,assignment]


class WmsGroup(TyperGroup):
    """Turns a WmsError from any command into one line on stderr and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except WmsError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except Interrupted as exc:  # raised where a command holds paid resources, after releasing them
            print_interrupted(exc.signame, _interrupt_note(ctx))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # Ctrl-C outside those: typer would exit 130 without a word
            print_interrupted("SIGINT", _interrupt_note(ctx))
            raise typer.Exit(Interrupted.exit_code) from None
        except MemoryError as exc:  # numpy or Pillow could not allocate: this machine's memory, not a bug
            print_error(
                f"this machine ran out of memory ({exc}); free some memory, or run it on a machine with more"
            )
            raise typer.Exit(1) from None
        except OSError as exc:  # the file system refused: a file in the way, no permission, a full disk
            if exc.errno == errno.EPIPE:
                raise  # output piped into `head`: click ends quietly
            print_error(describe_os_error(exc))
            raise typer.Exit(1) from None


_OS_HINTS = {
    errno.EEXIST: "a file is in the way: name another path, or move the file",
    errno.ENOTDIR: "a file is in the way where a folder is needed: name another path",
    errno.EISDIR: "that is a folder: name a file",
    errno.ENOENT: "check the path",
    errno.EACCES: "no permission: name a folder you can write, or change its permissions",
    errno.EPERM: "no permission: name a folder you can write, or change its permissions",
    errno.EROFS: "name a folder on a writable disk",
    errno.ENOSPC: "free some space, or name a folder on another disk",
}


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: the path, what is wrong and what to do."""
    if exc.filename is None:
        return str(exc)
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    hint = _OS_HINTS.get(exc.errno or 0, "check the path")
    return f"{paths}: {exc.strerror}; {hint}"


def report_file(option: str, path: Path | None) -> None:
    """Check `path` (given with `option`), a report a command writes once its work is done, before
    that work: its folder is made now, and a folder in its place, or a place no folder can be made,
    is one line (exit 2) now rather than after minutes of work whose results would go unreported."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path} cannot be written: {describe_os_error(exc)}") from None


def print_error(message: str) -> None:
    """`error: message` on stderr, the message as written (a `[train]` in it is no markup)."""
    err_console.print(styled("error:", "bold red"), message, highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    """`warning: message` on stderr: something the person should know, that stops nothing."""
    err_console.print(styled("warning:", "bold yellow"), message, highlight=False, soft_wrap=True)


def print_interrupted(signame: str, note: str | None) -> None:
    """`interrupted (SIGINT): what stopped, what is left and what to do` on stderr, one line."""
    note = note or "the command stopped before it finished; run it again"
    err_console.print(
        styled(f"interrupted ({signame}):", "bold yellow"), note, highlight=False, soft_wrap=True
    )


def styled(text: str, style: str) -> Text:
    """`text` printed in `style` (e.g. "bold red"), as written."""
    return Text(text, style=style)


@dataclass
class CliState:
    """Global options, turned into settings once, when a command first needs them."""

    config_file: Path | None = None
    sets: list[str] = field(default_factory=list)
    _project: Project | None = None

    def project(self, flags: dict[str, Any] | None = None) -> Project:
        """The settings: `flags` (command options by `section.key`) > --set > env > file."""
        if self._project is None:
            overrides = parse_overrides(self.sets)
            for dotted, value in (flags or {}).items():
                if value is not None:
                    section, key = dotted.split(".")
                    overrides.setdefault(section, {})[key] = value
            self._project = load_settings(config_file=self.config_file, overrides=overrides)
            from wms.sandbox import images  # Pillow: only for commands that read settings

            images.configure(self._project.settings.data.decode_sandbox)
            images.tell_when_unconfined(print_warning)
            for line in stray_env_variables(os.environ):
                print_warning(line)
        return self._project


def dataset_folder(path: Path, name: str = "") -> Path:
    """`path` when it is a folder; else UsageError (exit 2): a wrong path is the caller's mistake,
    not data that failed. `name` is the option that gave it (`--new-data`), if any."""
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        given = f"{name} {path}" if name else str(path)
        raise UsageError(f"{given} {what}: name a dataset folder, one holding images/ and masks/")
    return path


def state(ctx: typer.Context) -> CliState:
    """The CliState of this invocation (the root callback creates it)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


class Advance:
    """Moves a progress bar: `advance()` one step (`advance(n)`: n); `advance.expect(total)` gives
    the bar its total once the work knows it (the blobs an ingest must upload, the pairs found)."""

    def __init__(self, bar: Progress, task: Any) -> None:
        self._bar, self._task = bar, task

    def __call__(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)

    def expect(self, total: int) -> None:
        self._bar.update(self._task, total=total)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Advance]:
    """A progress bar on stderr, when stderr is a terminal; yields an `Advance`."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # in a log or a pipe it would leave an empty line
    ) as bar:
        yield Advance(bar, bar.add_task(description, total=total))


def capture_inbox(ctx: typer.Context, project: Project, source: str | None = None) -> tuple[Path, str]:
    """The photos a command reads as a local folder, and where they came from ("" when it is that
    folder itself): `source` (--from) a folder or an s3:// inbox, or, when None, the capture inbox
    (serve.capture_dir). An s3:// inbox, where the chart's pods capture, is copied (photos and
    metadata) to a temporary folder that lasts as long as the command."""
    import tempfile

    from wms.inbox import copy_inbox, local_inbox

    if source is not None and not source.startswith("s3://"):
        return Path(source), ""
    capture_dir = source or project.settings.serve.capture_dir
    if not capture_dir.startswith("s3://"):
        return local_inbox(capture_dir, project.root), ""
    copy = Path(ctx.with_resource(tempfile.TemporaryDirectory(prefix="wms-inbox-")))
    with progress_bar(f"copying {capture_dir}", None) as advance:
        copy_inbox(capture_dir, copy, progress=advance, expect=advance.expect)
    return copy, capture_dir


class TrainProgress:
    """Shows training as a progress bar per epoch and one line per finished epoch."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if not err_console.is_terminal:
            return  # a bar in a log file is noise; the per-epoch line says enough
        self._bar = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=steps, loss="…")

    def step_done(self, loss: float | None) -> None:
        if self._bar is not None:
            if loss is None:  # a step whose loss was not read (reading it would sync the GPU)
                self._bar.update(self._task, advance=1)
            else:
                self._bar.update(self._task, advance=1, loss=f"{loss:.3f}")

    def close(self) -> None:
        """Stop a bar still showing (training stopped mid-epoch): it gives the cursor back."""
        self._stop_bar()

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        self._stop_bar()
        console.print(
            f"  epoch {epoch:>3}  loss {metrics['train_loss']:.4f}  val Dice {metrics['val_dice']:.4f}"
            f"  ({metrics['epoch_seconds']:.1f} s)",
            highlight=False,
        )

    def refine_pass_done(self, done: int, metrics: dict[str, float]) -> None:
        self._stop_bar()
        console.print(
            f"  second stage, pass {done:>3}  loss {metrics['refine_loss']:.4f}"
            f"  ({metrics['refine_seconds'] / 60:.1f} min)",
            highlight=False,
        )
