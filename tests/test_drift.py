"""`wms monitor drift`: photos brighter than the training ones drift; a fresh sample of them does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from wms.config import load_settings
from wms.data.store import open_store
from wms.data.synth import synthesize
from wms.drift import bins_for, psi
from wms.drift_report import GAUGES, PROM_FILE


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    reference, same = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    assert psi(reference, same, bins_for(200, 200)) < 0.1  # 5 bins: the bias is about 4 / 100
    assert psi(reference, same + 1, bins_for(200, 200)) > 0.5
    assert psi(np.ones(50), np.full(50, 2.0), 5) > 1  # an empty bin is finite, not infinite
    assert bins_for(56, 60) == 2 and bins_for(200, 200) == 5 and bins_for(1000, 500) == 10


def _capture(folder: Path, source: Path, when: str, brighter: int = 0) -> None:
    """Photos as the service's capture leaves them: photo, pre-label mask and metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16) + brighter
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{path.stem}.jpg", quality=95)
        Image.new("L", (64, 64)).save(folder / f"{path.stem}.mask.png")
        meta = {"time": when, "model_version": "1", "uncertainty": {"score": 0.1}, "width": 64, "height": 64}
        (folder / f"{path.stem}.json").write_text(json.dumps(meta))


@pytest.fixture
def production(project_dir: Path, exported_model: Path, register_model: Callable[..., str]) -> Path:
    """Production trained on dataset version V of the store; the inbox holds 60 photos of the same kind."""
    synthesize(project_dir / "dataset", count=80, size=64, seed=2)
    project = load_settings(start=project_dir)
    version = open_store(project).ingest(project_dir / "dataset", None).version
    register_model(project_dir, exported_model, dataset_version=version)
    synthesize(project_dir / "fresh", count=60, size=64, seed=3)
    _capture(project_dir / ".wms" / "inbox", project_dir / "fresh" / "images", "2025-06-02T10:00:00Z")
    _capture(project_dir / "old", project_dir / "fresh" / "images", "2025-05-01T10:00:00Z", brighter=90)
    (project_dir / ".wms" / "inbox" / "readme.txt").write_text("not a photo")
    return project_dir


def _gauges(folder: Path) -> dict[tuple[str, str], float]:
    text = (folder / PROM_FILE).read_text()
    return {
        (s.name, s.labels.get("feature", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model_version") == "1"
    }


def test_brighter_photos_drift_and_a_fresh_sample_does_not(
    cli: Callable[..., Any], production: Path, tmp_path: Path
) -> None:
    calm = cli("monitor", "drift", "--since", "2025-06-01", "--out", tmp_path / "calm")
    assert calm.exit_code == 0, calm.output + calm.stderr
    assert "no drift" in calm.output and "1 not a photo" in calm.output
    report = json.loads((tmp_path / "calm" / "drift.json").read_text())
    assert report["flagged"] == [] and report["model_version"] == "1"
    assert "training photos of dataset version" in report["reference_source"]
    by_feature = {f["feature"]: f for f in report["features"]}
    assert by_feature["brightness"]["psi"] < 0.2 and by_feature["brightness"]["captured"]["n"] == 60
    assert not by_feature["width"]["comparable"]  # every photo is 64 px wide: nothing to compare
    assert {(name, "") for name in GAUGES if name not in ("wms_drift_psi", "wms_drift_flagged")} <= set(
        _gauges(tmp_path / "calm")
    )
    assert _gauges(tmp_path / "calm")[("wms_drift_flagged", "brightness")] == 0

    bright = cli("monitor", "drift", "--from", production / "old", "--out", tmp_path / "bright")
    assert bright.exit_code == 0, bright.output + bright.stderr
    assert "drift in" in bright.output and "brightness" in bright.output
    report = json.loads((tmp_path / "bright" / "drift.json").read_text())
    assert "brightness" in report["flagged"] and "width" not in report["flagged"]
    gauges = _gauges(tmp_path / "bright")
    assert gauges[("wms_drift_flagged", "brightness")] == 1 and gauges[("wms_drift_psi", "brightness")] > 0.2
    page = (tmp_path / "bright" / "report.html").read_text()
    assert all(
        f"hist-{name}.png" in page and (tmp_path / "bright" / f"hist-{name}.png").is_file()
        for name in by_feature
    )


def test_too_few_photos_are_reported_as_too_few_not_as_no_drift(
    cli: Callable[..., Any], production: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_MONITOR__MIN_PHOTOS", "100")  # 60 brighter photos: a drift, if enough
    result = cli("monitor", "drift", "--from", production / "old", "--out", tmp_path / "few")
    assert result.exit_code == 0, result.output + result.stderr
    assert "too few photos to call drift: 60 captured, monitor.min_photos is 100" in result.output
    assert "no drift" not in result.output and "stable" not in result.output
    report = json.loads((tmp_path / "few" / "drift.json").read_text())
    by_feature = {f["feature"]: f for f in report["features"]}
    assert report["flagged"] == [] and by_feature["brightness"]["psi"] > 0.2
    assert by_feature["brightness"]["status"] == "too few photos"
    assert "too few photos to call drift" in (tmp_path / "few" / "report.html").read_text()
    assert _gauges(tmp_path / "few")[("wms_drift_flagged", "brightness")] == 0


def test_since_counts_from_when_the_service_captured_a_photo_not_when_its_file_was_copied(
    tmp_path: Path,
) -> None:
    """An inbox copied from S3 or another machine has new file times; the metadata keeps the capture's."""
    import os
    from datetime import UTC, datetime

    from wms.config import ServeSettings
    from wms.drift import captured_photos
    from wms.serve.capture import Capture, Captured
    from wms.uncertainty import Assessment

    inbox = tmp_path / "inbox"
    settings = ServeSettings(capture="sample", capture_sample_rate=1.0, capture_dir=str(inbox))
    capture = Capture(settings, "3", 0.5, count=lambda outcome: None)
    image = Image.new("RGB", (40, 30), (90, 90, 90))
    sure = Assessment(score=0.1, entropy=0.1, uncertain_share=0.0, regions=1, verdict="sure")
    capture.write(Captured(b"upload", image, b"mask", sure, 0.1, "sample"))
    captured = datetime.now(UTC)
    later = datetime(2030, 1, 2, tzinfo=UTC).timestamp()
    for path in inbox.rglob("*"):
        os.utime(path, (later, later))  # as a copy made then leaves them

    assert captured_photos(inbox, datetime(2030, 1, 1, tzinfo=UTC))[0] == []
    photos, _ = captured_photos(inbox, datetime(2020, 1, 1, tzinfo=UTC))
    assert abs((photos[0].time - captured).total_seconds()) < 60


def test_a_window_with_no_photos_clears_the_drift_an_earlier_report_flagged(
    cli: Callable[..., Any], production: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled run over a quiet week (or an emptied inbox) says so and lowers the flags, so
    WmsInputDrift stops firing on last week's drift."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    monkeypatch.setenv("WMS_MONITOR__TEXTFILE_DIR", str(textfile))
    bright = cli("monitor", "drift", "--from", production / "old", "--out", tmp_path / "bright")
    assert bright.exit_code == 0, bright.output + bright.stderr
    assert _gauges(textfile)[("wms_drift_flagged", "brightness")] == 1

    late = cli("monitor", "drift", "--since", "2030-01-01T00:00+02:00", "--out", tmp_path / "late")
    assert late.exit_code == 0, late.output + late.stderr
    assert "0 since 2030-01-01T00:00:00+02:00" in late.output
    assert "too few photos to call drift: 0 captured" in late.output
    gauges = _gauges(textfile)
    assert gauges[("wms_drift_captured_photos", "")] == 0
    assert not any(value for (name, _), value in gauges.items() if name == "wms_drift_flagged")
    report = json.loads((tmp_path / "late" / "drift.json").read_text())
    assert report["flagged"] == [] and report["since"] == "2030-01-01T00:00:00+02:00"
    assert "too few photos to call drift" in (tmp_path / "late" / "report.html").read_text()


def test_a_textfile_dir_node_exporter_cannot_be_reading_is_one_line_not_a_silent_folder(
    cli: Callable[..., Any], production: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped monitor.textfile_dir was made as a new folder that node-exporter never reads:
    the gauges never reached Prometheus and nothing said so. It is refused before any work; a
    folder the gauges cannot be written into is one line too, not a traceback."""
    typo = tmp_path / "textfile_colector"
    monkeypatch.setenv("WMS_MONITOR__TEXTFILE_DIR", str(typo))
    refused = cli("monitor", "drift", "--out", tmp_path / "report")
    assert refused.exit_code == 2
    assert f"monitor.textfile_dir {typo} is not a folder" in refused.stderr
    assert not typo.exists() and not (tmp_path / "report").exists()

    textfile = tmp_path / "textfile"
    (textfile / PROM_FILE).mkdir(parents=True)  # stands for a file this user may not replace
    monkeypatch.setenv("WMS_MONITOR__TEXTFILE_DIR", str(textfile))
    failed = cli("monitor", "drift", "--out", tmp_path / "report")
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    assert f"cannot write {PROM_FILE} into monitor.textfile_dir {textfile}" in failed.stderr
    assert (tmp_path / "report" / "drift.json").exists()


def test_a_model_trained_on_a_version_this_store_lacks_points_to_reference(project_dir: Path) -> None:
    """E.g. drift run against another store than the model's: the line says what to do instead."""
    from wms.drift import training_reference
    from wms.errors import DataError

    with pytest.raises(DataError) as caught:
        training_reference(load_settings(start=project_dir), "0123456789ab", 10, 0)
    message = str(caught.value)
    assert "dataset version '0123456789ab' is not in the store" in message
    assert message.endswith("; or pass --reference DIR (a dataset folder) to compare with")


def test_the_clusters_inbox_on_s3_is_read_where_the_schedule_runs_it(
    cli: Callable[..., Any], production: Path, tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's pods' captures reach s3://.../inbox (through their node); the scheduled report on the
    serving node reads that inbox, where it had said "copy it here first" and exited."""
    import boto3

    s3 = boto3.client("s3")
    inbox = production / ".wms" / "inbox"
    for photo in sorted(inbox.glob("*.jpg")):  # the layout the service's capture writes
        s3.put_object(Bucket=s3_bucket, Key=f"wms/inbox/images/{photo.name}", Body=photo.read_bytes())
        meta = (inbox / f"{photo.stem}.json").read_bytes()
        s3.put_object(Bucket=s3_bucket, Key=f"wms/inbox/meta/{photo.stem}.json", Body=meta)
        s3.put_object(Bucket=s3_bucket, Key=f"wms/inbox/masks/{photo.stem}.png", Body=b"mask")
    s3.put_object(Bucket=s3_bucket, Key="wms/inbox/images/half.jpg.tmp", Body=b"being written")
    monkeypatch.setenv("WMS_SERVE__CAPTURE_DIR", f"s3://{s3_bucket}/wms/inbox")
    result = cli("monitor", "drift", "--since", "2025-06-01", "--out", tmp_path / "s3")
    assert result.exit_code == 0, result.output + result.stderr
    assert "no drift" in result.output
    report = json.loads((tmp_path / "s3" / "drift.json").read_text())
    assert {f["feature"]: f for f in report["features"]}["brightness"]["captured"]["n"] == 60
    monkeypatch.delenv("WMS_SERVE__CAPTURE_DIR")
    named = cli("monitor", "drift", "--from", f"s3://{s3_bucket}/wms/inbox", "--out", tmp_path / "named")
    assert named.exit_code == 0, named.output + named.stderr  # was: "s3:/... does not exist"
    report = json.loads((tmp_path / "named" / "drift.json").read_text())
    assert {f["feature"]: f for f in report["features"]}["brightness"]["captured"]["n"] == 60

    monkeypatch.setenv("WMS_SERVE__CAPTURE_DIR", f"s3://{s3_bucket}-missing/wms/inbox")
    missing = cli("monitor", "drift", "--out", tmp_path / "missing")
    assert missing.exit_code == 2 and "Traceback" not in missing.output + missing.stderr
    assert "cannot read the capture inbox" in missing.output + missing.stderr


def test_an_s3_inbox_that_aws_refuses_or_that_does_not_answer_is_a_backend_failure_not_bad_input(
    cli: Callable[..., Any], project_dir: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wms --help`: exit 2 is what the command was told being wrong (a bucket that does not
    exist), exit 1 a backend that failed: AccessDenied, or no answer, had exited 2 as well."""
    import boto3
    from moto.core.authorization import enable_iam_authentication

    boto3.client("s3").put_object(Bucket=s3_bucket, Key="wms/inbox/images/a.jpg", Body=b"photo")
    iam = boto3.client("iam")
    iam.create_user(UserName="no-rights")
    key = iam.create_access_key(UserName="no-rights")["AccessKey"]  # a user with no policy at all
    monkeypatch.setenv("WMS_SERVE__CAPTURE_DIR", f"s3://{s3_bucket}/wms/inbox")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    with enable_iam_authentication():
        denied = cli("monitor", "drift", "--out", project_dir / "denied")
    assert denied.exit_code == 1, denied.stderr
    assert denied.stderr.strip().splitlines() == [
        f"error: could not read the capture inbox s3://{s3_bucket}/wms/inbox (Access Denied); check the AWS "
        "credentials, that they may list and read that prefix, and that S3 answers"
    ]

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    unreachable = cli("monitor", "drift", "--out", project_dir / "unreachable")
    assert unreachable.exit_code == 1, unreachable.stderr
    assert "Could not connect to the endpoint URL" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
