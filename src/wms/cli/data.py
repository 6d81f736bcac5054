"""`wms data`: make, check and inspect dataset folders."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from wms.cli._common import (
    WmsGroup,
    console,
    dataset_folder,
    describe_os_error,
    progress_bar,
    report_file,
    state,
    styled,
)
from wms.data.prepare import RESIZE_MODES, ResizeMode, prepare_dataset
from wms.data.synth import synthesize
from wms.data.validate import Issue, validate_dataset
from wms.errors import DataError, UsageError

LISTED = 30  # more issues than this are shown by kind, with a count and an example

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help="Dataset folders: `images/` and `masks/`, one file per pair sharing its stem.",
)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write images/ and masks/ into."),
    count: int = typer.Option(64, "--count", "-n", min=1, help="Number of pairs."),
    size: int = typer.Option(512, "--size", min=16, help="Side of the square images, in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same pairs."),
) -> None:
    """Write synthetic water-meter photos with counter-window masks (values 0/255)."""
    with progress_bar(f"synthesizing {count} pairs", count) as advance:
        ids = synthesize(out, count=count, size=size, seed=seed, progress=advance)
    console.print(f"wrote {len(ids)} pairs ({size}x{size}) to {out}/images and {out}/masks")


@app.command()
def validate(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="Dataset folder holding images/ and masks/."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_out: Path | None = typer.Option(None, "--markdown", help="Write the report as Markdown here."),
    size: int | None = typer.Option(
        None, "--size", min=1, help="Required side in pixels (default: data.size)."
    ),
    any_size: bool = typer.Option(False, "--any-size", help="Skip the size check (raw, unprepared data)."),
    incoming: bool = typer.Option(
        False,
        "--incoming",
        help="DIR is a batch of new pairs: check it as the pipeline takes it in, prepared first "
        "where data.auto_prepare is on.",
    ),
) -> None:
    """Check every pair; exit 0 when valid, 1 when not, 2 on a wrong path. Issues say how to fix them."""
    from wms.report import write_github_output, write_step_summary

    dataset_folder(directory)
    report_file("--json", json_out)
    report_file("--markdown", markdown_out)
    data = state(ctx).project().settings.data  # read even with --any-size: data.decode_sandbox
    if incoming:
        from wms.data.merge import validate_incoming

        with progress_bar("preparing and validating" if data.auto_prepare else "validating", None):
            report = validate_incoming(directory, size or data.size, data.auto_prepare)
    else:
        required = None if any_size else (size or data.size)
        with progress_bar("validating", None) as advance:
            report = validate_dataset(directory, size=required, progress=advance, expect=advance.expect)
    if json_out:
        _write_report(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
    if markdown_out:
        _write_report(markdown_out, report.to_markdown())
    write_github_output(
        {
            "ok": str(report.ok).lower(),
            "pairs": str(report.pairs),
            "errors": str(len(report.errors)),
            "warnings": str(len(report.warnings)),
        }
    )
    write_step_summary(f"### Validation of {directory}\n\n{report.to_markdown()}")
    if len(report.issues) > LISTED:
        _print_kinds(report.issues)
    elif report.issues:
        table = Table("severity", "code", "path", "message", title=f"{len(report.issues)} issue(s)")
        for issue in report.issues:
            table.add_row(issue.severity, issue.code, issue.path, issue.message)
        console.print(table)
    verdict = styled("valid", "green") if report.ok else styled("invalid", "red")
    console.print(
        f"{directory}:",
        verdict,
        f"— {report.pairs} pairs, {len(report.errors)} error(s), {len(report.warnings)} warning(s)",
    )
    raise typer.Exit(0 if report.ok else 1)


def _write_report(path: Path, text: str) -> None:
    """Write a report file (its folder made by report_file before validating); a path that cannot
    be written is a usage error (exit 2), since exit 1 says the data is invalid."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise UsageError(describe_os_error(exc)) from None


def _print_kinds(issues: list[Issue]) -> None:
    """Many issues (a raw dataset has several per pair): one row per kind, with an example."""
    kinds: dict[tuple[str, str], list[Issue]] = {}
    for issue in issues:
        kinds.setdefault((issue.severity, issue.code), []).append(issue)
    title = f"{len(issues)} issue(s) of {len(kinds)} kind{'' if len(kinds) == 1 else 's'}"
    table = Table("severity", "code", "files", "e.g.", "message", title=title)
    for (severity, code), members in kinds.items():
        table.add_row(severity, code, str(len(members)), members[0].path, members[0].message)
    console.print(table)
    console.print("every issue, file by file: --json FILE or --markdown FILE", highlight=False)


@app.command()
def prepare(
    ctx: typer.Context,
    src: Path = typer.Argument(..., help="Raw dataset folder holding images/ and masks/."),
    out: Path = typer.Argument(..., help="Folder to write the prepared images/ and masks/ into."),
    size: int | None = typer.Option(None, "--size", min=16, help="Side in pixels (default: data.size)."),
    resize: str = typer.Option("stretch", "--resize", help="stretch to a square, or pad (keep aspect)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it is not empty."),
) -> None:
    """Resize to size x size, apply EXIF orientation, binarise masks; exit 1 if a file was skipped."""
    if resize not in RESIZE_MODES:
        raise typer.BadParameter(f"use one of: {', '.join(RESIZE_MODES)}", param_hint="--resize")
    mode: ResizeMode = "pad" if resize == "pad" else "stretch"
    dataset_folder(src)
    data = state(ctx).project().settings.data  # read even with --size: data.decode_sandbox
    side = size or data.size
    with progress_bar("preparing", None) as advance:
        report = prepare_dataset(
            src, out, size=side, resize=mode, progress=advance, overwrite=overwrite, expect=advance.expect
        )
    if report.written:
        console.print(
            f"wrote {report.written} pairs ({side}x{side}, {resize}) "
            f"to {out}/images (JPEG) and {out}/masks (PNG)"
        )
    for item in report.skipped:
        console.print(styled("skipped", "yellow"), f"{item.path}: {item.reason}", highlight=False)
    if report.skipped:
        console.print(styled(f"{len(report.skipped)} file(s) skipped", "red"))
    if not report.written:
        raise DataError(f"no pair in {src} could be prepared, so nothing was written to {out}")
    raise typer.Exit(1 if report.skipped else 0)
