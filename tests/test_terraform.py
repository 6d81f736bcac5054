"""The Terraform in infrastructure/terraform describes what WMS relies on, locked down as documented.

CI also runs `terraform fmt -check` and `terraform validate`; this test needs no provider
download, so it runs everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

TF_DIR = Path(__file__).resolve().parents[1] / "infrastructure" / "terraform"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.fixture(scope="module")
def tf() -> dict[str, dict[str, Any]]:
    """Every block of every .tf file: {"resource": {"aws_instance.gpu": {...}}, "variable": {...}}."""
    options = SerializationOptions(strip_string_quotes=True, with_comments=False)
    blocks: dict[str, dict[str, Any]] = {}
    for path in sorted(TF_DIR.glob("*.tf")):
        parsed = _plain(hcl2.loads(path.read_text(), serialization_options=options))
        for kind, entries in parsed.items():
            for entry in entries:
                if kind in ("resource", "data"):
                    for rtype, named in entry.items():
                        for name, body in named.items():
                            blocks.setdefault(kind, {})[f"{rtype}.{name}"] = body
                else:
                    for name, body in entry.items():
                        blocks.setdefault(kind, {})[name] = body
    return blocks


def test_instance_type_is_a_variable_and_the_name_matches_the_default_tag(tf: dict[str, Any]) -> None:
    instance = tf["resource"]["aws_instance.gpu"]
    assert instance["instance_type"] == "${var.instance_type}"
    assert "instance_type" in tf["variable"]
    assert tf["variable"]["instance_name"]["default"] == "wms-k3s"  # compute.instance_tag = "Name=wms-k3s"
    assert instance["iam_instance_profile"] == "${aws_iam_instance_profile.instance.name}"


def test_elastic_ip_is_attached(tf: dict[str, Any]) -> None:
    assert tf["resource"]["aws_eip.instance"]["instance"] == "${aws_instance.gpu.id}"


def test_ssh_is_open_to_the_allowed_cidr_only(tf: dict[str, Any]) -> None:
    ingress = tf["resource"]["aws_security_group.instance"]["ingress"]
    ssh = [rule for rule in ingress if rule["from_port"] == 22]
    assert ssh and all(rule["cidr_blocks"] == ["${var.allowed_ssh_cidr}"] for rule in ingress)
    assert "0.0.0.0/0" not in str(ingress)
    assert "allowed_ssh_cidr" in tf["variable"] and "default" not in tf["variable"]["allowed_ssh_cidr"]


def test_instance_role_reaches_only_the_project_prefix_and_repository(tf: dict[str, Any]) -> None:
    statements = tf["data"]["aws_iam_policy_document.instance"]["statement"]
    s3 = [s for s in statements if any(a.startswith("s3:") for a in s["actions"])]
    object_resources = {r for s in s3 if "s3:GetObject" in s["actions"] for r in s["resources"]}
    assert object_resources == {"${aws_s3_bucket.data.arn}/${var.s3_prefix}/*"}
    listing = next(s for s in s3 if "s3:ListBucket" in s["actions"])
    assert listing["condition"][0]["values"] == ["${var.s3_prefix}/*"]
    ecr = [s for s in statements if any(a.startswith("ecr:") for a in s["actions"])]
    for statement in ecr:
        if statement["actions"] != ["ecr:GetAuthorizationToken"]:  # the only one AWS scopes to "*"
            assert statement["resources"] == ["${aws_ecr_repository.model.arn}"]
    assert not any(a == "*" or a.endswith(":*") for s in statements for a in s["actions"])
    profile = tf["resource"]["aws_iam_instance_profile.instance"]
    assert profile["role"] == "${aws_iam_role.instance.name}"


def test_bucket_is_versioned_encrypted_and_private(tf: dict[str, Any]) -> None:
    resources = tf["resource"]
    assert resources["aws_s3_bucket_versioning.data"]["versioning_configuration"][0]["status"] == "Enabled"
    rule = resources["aws_s3_bucket_server_side_encryption_configuration.data"]["rule"][0]
    assert rule["apply_server_side_encryption_by_default"][0]["sse_algorithm"] in ("AES256", "aws:kms")
    block = resources["aws_s3_bucket_public_access_block.data"]
    for key in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[key] is True


def test_ecr_scans_on_push_and_keeps_recent_images(tf: dict[str, Any]) -> None:
    repo = tf["resource"]["aws_ecr_repository.model"]
    assert repo["image_scanning_configuration"][0]["scan_on_push"] is True
    policy = tf["resource"]["aws_ecr_lifecycle_policy.model"]
    assert policy["repository"] == "${aws_ecr_repository.model.name}"
    assert "imageCountMoreThan" in policy["policy"] and "var.ecr_keep_images" in policy["policy"]
