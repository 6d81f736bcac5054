"""The Terraform in infrastructure/terraform describes what WMS relies on, locked down as documented.

CI also runs `terraform fmt -check` and `terraform validate`; these tests need no provider
download, so they run everywhere. The `terraform` fixture (conftest.py) holds the parsed blocks.
What the instances boot with (cloud-init, scripts, the two layouts) is in test_infrastructure.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERVING_ADDRESS = "aws_instance.serving"
MLFLOW = ("mlflow", "mlflow-backup")  # the serving node's MLflow artifacts and database backup
INSTANCES = ("aws_instance.gpu", SERVING_ADDRESS)


def _ingress_rules(group: dict[str, Any]) -> list[dict[str, Any]]:
    """The security group's ingress rules, those of its `dynamic "ingress"` blocks included."""
    rules = list(group.get("ingress", []))
    for dynamic in group.get("dynamic", []):
        if "ingress" in dynamic:
            rules.extend(dynamic["ingress"]["content"])
    return rules


def _statements(terraform: dict[str, Any], document: str) -> list[dict[str, Any]]:
    """A policy document's statements, those of its source_policy_documents included."""
    body = terraform["data"][f"aws_iam_policy_document.{document}"]
    statements = list(body.get("statement", []))
    for dynamic in body.get("dynamic", []):  # statements only one layout has
        if "statement" in dynamic:
            statements.extend(dynamic["statement"]["content"])
    for source in body.get("source_policy_documents", []):
        name = source.removeprefix("${data.aws_iam_policy_document.").removesuffix(".json}")
        statements.extend(_statements(terraform, name))
    return statements


def test_instance_type_is_a_variable_and_the_name_matches_the_default_tag(terraform: dict[str, Any]) -> None:
    instance = terraform["resource"]["aws_instance.gpu"]
    assert instance["instance_type"] == "${var.instance_type}"
    assert "instance_type" in terraform["variable"]
    # compute.instance_tag = "Name=wms-k3s"
    assert terraform["variable"]["instance_name"]["default"] == "wms-k3s"
    assert instance["tags"] == {"Name": "${var.instance_name}", "wms:managed": "true"}
    assert instance["iam_instance_profile"] == "${aws_iam_instance_profile.instance.name}"


def test_both_instances_require_imdsv2_and_encrypt_their_disk(terraform: dict[str, Any]) -> None:
    for address in INSTANCES:
        instance = terraform["resource"][address]
        assert instance["metadata_options"][0]["http_tokens"] == "required", address
        root = instance["root_block_device"][0]
        assert root["encrypted"] is True and root["volume_type"] == "gp3", address


def test_no_model_pod_reaches_the_role_and_with_capture_the_node_may_write_only_the_inbox(
    terraform: dict[str, Any],
) -> None:
    """A pod is one hop behind the node: with hop limit 1 its IMDSv2 token never comes back, so no
    pod gets the node's role, capture or not. With capture_inbox (off by default) the pods keep
    photos in the node's spool and the node, its role allowed to put into inbox/ only, sends them."""
    assert terraform["variable"]["capture_inbox"]["default"] is False
    for address in INSTANCES:
        assert terraform["resource"][address]["metadata_options"][0]["http_put_response_hop_limit"] == 1
    user_data = (Path(__file__).resolve().parents[1] / "infrastructure/terraform/user-data.tf").read_text()
    assert 'capture_inbox = var.capture_inbox ? local.capture_dir : ""' in user_data  # capture.sh's switch
    dynamics = terraform["data"]["aws_iam_policy_document.serving"]["dynamic"]
    switch = "${var.capture_inbox ? [1] : []}"
    capture = [d["statement"] for d in dynamics if d["statement"]["for_each"] == switch]
    granted = {
        (a, r) for d in capture for a in d["content"][0]["actions"] for r in d["content"][0]["resources"]
    }
    bucket = "${aws_s3_bucket.data.arn}"
    assert granted == {  # no delete: emptying the inbox is yours; the store is only read (drift)
        ("s3:ListBucket", bucket),
        ("s3:GetObject", f"{bucket}/${{var.s3_prefix}}/inbox/*"),
        ("s3:PutObject", f"{bucket}/${{var.s3_prefix}}/inbox/*"),
        ("s3:GetObject", f"{bucket}/${{var.s3_prefix}}/store/*"),
    }
    outputs = terraform["output"]
    assert outputs["capture_dir"]["value"] == "${var.capture_inbox ? local.capture_dir : null}"
    assert terraform["locals"]["capture_dir"] == "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/inbox"


def test_a_newer_ami_does_not_replace_an_instance_behind_a_plain_apply(terraform: dict[str, Any]) -> None:
    for address in INSTANCES:
        assert "ami" in terraform["resource"][address]["lifecycle"][0]["ignore_changes"], address


def test_an_apply_during_a_run_leaves_the_leases_on_the_instance(terraform: dict[str, Any]) -> None:
    """Every tag WMS writes at run time is one the provider ignores, so no apply removes a lease."""
    from wms.compute.leases import HOLDERS_TAG, LEASE_TAG, STOPPING_TAG, holder_tag

    ignored = terraform["provider"]["aws"]["ignore_tags"][0]
    written = [LEASE_TAG, HOLDERS_TAG, STOPPING_TAG, holder_tag("gh-run-7"), holder_tag("me@laptop-pipeline")]
    for key in written:
        assert key in ignored["keys"] or key.startswith(tuple(ignored["key_prefixes"])), key


def test_a_spot_gpu_is_stopped_with_its_disk_when_reclaimed(terraform: dict[str, Any]) -> None:
    assert terraform["variable"]["gpu_spot"]["default"] is False
    dynamic = terraform["resource"]["aws_instance.gpu"]["dynamic"]
    market = next(d["instance_market_options"] for d in dynamic if "instance_market_options" in d)
    assert market["for_each"] == "${var.gpu_spot ? [1] : []}"
    content = market["content"][0]
    assert content["market_type"] == "spot"
    assert content["spot_options"][0] == {
        "spot_instance_type": "persistent",
        "instance_interruption_behavior": "stop",
    }


def test_elastic_ips_are_associated_by_layout(terraform: dict[str, Any]) -> None:
    resources = terraform["resource"]
    # single: the GPU instance's; split: the serving node's.
    assert resources["aws_eip.instance"]["count"] == "${local.split ? 0 : 1}"
    gpu = resources["aws_eip_association.instance"]
    assert gpu["instance_id"] == "${aws_instance.gpu.id}"
    assert gpu["allocation_id"] == "${aws_eip.instance[0].id}"
    assert resources["aws_eip.serving"]["count"] == "${local.split ? 1 : 0}"
    serving = resources["aws_eip_association.serving"]
    assert serving["instance_id"] == "${aws_instance.serving[0].id}"
    assert serving["allocation_id"] == "${aws_eip.serving[0].id}"


def test_the_runners_reach_mlflow_at_a_name_that_outlives_the_serving_instance(
    terraform: dict[str, Any],
) -> None:
    """A replaced node has another private address: WMS_TRACKING_URI named the old one, so every
    job failed to reach MLflow until someone set the variable again. It names the Elastic IP's DNS
    name, which inside the VPC resolves to the private address of whichever instance holds it."""
    host = terraform["locals"]["serving_internal_host"]
    split, single = "try(aws_eip.serving[0].public_dns, null)", "try(aws_eip.instance[0].public_dns, null)"
    assert host == f"${{local.split ? {split} : {single}}}"
    outputs = terraform["output"]
    for uri in (
        outputs["mlflow_url_internal"]["value"],
        outputs["repository_variables"]["value"]["WMS_TRACKING_URI"],
    ):
        assert uri == "http://${local.serving_internal_host}:${var.mlflow_port}"
    # Each Elastic IP follows its instance through a replacement.
    resources = terraform["resource"]
    assert resources["aws_eip_association.serving"]["instance_id"] == "${aws_instance.serving[0].id}"
    assert resources["aws_eip_association.instance"]["instance_id"] == "${aws_instance.gpu.id}"
    assert "private_ip" not in str(terraform["locals"]) + str(outputs["mlflow_url_internal"])


def test_no_repository_variable_holds_an_address_a_replaced_gpu_instance_changes(
    terraform: dict[str, Any],
) -> None:
    """WMS_GPU_HOST held the GPU instance's private address: a replaced instance has another, and
    every training job failed until someone set the variable again. The jobs read it from EC2."""
    variables = terraform["output"]["repository_variables"]["value"]
    assert "WMS_GPU_HOST" not in variables and "aws_instance.gpu" not in str(variables)


def test_ssh_mlflow_and_k3s_are_open_to_the_allowed_cidr_only(terraform: dict[str, Any]) -> None:
    for name in ("instance", "serving"):
        ingress = _ingress_rules(terraform["resource"][f"aws_security_group.{name}"])
        assert any(rule["from_port"] == 22 for rule in ingress), name
        with_cidr = [rule for rule in ingress if "cidr_blocks" in rule]
        assert all(rule["cidr_blocks"] == ["${var.allowed_ssh_cidr}"] for rule in with_cidr), name
        assert "0.0.0.0/0" not in str(ingress), name
    variable = terraform["variable"]["allowed_ssh_cidr"]
    assert "default" not in variable and "0.0.0.0/0" in variable["validation"][0]["condition"]


def test_the_serving_node_takes_mlflow_from_the_gpu_and_the_k3s_api_from_the_allowed_cidr(
    terraform: dict[str, Any],
) -> None:
    ingress = _ingress_rules(terraform["resource"]["aws_security_group.serving"])
    by_group = [rule for rule in ingress if "security_groups" in rule]
    assert by_group == [
        {
            "description": by_group[0]["description"],
            "from_port": "${var.mlflow_port}",
            "to_port": "${var.mlflow_port}",
            "protocol": "tcp",
            "security_groups": ["${aws_security_group.instance.id}"],
        }
    ]
    ports = {rule["from_port"] for rule in ingress if "cidr_blocks" in rule}
    assert ports == {22, "${var.mlflow_port}", 6443}


def test_in_split_only_the_serving_node_reaches_the_gpu_over_ssh(terraform: dict[str, Any]) -> None:
    gpu = _ingress_rules(terraform["resource"]["aws_security_group.instance"])
    by_group = [rule for rule in gpu if "security_groups" in rule]
    assert [(r["from_port"], r["security_groups"]) for r in by_group] == [(22, ["${ingress.value}"])]
    gpu_block = terraform["resource"]["aws_security_group.instance"]["dynamic"]
    assert "aws_security_group.gpu_ssh_clients[0].id" in str(gpu_block)
    serving = terraform["resource"]["aws_instance.serving"]
    assert "${aws_security_group.gpu_ssh_clients[0].id}" in serving["vpc_security_group_ids"]


def test_egress_is_web_out_and_anything_inside_the_vpc(terraform: dict[str, Any]) -> None:
    for name in ("instance", "serving"):
        egress = terraform["resource"][f"aws_security_group.{name}"]["egress"]
        anywhere = {(r["from_port"], r["protocol"]) for r in egress if r["cidr_blocks"] == ["0.0.0.0/0"]}
        assert anywhere == {(443, "tcp"), (80, "tcp")}, name
        inside = [r for r in egress if r["cidr_blocks"] != ["0.0.0.0/0"]]
        assert [r["cidr_blocks"] for r in inside] == [["${data.aws_vpc.default.cidr_block}"]], name


def test_instance_roles_reach_only_the_project_prefix_repository_and_token(terraform: dict[str, Any]) -> None:
    parameter_arn = "${local.runner_token_parameter_arn}"
    arn = terraform["locals"]["runner_token_parameter_arn"]
    assert arn.endswith(":parameter${var.runner_token_parameter}")
    # The GPU instance: project data + ECR; the serving node: MLflow's prefixes only, not the
    # dataset store, so a job on its runner cannot rewrite the gate's test split through the role.
    documents = {
        "instance": _statements(terraform, "instance"),
        "serving": _statements(terraform, "serving"),
    }
    serving_policy = terraform["resource"]["aws_iam_role_policy.serving"]["policy"]
    assert serving_policy == "${data.aws_iam_policy_document.serving[0].json}"
    prefixes = {"instance": ["${var.s3_prefix}/*"], "serving": [f"${{var.s3_prefix}}/{p}/*" for p in MLFLOW]}
    boot = {"instance": [], "serving": ["${var.s3_prefix}/boot/*"]}  # its bootstrap's scripts, read
    # with capture_inbox only: the inbox, and the store read for the drift report
    inbox = {"instance": [], "serving": ["${var.s3_prefix}/inbox/*", "${var.s3_prefix}/store/*"]}
    for role, statements in documents.items():
        s3 = [s for s in statements if any(a.startswith("s3:") for a in s["actions"])]
        object_resources = {r for s in s3 if "s3:GetObject" in s["actions"] for r in s["resources"]}
        wanted = {f"${{aws_s3_bucket.data.arn}}/{p}" for p in prefixes[role] + inbox[role] + boot[role]}
        assert object_resources == wanted, role
        written = {r for s in s3 if "s3:PutObject" in s["actions"] for r in s["resources"]}
        assert not any(r.endswith("/store/*") for r in written) or role == "instance", role
        listings = [s["condition"][0]["values"] for s in s3 if "s3:ListBucket" in s["actions"]]
        assert listings == [prefixes[role]] + ([inbox[role]] if inbox[role] else []), role
        ssm = [(s["actions"], s["resources"]) for s in statements if s["actions"][0].startswith("ssm:")]
        # The runner's token, and the alerts' webhook where alert_webhook_parameter names one.
        wanted = [(["ssm:GetParameter"], [parameter_arn]), (["ssm:GetParameter"], ["${statement.value}"])]
        assert sorted(ssm) == sorted(wanted), role
        for statement in statements:
            assert not any(a == "*" or a.endswith(":*") for a in statement["actions"]), role
            # Actions AWS scopes only to "*": ECR's login, and the lease guard's look at its tags.
            if statement["actions"] not in (["ecr:GetAuthorizationToken"], ["ec2:DescribeTags"]):
                assert "*" not in statement["resources"], role
    # ECR only in single, where the GPU instance builds and pushes the image (in split the deploy
    # jobs push with the workflow's credentials: a GPU job cannot overwrite a deployed tag).
    dynamics = terraform["data"]["aws_iam_policy_document.instance"]["dynamic"]
    alerts = "local.alert_webhook_parameter_arns"
    assert {d["statement"]["for_each"] for d in dynamics} == {
        "${local.split ? [] : [1]}",
        f"${{local.split ? [] : {alerts}}}",
    }
    serving = terraform["data"]["aws_iam_policy_document.serving"]["dynamic"]
    capture = "${var.capture_inbox ? [1] : []}"
    assert [d["statement"]["for_each"] for d in serving] == [capture, capture, capture, f"${{{alerts}}}"]
    webhook = terraform["locals"]["alert_webhook_parameter_arns"]
    assert webhook.startswith('${var.alert_webhook_parameter == "" ? [] : [')
    assert webhook.endswith(':parameter${var.alert_webhook_parameter}"]}')
    only_single = [d for d in dynamics if d["statement"]["for_each"] == "${local.split ? [] : [1]}"]
    assert all(a.startswith("ecr:") for d in only_single for a in d["statement"]["content"][0]["actions"])
    ecr = [s for s in documents["instance"] if any(a.startswith("ecr:") for a in s["actions"])]
    assert ecr and all(
        s["resources"] == ["${aws_ecr_repository.model.arn}"]
        for s in ecr
        if s["actions"] != ["ecr:GetAuthorizationToken"]
    )
    assert not any(a.startswith("ecr:") for s in documents["serving"] for a in s["actions"])
    for name in ("instance", "serving"):
        profile = terraform["resource"][f"aws_iam_instance_profile.{name}"]
        assert profile["role"] in (f"${{aws_iam_role.{name}.name}}", f"${{aws_iam_role.{name}[0].name}}")


def test_bucket_is_versioned_encrypted_and_private(terraform: dict[str, Any]) -> None:
    resources = terraform["resource"]
    assert resources["aws_s3_bucket_versioning.data"]["versioning_configuration"][0]["status"] == "Enabled"
    rule = resources["aws_s3_bucket_server_side_encryption_configuration.data"]["rule"][0]
    assert rule["apply_server_side_encryption_by_default"][0]["sse_algorithm"] in ("AES256", "aws:kms")
    block = resources["aws_s3_bucket_public_access_block.data"]
    for key in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[key] is True
    # Versions of what is overwritten (the daily MLflow backup) do not pile up for ever.
    lifecycle = resources["aws_s3_bucket_lifecycle_configuration.data"]["rule"][0]
    assert (
        lifecycle["noncurrent_version_expiration"][0]["noncurrent_days"] == "${var.noncurrent_version_days}"
    )
    # Nor do the delete markers left once those versions are gone: every use of a store lock
    # deletes two objects (tests/test_infrastructure_disk.py counts them).
    assert lifecycle["expiration"][0]["expired_object_delete_marker"] is True
    assert lifecycle["filter"] == [{}]  # the whole bucket (S3 refuses the marker rule with a tag filter)


def test_captured_photos_leave_the_bucket_after_the_days_users_were_told(terraform: dict[str, Any]) -> None:
    """capture_keep_days bounds how long a kept photo stays in the inbox (180 by default; 0: until
    someone moves it out), so the time a deployment tells its users holds without a person."""
    lifecycle = terraform["resource"]["aws_s3_bucket_lifecycle_configuration.data"]
    (dynamic,) = lifecycle["dynamic"]
    rule = dynamic["rule"]
    assert rule["for_each"] == "${var.capture_keep_days > 0 ? [1] : []}"
    (content,) = rule["content"]
    assert content["filter"] == [{"prefix": "${var.s3_prefix}/inbox/"}]  # the inbox only, never the store
    assert content["expiration"] == [{"days": "${var.capture_keep_days}"}]
    # A photo gone from the inbox leaves no old version for the bucket's 90 days (the shorter of
    # two overlapping expirations holds).
    assert content["noncurrent_version_expiration"] == [{"noncurrent_days": 1}]
    variable = terraform["variable"]["capture_keep_days"]
    assert variable["default"] == 180 and variable["type"] == "number"


def test_ecr_scans_on_push_and_keeps_recent_images(terraform: dict[str, Any]) -> None:
    repo = terraform["resource"]["aws_ecr_repository.model"]
    assert repo["image_scanning_configuration"][0]["scan_on_push"] is True
    policy = terraform["resource"]["aws_ecr_lifecycle_policy.model"]
    assert policy["repository"] == "${aws_ecr_repository.model.name}"
    assert "imageCountMoreThan" in policy["policy"] and "var.ecr_keep_images" in policy["policy"]


def test_the_outputs_people_and_workflows_read_are_there(terraform: dict[str, Any]) -> None:
    outputs = terraform["output"]
    for name in ("instance_id", "public_ip", "mlflow_url", "store_url", "ecr_repository_url"):  # the seed's
        assert name in outputs
    for name in ("layout", "serving_ip", "mlflow_url_internal", "kubeconfig_command", "ssh_commands"):
        assert name in outputs
    assert "/etc/rancher/k3s/k3s.yaml" in outputs["kubeconfig_command"]["value"]
    variables = outputs["repository_variables"]["value"]
    assert variables["WMS_TRACKING_URI"] == outputs["mlflow_url_internal"]["value"]
