from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from wms.config import load_settings
from wms.data.hashes import sha256_file
from wms.errors import RegistryError
from wms.production import move_production, production_at, read_history, record_move, roll_back
from wms.registry import MlflowRegistry, ModelRecord, Registry
from wms.train.spec import verify_model_folder


@pytest.fixture
def registry(project_dir: Path, tracking: str) -> MlflowRegistry:
    """The same tests run on the embedded SQLite MLflow and on a real `mlflow server`."""
    return MlflowRegistry(load_settings(start=project_dir))


def logged_run(registry: MlflowRegistry, tmp_path: Path, dice: float) -> str:
    model = tmp_path / f"model-{dice}"
    model.mkdir()
    (model / "model.json").write_text("{}")
    (model / "model.pt").write_bytes(f"weights {dice}".encode())
    with registry.start_run("test", {"wms.dataset_version": f"data-{dice}"}) as run:
        run.log_metrics({"test_dice": dice, "test_iou": dice - 0.1})
        run.log_artifacts(model, "model")
        run.set_tags({"wms.model_sha256": sha256_file(model / "model.pt"), "wms.git_commit": "abc123"})
    return run.run_id


def test_promotion_moves_production_and_previous(registry: MlflowRegistry, tmp_path: Path) -> None:
    assert registry.production() is None
    v1 = registry.register(logged_run(registry, tmp_path, 0.7), {"dataset_version": "a"})
    assert registry.promote(v1.version) is None
    v2 = registry.register(logged_run(registry, tmp_path, 0.8), {"dataset_version": "b"})
    old = registry.promote(v2.version)
    assert old is not None and old.version == v1.version
    listed = {r.version: r for r in registry.list()}
    assert listed[v2.version].aliases == ["production"]
    assert listed[v1.version].aliases == ["previous"]
    assert listed[v2.version].metrics["test_dice"] == pytest.approx(0.8)
    assert listed[v2.version].tags["dataset_version"] == "b"


def test_a_version_carries_what_traces_it(registry: MlflowRegistry, tmp_path: Path) -> None:
    run_id = logged_run(registry, tmp_path, 0.7)
    record = registry.register(run_id, {"gate": "pass"})
    assert record.tags["run_id"] == run_id
    assert record.tags["git_commit"] == "abc123"
    assert record.tags["dataset_version"] == "data-0.7"
    assert record.tags["gate"] == "pass"
    assert len(record.tags["model_sha256"]) == 64


def test_rollback_swaps_production_and_previous_and_the_ledger_has_every_move(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    ledger = tmp_path / "models"
    v1 = registry.register(logged_run(registry, tmp_path, 0.7), {}).version
    v2 = registry.register(logged_run(registry, tmp_path, 0.8), {}).version
    move_production(registry, ledger, v1, action="promote", reason="first", by="test")
    move_production(registry, ledger, v2, action="promote", reason="better", by="test")
    entry = roll_back(registry, ledger, reason="v2 misreads dials", by="test")
    assert registry.production().version == v1  # type: ignore[union-attr]
    assert registry.previous().version == v2  # type: ignore[union-attr]
    assert (entry["from_version"], entry["to_version"]) == (v2, v1)
    moves = read_history(ledger)
    assert [(m["action"], m["from_version"], m["to_version"]) for m in moves] == [
        ("promote", None, v1),
        ("promote", v1, v2),
        ("rollback", v2, v1),
    ]
    assert moves[1]["metrics"]["dice"] == pytest.approx(0.8)
    assert moves[1]["dataset_version"] == "data-0.8"
    assert all(m["actor"] and m["reason"] and m["at"] for m in moves)
    current = json.loads((ledger / "production_current.json").read_text())
    assert current["to_version"] == v1 and current["action"] == "rollback"


def test_rollback_with_nothing_before_is_a_clear_error(registry: MlflowRegistry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no model is in production"):
        registry.rollback()
    registry.promote(registry.register(logged_run(registry, tmp_path, 0.7), {}).version)
    with pytest.raises(RegistryError, match="no version is aliased 'previous'"):
        registry.rollback()


def test_gate_files_are_added_to_the_candidate_run(registry: MlflowRegistry, tmp_path: Path) -> None:
    run_id = logged_run(registry, tmp_path, 0.7)
    report = tmp_path / "gate"
    report.mkdir()
    (report / "gate.md").write_text("| metric |")
    registry.log_to_run(run_id, report, "gate", {"wms.gate": "fail"})
    record = registry.register(run_id, {})
    assert record.tags["gate"] == "fail"


def test_downloaded_files_are_checked_against_their_recorded_hash(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    record = registry.register(logged_run(registry, tmp_path, 0.7), {})
    with registry.fetched(record.version) as folder:
        assert verify_model_folder(folder, record.tags) == "sha256 checked: model.pt"
        (folder / "model.pt").write_bytes(b"tampered")
        with pytest.raises(RegistryError, match="do not use it"):
            verify_model_folder(folder, record.tags)


def test_a_model_changed_in_the_store_is_refused_however_it_is_named(
    registry: MlflowRegistry, tmp_path: Path
) -> None:
    record = registry.register(logged_run(registry, tmp_path, 0.7), {})
    registry.promote(record.version)
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "model.pt").write_bytes(b"other weights")
    registry.log_to_run(record.run_id, swapped, "model", {})  # the stored model.pt replaced
    refused = r"model\.pt has sha256 .* do not use it"
    for ref in ("production", record.version, record.run_id):
        with pytest.raises(RegistryError, match=refused), registry.fetched(ref):
            pass


def test_a_second_stages_weights_are_checked_as_the_first_ones_are(tmp_path: Path) -> None:
    from wms.data.hashes import sha256_file

    (tmp_path / "model.pt").write_bytes(b"first")
    (tmp_path / "refine.pt").write_bytes(b"second")
    tags = {
        name: sha256_file(tmp_path / f)
        for name, f in (("model_sha256", "model.pt"), ("refine_sha256", "refine.pt"))
    }
    assert verify_model_folder(tmp_path, tags) == "sha256 checked: model.pt, refine.pt"
    (tmp_path / "refine.pt").write_bytes(b"swapped")
    with pytest.raises(RegistryError, match=r"refine\.pt has sha256 .* do not use it"):
        verify_model_folder(tmp_path, tags)


def test_download_gives_back_the_logged_files(registry: MlflowRegistry, tmp_path: Path) -> None:
    version = registry.register(logged_run(registry, tmp_path, 0.7), {}).version
    registry.promote(version)
    with registry.fetched("production") as folder:
        assert (folder / "model.pt").read_bytes() == b"weights 0.7"


def test_unknown_ref_lists_what_exists(registry: MlflowRegistry, tmp_path: Path) -> None:
    registry.register(logged_run(registry, tmp_path, 0.7), {})
    with pytest.raises(RegistryError, match=r"versions: 1"):
        registry.get("7")


def test_a_version_number_past_mlflows_is_no_such_model_at_once(
    cli: Callable[..., Any], registry: MlflowRegistry, tmp_path: Path
) -> None:
    registry.register(logged_run(registry, tmp_path, 0.7), {})
    started = time.monotonic()
    result = cli("model", "promote", "99999999999999999999", "--reason", "a pasted number")
    assert time.monotonic() - started < 30  # the server's 500, retried, took about 4 minutes
    assert result.exit_code == 2
    assert "no model '99999999999999999999' in" in result.output and "(versions: 1)" in result.output


class Failing(http.server.BaseHTTPRequestHandler):
    """An MLflow server that answers every request with 503: it is up, and it cannot say."""

    def do_GET(self) -> None:
        self.send_error(503, "maintenance")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_nothing_in_production_is_an_answer_and_a_failing_server_is_not(
    registry: MlflowRegistry, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the server's answer "no such alias" means nothing is in production: a registry that
    fails must stop the gate, never let it judge a candidate against no baseline."""
    assert registry.production() is None and registry.list() == []
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("WMS_TRACKING__URI", f"http://127.0.0.1:{server.server_address[1]}")
        failing = MlflowRegistry(load_settings(start=project_dir))
        with pytest.raises(RegistryError, match="failed to read model 'production'"):
            failing.production()
        with pytest.raises(RegistryError, match="failed to read the registered model"):
            failing.list()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_tracking_server_that_does_not_answer_is_said_at_once(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMS_TRACKING__URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(
        RegistryError, match=r"MLflow at http://127\.0\.0\.1:9 does not answer; check tracking\.uri"
    ):
        MlflowRegistry(load_settings(start=project_dir))


def test_every_move_is_in_the_ledger(tmp_path: Path) -> None:
    record_move(tmp_path, {"action": "promote", "to_version": "1"})
    record_move(tmp_path, {"action": "promote", "from_version": "1", "to_version": "2"})
    current = json.loads((tmp_path / "production_current.json").read_text())
    history = [json.loads(line) for line in (tmp_path / "production_history.jsonl").read_text().splitlines()]
    assert current["to_version"] == "2"
    assert [h["to_version"] for h in history] == ["1", "2"]
    assert all("at" in h for h in history)


def test_the_ledger_says_what_was_in_production_at_a_time(tmp_path: Path) -> None:
    record_move(tmp_path, {"action": "promote", "to_version": "1"})
    after_first = datetime.now(UTC)
    assert production_at(tmp_path, after_first - timedelta(days=1)) is None
    record_move(tmp_path, {"action": "promote", "to_version": "2", "at": "2999-01-01T00:00:00+00:00"})
    assert production_at(tmp_path, after_first)["to_version"] == "1"  # type: ignore[index]
    assert production_at(tmp_path, datetime(3000, 1, 1, tzinfo=UTC))["to_version"] == "2"  # type: ignore[index]


class InMemoryRegistry:
    """The registry verbs production.py uses, kept in a dict: aliases moved by promote."""

    model_name = "wms"

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}

    def get(self, ref: str) -> ModelRecord:
        return ModelRecord(version=self.aliases.get(ref, ref), run_id=f"run-{ref}")

    def production(self) -> ModelRecord | None:
        return self.get("production") if "production" in self.aliases else None

    def promote(self, version: str) -> ModelRecord | None:
        old = self.production()
        if old is not None:
            self.aliases["previous"] = old.version
        self.aliases["production"] = version
        return old

    def serving(self) -> tuple[str | None, str | None]:
        return self.aliases.get("production"), self.aliases.get("previous")

    def moved(self, where: Path, *versions: str) -> None:
        for version in versions:
            move_production(cast(Registry, self), where, version, action="promote", reason="better", by="t")

    def rolled_back(self, where: Path) -> tuple[str, str]:
        entry = roll_back(cast(Registry, self), where, reason="misreads dials", by="t")
        return entry["from_version"], entry["to_version"]


def test_repeated_rollbacks_step_back_through_the_ledger(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    registry.moved(tmp_path, "1", "2", "3")
    assert registry.rolled_back(tmp_path) == ("3", "2") and registry.serving() == ("2", "3")
    assert registry.rolled_back(tmp_path) == ("2", "1") and registry.serving() == ("1", "2")
    with pytest.raises(RegistryError, match=r"version 1 is the earliest .* `wms model promote VERSION`"):
        registry.rolled_back(tmp_path)
    assert registry.serving() == ("1", "2") and len(read_history(tmp_path)) == 5


def test_a_promotion_after_a_rollback_is_stepped_back_over_like_any_other(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    registry.moved(tmp_path, "1", "2", "3")
    registry.rolled_back(tmp_path)
    registry.moved(tmp_path, "4")
    assert [registry.rolled_back(tmp_path) for _ in range(2)] == [("4", "2"), ("2", "1")]


def test_a_pointer_edited_by_hand_rolls_back_to_its_from_version(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    registry.moved(tmp_path, "1", "2")
    pointer = tmp_path / "production_current.json"
    pointer.write_text(json.dumps({"action": "promote", "from_version": "1", "to_version": "4"}))
    assert registry.rolled_back(tmp_path) == ("4", "1")


@pytest.mark.parametrize("uri", ["sqlite:///notes.txt"])  # a typo'd URI is refused earlier: tests/cli
def test_a_tracking_uri_that_is_no_mlflow_store_is_one_line(
    cli: Callable[..., Any], project_dir: Path, monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    (project_dir / "notes.txt").write_text("not a database\n")
    monkeypatch.setenv("WMS_TRACKING__URI", uri)
    result = cli("model", "list")
    assert result.exit_code == 1
    assert "cannot be opened as an MLflow store" in result.output
    assert "set tracking.uri to an MLflow database" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_version_whose_run_was_deleted_is_still_listed_and_named(
    cli: Callable[..., Any], project_dir: Path, tmp_path: Path
) -> None:
    """A run deleted in the MLflow UI and removed by `mlflow gc` leaves its version behind."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    registry = MlflowRegistry(load_settings(start=project_dir))
    kept = registry.register(logged_run(registry, tmp_path, 0.7), {}).version
    gone = registry.register(logged_run(registry, tmp_path, 0.8), {})
    MlflowClient(registry.uri).delete_run(gone.run_id)
    mlflow = Path(sys.executable).with_name("mlflow")
    env = os.environ | {"MLFLOW_TRACKING_URI": registry.uri}
    subprocess.run(
        [mlflow, "gc", "--backend-store-uri", registry.uri], env=env, check=True, capture_output=True
    )

    listed = cli("model", "list")
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.output.splitlines()[2:]] == [kept, gone.version]
    assert cli("model", "show", gone.version).exit_code == 0
    fetched = cli("model", "download", gone.version, tmp_path / "out")
    assert fetched.exit_code == 1
    assert f"failed to read the run: Run with id={gone.run_id} not found" in fetched.output
