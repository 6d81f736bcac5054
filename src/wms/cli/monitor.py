"""`wms monitor`: watch what production gets against what its model was trained on."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from wms.cli._common import WmsGroup, capture_inbox, console, progress_bar, state, styled

app = typer.Typer(
    cls=WmsGroup,
    no_args_is_help=True,
    help="Production's inputs: drift of the captured photos from the training photos.",
)


@app.command()
def drift(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None, "--since", help="Only photos captured at or after this ISO time, e.g. 2025-06-01T00:00Z."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for report.html, drift.json, wms_drift.prom (default: monitor.report_dir).",
    ),
    source: str | None = typer.Option(
        None,
        "--from",
        help="Folder of captured photos, or an s3:// inbox (copied); default: the capture inbox, "
        "serve.capture_dir.",
    ),
    model: str = typer.Option("production", "--model", "-m", help="Alias, version number or model folder."),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="A dataset folder as the reference instead of the model's training photos from the store.",
    ),
) -> None:
    """Compare the captured photos with the model's training photos, feature by feature (PSI).

    Features: brightness, contrast, width, height, aspect, predicted foreground fraction and
    uncertainty. A feature whose PSI is over monitor.psi_threshold has drifted; the gauges
    wms_drift_psi and wms_drift_flagged go to wms_drift.prom for node-exporter's textfile collector.
    """
    from wms.drift import (
        DriftReport,
        captured_photos,
        compare,
        features_of,
        file_loader,
        folder_reference,
        training_reference,
    )
    from wms.drift_report import write_report
    from wms.errors import RegistryError, UsageError
    from wms.serve.fetch import load_model
    from wms.times import parse_time

    project = state(ctx).project()
    cfg = project.settings.monitor
    when = None
    if since is not None and (when := parse_time(since)) is None:
        raise UsageError(
            f"--since {since!r} is not an ISO 8601 time; write e.g. 2025-06-01 or 2025-06-01T08:00Z"
        )
    # node-exporter reads the folder it was started with; one made here (a typo) it never reads.
    textfile = project.path(cfg.textfile_dir) if cfg.textfile_dir else None
    if textfile is not None and not textfile.is_dir():
        raise UsageError(
            f"monitor.textfile_dir {textfile} is not a folder; set it to node-exporter's "
            '--collector.textfile.directory, or to "" to write no gauges there'
        )
    target = out or project.path(cfg.report_dir)
    if target.exists() and not target.is_dir():
        raise UsageError(f"--out {target} is a file; name a folder (it is created if missing)")
    inbox, copied_from = capture_inbox(ctx, project, source)
    photos, captured_line = captured_photos(inbox, when, copied_from)
    try:
        served = load_model(project, model)
    except RegistryError as exc:
        raise UsageError(f"cannot load model {model!r}: {exc}") from None
    if reference is not None:
        loaders, reference_line = folder_reference(reference, cfg.reference_photos, cfg.seed)
    else:
        loaders, reference_line = training_reference(
            project, served.card.dataset_version, cfg.reference_photos, cfg.seed
        )
    if not photos:  # a quiet window: a report that flags nothing replaces the last one's gauges
        loaders = []
    with progress_bar("reference photos", len(loaders)) as advance:
        ref_values, ref_bad = features_of(served.segmenter, loaders, advance)
    with progress_bar("captured photos", len(photos)) as advance:
        cap_values, cap_bad = features_of(served.segmenter, [file_loader(p.path) for p in photos], advance)
    if photos and (not ref_values["brightness"] or not cap_values["brightness"]):
        raise UsageError("no photo could be read on one side of the comparison; see the counts above")
    report = DriftReport(
        model_version=served.version,
        reference_source=reference_line,
        captured_source=captured_line,
        since=when.isoformat() if when else None,
        threshold=cfg.psi_threshold,
        min_photos=cfg.min_photos,
        features=compare(ref_values, cap_values, cfg.psi_threshold, cfg.min_photos),
        values={"reference": ref_values, "captured": cap_values},
        skipped={"reference_unreadable": ref_bad, "captured_unreadable": cap_bad},
    )
    page = write_report(report, target, textfile)

    table = Table(
        "feature",
        "PSI",
        "",
        "training median",
        "captured median",
        title=f"drift against model {served.version} (PSI over {cfg.psi_threshold:g} is drift)",
    )
    for item in report.features:
        status = styled(item.status, {"drifted": "red", "stable": ""}.get(item.status, "dim"))
        table.add_row(
            item.feature,
            f"{item.psi:.3f}",
            status,
            f"{item.reference['p50']:.4g}",
            f"{item.captured['p50']:.4g}",
        )
    if report.features:
        console.print(table)
    console.print(f"reference: {reference_line}", highlight=False, soft_wrap=True)
    console.print(
        f"captured: {captured_line}" + (f"; {cap_bad} unreadable" if cap_bad else ""),
        highlight=False,
        soft_wrap=True,
    )
    colour = "red" if report.flagged else ("yellow" if report.too_few else "green")
    console.print(styled(f"{report.verdict};", colour), f"wrote {page}", highlight=False, soft_wrap=True)
