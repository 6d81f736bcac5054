"""What `wms monitor drift` leaves behind: a page for a person, JSON, and gauges for Prometheus.

    report.html           a table of the features and a histogram each, reference against captured
    hist-<feature>.png    the histograms (matplotlib where installed, else bars drawn with Pillow)
    drift.json            every number of the report
    wms_drift.prom        the gauges, in the text format of node-exporter's textfile collector

The gauges reach Prometheus through node-exporter's textfile collector: it exports every
`*.prom` file of its `--collector.textfile.directory` with its own metrics, so a scheduled
`wms monitor drift` (a cron job, a Kubernetes CronJob with that directory mounted) needs no
server of its own. monitor.textfile_dir names that directory; the file is written aside and
renamed there, so the collector never reads half of it. The alert WmsInputDrift
(devops/helm/wms-model/files/alerts.rules.yaml) fires on `wms_drift_flagged`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from wms.drift import FEATURES, DriftReport
from wms.errors import UsageError

PROM_FILE = "wms_drift.prom"
GAUGES = {
    "wms_drift_psi": "Population stability index of a feature of the captured photos against the "
    "training photos of the model (wms monitor drift).",
    "wms_drift_flagged": "1 where that index is over monitor.psi_threshold (for a feature that can drift).",
    "wms_drift_threshold": "monitor.psi_threshold when the report was made.",
    "wms_drift_captured_photos": "Captured photos the report compared.",
    "wms_drift_timestamp_seconds": "Unix time of the report.",
}
REFERENCE, CAPTURED = "#1f77b4", "#ff7f0e"


def write_prom(report: DriftReport, path: Path) -> Path:
    """The gauges as a textfile-collector file, written aside and renamed into place."""
    from datetime import datetime

    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    labels = ["feature", "model_version"]
    psi = Gauge("wms_drift_psi", GAUGES["wms_drift_psi"], labels, registry=registry)
    flagged = Gauge("wms_drift_flagged", GAUGES["wms_drift_flagged"], labels, registry=registry)
    for item in report.features:
        psi.labels(item.feature, report.model_version).set(item.psi)
        flagged.labels(item.feature, report.model_version).set(int(item.flagged))
    version = ["model_version"]
    Gauge("wms_drift_threshold", GAUGES["wms_drift_threshold"], version, registry=registry).labels(
        report.model_version
    ).set(report.threshold)
    captured = len(report.values["captured"][FEATURES[0]])
    Gauge(
        "wms_drift_captured_photos", GAUGES["wms_drift_captured_photos"], version, registry=registry
    ).labels(report.model_version).set(captured)
    Gauge(
        "wms_drift_timestamp_seconds", GAUGES["wms_drift_timestamp_seconds"], version, registry=registry
    ).labels(report.model_version).set(datetime.fromisoformat(report.created_at).timestamp())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)  # writes PATH.<pid>.tmp, then renames it over PATH
    return path


def _histogram_matplotlib(
    ref: np.ndarray, cap: np.ndarray, edges: np.ndarray, title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    for values, colour, side in ((ref, REFERENCE, "training"), (cap, CAPTURED, "captured")):
        label = f"{side} ({len(values)})"
        ax.hist(values, bins=edges.tolist(), density=True, alpha=0.55, color=colour, label=label)
    ax.set(title=title, ylabel="density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _histogram_pillow(ref: np.ndarray, cap: np.ndarray, edges: np.ndarray, title: str, path: Path) -> None:
    from PIL import Image, ImageDraw

    width, height, top = 450, 270, 30
    shares = [np.histogram(v, bins=edges)[0] / max(1, len(v)) for v in (ref, cap)]
    tallest = max(float(s.max()) for s in shares) or 1.0
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), f"{title}   blue: training ({len(ref)}), orange: captured ({len(cap)})", fill="black")
    step = (width - 20) / len(shares[0])
    for side, (share, colour) in enumerate(zip(shares, (REFERENCE, CAPTURED), strict=True)):
        for i, value in enumerate(share):
            x0 = 10 + i * step + side * step / 2
            bar = (height - top - 20) * float(value) / tallest
            draw.rectangle((x0, height - 20 - bar, x0 + step / 2 - 1, height - 20), fill=colour)
    draw.text((10, height - 16), f"{edges[0]:.3g}", fill="black")
    draw.text((width - 60, height - 16), f"{edges[-1]:.3g}", fill="black")
    image.save(path)


def histogram(ref: list[float], cap: list[float], title: str, path: Path) -> None:
    """Reference and captured values of one feature on shared bins, as a PNG."""
    r, c = np.asarray(ref, dtype=float), np.asarray(cap, dtype=float)
    low, high = float(min(r.min(), c.min())), float(max(r.max(), c.max()))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, 21)
    try:
        _histogram_matplotlib(r, c, edges, title, path)
    except ImportError:
        _histogram_pillow(r, c, edges, title, path)


def _spread(summary: dict[str, float]) -> str:
    return f"{summary['p50']:.4g} ({summary['p10']:.4g} to {summary['p90']:.4g})"


def write_report(report: DriftReport, out: Path, textfile_dir: Path | None = None) -> Path:
    """Write report.html, the histograms, drift.json and wms_drift.prom into `out`; returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in report.features:
        picture = f"hist-{item.feature}.png"
        status = item.status
        histogram(
            report.values["reference"][item.feature],
            report.values["captured"][item.feature],
            f"{item.feature}: PSI {item.psi:.3f} ({status})",
            out / picture,
        )
        colour = {"drifted": "#c00", "stable": "#080"}.get(status, "#888")
        rows.append(
            f"<tr><td>{item.feature}</td><td>{item.psi:.3f}</td>"
            f"<td style='color:{colour}'><b>{status}</b></td>"
            f"<td>{_spread(item.reference)}</td><td>{_spread(item.captured)}</td>"
            f"<td>{html.escape(item.note)}</td></tr>"
        )
    pictures = "".join(f"<img src='hist-{f.feature}.png' alt='{f.feature}'>" for f in report.features)
    bins = (
        f"<p>Bins: {report.features[0].bins} at the training photos' quantiles.</p>"
        if report.features
        else ""
    )
    page = out / "report.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>WMS input drift</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left}"
        "img{margin:4px;border:1px solid #ddd}</style>"
        f"<h1>Input drift against model {html.escape(report.model_version)}</h1>"
        f"<p><b>{html.escape(report.verdict)}</b> (PSI over {report.threshold:g} is drift)</p>"
        f"<p>Reference: {html.escape(report.reference_source)}.<br>"
        f"Captured: {html.escape(report.captured_source)}.<br>Made {report.created_at}.</p>"
        "<table><tr><th>feature</th><th>PSI</th><th></th><th>training median (p10 to p90)</th>"
        f"<th>captured median (p10 to p90)</th><th></th></tr>{''.join(rows)}</table>"
        f"{bins}{pictures}\n"
    )
    (out / "drift.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    write_prom(report, out / PROM_FILE)
    if textfile_dir is not None:
        try:
            write_prom(report, textfile_dir / PROM_FILE)
        except OSError as exc:
            raise UsageError(
                f"cannot write {PROM_FILE} into monitor.textfile_dir {textfile_dir} ({exc.strerror}); "
                f"let this user write there (the report is in {out})"
            ) from None
    return page
