"""The README as an operator follows it: what it tells them to run and set exists, and works.

Each test reads README.md beside the code, workflows or Terraform it describes, so a change to
one that the other does not follow fails here instead of on someone's first setup.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks() -> list[str]:
    """The README's fenced code blocks, each as written."""
    return re.findall(r"```[a-z]*\n(.*?)```", README, re.S)


def block_with(text: str) -> str:
    (block,) = [b for b in code_blocks() if text in b]
    return block


def exported(block: str) -> dict[str, str]:
    """NAME → value of every `export NAME=value` in a shell block (comments dropped)."""
    values: dict[str, str] = {}
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("export "):
            for name, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\$\([^)]*\)|\S+)", line):
                values[name] = value
    return values


def test_training_from_a_laptop_gives_the_gpu_instance_an_mlflow_it_can_reach(
    terraform: dict[str, Any],
) -> None:
    """In split the GPU instance reaches MLflow only by the serving node's private address
    (its security group lets out only the web and the VPC): a job told to log to the public
    mlflow_url fails after the instance started and installed. The laptop's steps set both."""
    block = block_with("wms pipeline run --new-data data/incoming")
    env = exported(block)
    outputs = terraform["output"]
    assert "mlflow_url_internal" in env.get("WMS_COMPUTE__REMOTE_TRACKING_URI", "")
    assert "compute.remote_tracking_uri" in outputs["mlflow_url_internal"]["description"]
    assert "mlflow_url" in env.get("WMS_TRACKING__URI", "")
    # The store the workflows merge into: main's data/dataset.json names its versions.
    assert "store_url" in env.get("WMS_STORE__URL", "")
    for name in re.findall(r"\$\(tf ([a-z_]+)\)", block):
        assert name in outputs, f"the README reads terraform output {name}, which outputs.tf lacks"
