"""The README as an operator follows it: what it tells them to run and set exists, and works.

Each test reads README.md beside the code, workflows or Terraform it describes, so a change to
one that the other does not follow fails here instead of on someone's first setup.
"""

from __future__ import annotations

import re
import subprocess
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


def test_the_kubeconfig_step_points_kubectl_at_the_cluster_and_keeps_its_keys_out_of_git(
    terraform: dict[str, Any],
) -> None:
    """`terraform output -raw kubeconfig_command` only prints the command: the step runs it
    (eval, so its `export KUBECONFIG` holds in the shell). The file it writes beside the
    Terraform holds the cluster's admin key: git must ignore it, or `git add -A` commits it."""
    command = terraform["output"]["kubeconfig_command"]["value"]
    (written,) = re.findall(r"> (\S+) &&", command)
    assert 'eval "$(terraform output -raw kubeconfig_command)"' in README
    assert not re.search(r"run `terraform output -raw kubeconfig_command`", README)
    where = Path("infrastructure/terraform") / written  # the README's step 4 works there
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", str(where)], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"git does not ignore {where}, which holds the cluster's admin key"


def aws_setup() -> str:
    """The README's steps from an empty AWS account to the first model serving."""
    start = README.index("From an empty AWS account to the first promoted model serving")
    return README[start : README.index("## GitHub setup", start)]


def test_the_aws_setup_makes_the_key_pair_and_the_token_in_the_region_terraform_uses(
    terraform: dict[str, Any],
) -> None:
    """Terraform's region is a variable (us-east-1 by default), not the AWS CLI's: a key pair or
    SSM parameter the CLI made in its own region is one Terraform's instances cannot find
    (InvalidKeyPair.NotFound at apply; runners that cannot read their token)."""
    steps = aws_setup()
    assert "region" in terraform["variable"]
    assert "export AWS_REGION=" in steps
    made = [
        line for line in steps.splitlines() if re.search(r"aws (ec2 create-key-pair|ssm put-parameter)", line)
    ]
    assert len(made) == 2
    for line in made:
        assert '--region "$AWS_REGION"' in line, line
    (apply,) = [line for line in steps.splitlines() if "terraform apply" in line]
    assert '-var region="$AWS_REGION"' in apply


def test_the_aws_setup_stops_the_gpu_instance_with_the_ec2_backend() -> None:
    """compute.backend is local by default, and its `wms compute stop` says 'compute stopped
    (local)' and exits 0 while the GPU instance Terraform started runs on at $0.526/h."""
    stops = re.findall(r"`([^`]*wms compute (?:stop|start)[^`]*)`", aws_setup())
    assert stops
    for command in stops:
        assert "WMS_COMPUTE__BACKEND=ec2" in command or "compute.backend=ec2" in command, command
