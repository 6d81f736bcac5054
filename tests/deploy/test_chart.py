"""The Helm chart: infrastructure/helm-values.yaml validates against values.schema.json, as Helm checks it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "devops" / "helm" / "wms-model"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of -f files over the chart's values.yaml: maps merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


@pytest.fixture(scope="module")
def deployed_values() -> dict[str, Any]:
    """What `wms deploy` hands Helm: chart defaults, the cluster file, then its --set values."""
    chart = yaml.safe_load((CHART / "values.yaml").read_text())
    values = _merge(chart, yaml.safe_load((REPO / "infrastructure" / "helm-values.yaml").read_text()))
    image = {"repository": "1.dkr.ecr.us-east-1.amazonaws.com/wms-model", "tag": "v3-abc"}
    sets = {"image": image, "imagePullSecrets": [{"name": "ecr-pull-secret"}], "model": {"version": "3"}}
    return _merge(values, sets)


def test_the_cluster_values_validate(schema: dict[str, Any], deployed_values: dict[str, Any]) -> None:
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    jsonschema.validate(deployed_values, schema)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"replicaCount": "two"}, "'two' is not of type 'integer'"),
        ({"serve": {"maxConcurrency": 0}}, "less than the minimum"),
        ({"resources": {"limits": {"memory": "lots"}}}, "does not match"),
        ({"image": {"tag": ""}}, "should be non-empty"),
        ({"servce": {}}, "Additional properties"),
    ],
)
def test_mistakes_in_values_are_caught(
    schema: dict[str, Any], deployed_values: dict[str, Any], change: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(jsonschema.ValidationError, match=re.escape(complaint)):
        jsonschema.validate(_merge(deployed_values, change), schema)


def test_every_value_the_templates_read_is_declared(deployed_values: dict[str, Any]) -> None:
    used = set()
    for template in (CHART / "templates").iterdir():
        used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    for path in used:
        node: Any = deployed_values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f".Values.{path} is not in values.yaml"
            node = node[part]


def test_the_image_is_slim_non_root_and_torch_free() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^USER wms$", dockerfile, re.M) and "HEALTHCHECK" in dockerfile
    assert "pip install --no-deps ." in dockerfile and "['optional-dependencies']['serve']" in dockerfile
    import tomllib

    serve = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    names = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in serve}
    assert {"onnxruntime", "fastapi", "uvicorn"} <= names and not names & {"torch", "mlflow", "wms"}
