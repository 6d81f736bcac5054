"""`wms pipeline run` with `deploy.in_pipeline`: the promoted model ends up serving on the stable port."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wms.config import load_settings
from wms.deploy.local import LocalDeployer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def deploying_project(project_dir: Path) -> Iterator[Path]:
    port = free_port()
    with (project_dir / "wms.toml").open("a") as fh:
        fh.write(f"\n[serve]\nport = {port}\n")
    try:
        yield project_dir
    finally:
        LocalDeployer(load_settings(start=project_dir), lambda _: None).stop()


def test_a_promoted_model_is_deployed_and_answers(
    cli: Callable[..., Any], deploying_project: Path, make_batch: Callable[..., Path]
) -> None:
    sets = ["--set", "deploy.in_pipeline=true", "--set", "train.export_onnx=true", "--set", "train.epochs=2"]
    result = cli(*sets, "pipeline", "run", "--new-data", make_batch())
    assert result.exit_code == 0, result.output
    record = json.loads(next(deploying_project.glob(".wms/runs/*/run.json")).read_text())
    deploy = next(s for s in record["stages"] if s["name"] == "deploy")
    assert deploy["status"] == "ok", deploy
    assert "model 1 serving at" in deploy["outcome"]

    port = load_settings(start=deploying_project).settings.serve.port
    ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()
    assert str(ready["version"]) == "1"
    photo = next((deploying_project.parent / "batch" / "images").iterdir()).read_bytes()
    answer = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": ("m.png", photo)}, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"


def test_a_rejected_candidate_deploys_nothing(project_dir: Path, make_batch: Callable[..., Path]) -> None:
    from tests.conftest import Quiet

    from wms.pipeline import Pipeline
    from wms.registry import MlflowRegistry

    project = load_settings(
        start=project_dir, overrides={"gate": {"floor": 1.0}, "deploy": {"in_pipeline": True}}
    )
    run = Pipeline(project, MlflowRegistry(project), Quiet()).run(make_batch())
    assert not run.promoted
    assert run.stages["deploy"].status == "skipped"
    assert run.stages["deploy"].outcome.startswith("not promoted")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["deploy.smoke_image='meter.png'"], "deploy.smoke_image 'meter.png' cannot be read"),
        (["deploy.target='k8s'", "deploy.chart='charts/none'"], "deploy.chart charts/none does not exist"),
    ],
)
def test_a_deploy_setting_it_would_fail_on_stops_the_run_before_anything_is_recorded(
    cli: Callable[..., Any], project_dir: Path, make_batch: Callable[..., Path], sets: list[str], message: str
) -> None:
    """Found at the deploy stage, after training, promotion and production's move; now at the start."""
    overrides = [arg for value in ["deploy.in_pipeline=true", *sets] for arg in ("--set", value)]
    result = cli(*overrides, "pipeline", "run", "--new-data", make_batch())
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "▶" not in result.stdout and not (project_dir / ".wms" / "runs").exists()
