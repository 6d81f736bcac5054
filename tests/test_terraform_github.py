"""The workflows' AWS roles (infrastructure/terraform/github-oidc.tf): each trusted only by this
repository's jobs in its GitHub environment, each allowed what those jobs ask of AWS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.docs import all_docs

REPO = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("wms-production", "wms-compute", "wms-sweep")
# EC2's waiters the compute backend waits through, and the API each one polls.
WAITER_CALLS = {
    "instance_status_ok": "describe_instance_status",
    "system_status_ok": "describe_instance_status",
}


def statements(terraform: dict[str, Any], document: str) -> list[dict[str, Any]]:
    body = terraform["data"][f"aws_iam_policy_document.{document}"]
    found = list(body.get("statement", []))
    for source in body.get("source_policy_documents", []):
        found += statements(
            terraform, source.removeprefix("${data.aws_iam_policy_document.").removesuffix(".json}")
        )
    return found


def allowed(terraform: dict[str, Any], document: str) -> set[str]:
    return {action for s in statements(terraform, document) for action in s["actions"]}


def ec2_actions_wms_calls() -> set[str]:
    """The EC2 API actions wms.compute calls, read from its source (boto3's names, as IAM spells them)."""
    source = "\n".join(p.read_text() for p in (REPO / "src" / "wms" / "compute").glob("*.py"))
    calls = set(re.findall(r'"((?:describe|start|stop)_instances|create_tags|delete_tags)"', source))
    calls |= {call for waiter, call in WAITER_CALLS.items() if f'"{waiter}"' in source}
    return {"ec2:" + "".join(part.title() for part in call.split("_")) for call in calls}


def test_each_role_trusts_only_this_repositorys_jobs_in_its_environment(terraform: dict[str, Any]) -> None:
    trust = terraform["data"]["aws_iam_policy_document.assume_github"]
    assert all(f'"{env}"' in trust["for_each"] for env in ENVIRONMENTS)  # one trust per environment
    (statement,) = trust["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert statement["principals"][0] == {"type": "Federated", "identifiers": ["${local.github_oidc_arn}"]}
    conditions = {c["variable"]: c for c in statement["condition"]}
    assert all(c["test"] == "StringEquals" for c in conditions.values())  # no wildcard lets other refs in
    assert conditions["token.actions.githubusercontent.com:aud"]["values"] == ["sts.amazonaws.com"]
    sub = conditions["token.actions.githubusercontent.com:sub"]["values"]
    assert sub == ["repo:${var.github_repository}:environment:${each.key}"]


def test_the_compute_role_can_do_what_wms_compute_asks_of_ec2_and_nothing_else(
    terraform: dict[str, Any],
) -> None:
    wanted = ec2_actions_wms_calls()
    assert {"ec2:DescribeInstances", "ec2:StartInstances", "ec2:StopInstances", "ec2:CreateTags"} <= wanted
    assert allowed(terraform, "github_compute") == wanted
    by_sid = {s["sid"]: s for s in statements(terraform, "github_compute")}
    assert by_sid["StartStopAndLeaseTheGpuInstance"]["resources"] == ["${local.gpu_instance_arn}"]
    assert "${aws_instance.gpu.id}" in terraform["locals"]["gpu_instance_arn"]


def test_the_production_role_reaches_the_store_the_image_and_the_gpu_instance(
    terraform: dict[str, Any],
) -> None:
    actions = allowed(terraform, "github_production")
    assert ec2_actions_wms_calls() <= actions  # split: the pipeline starts and stops the GPU itself
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "ecr:PutImage"} <= actions
    store = terraform["output"]["store_url"]["value"].removeprefix("s3://${aws_s3_bucket.data.bucket}/")
    by_sid = {s["sid"]: s for s in statements(terraform, "github_production")}
    assert by_sid["ReadWriteStore"]["resources"] == [f"${{aws_s3_bucket.data.arn}}/{store}/*"]
    assert not any(a.startswith(("iam:", "ssm:", "ec2:Run", "ec2:Terminate")) for a in actions)


def test_the_readme_says_to_set_each_role_in_its_own_environment() -> None:
    readme = " ".join(all_docs().split())
    assert "github_role_arns" in readme
    assert "not as a repository variable" in readme


def test_the_sweep_role_reaches_the_batch_records_alone(terraform: dict[str, Any]) -> None:
    """The sweeper's look (environment wms-sweep, no reviewers) reads which batches have a
    finished run and records a refused branch: nothing else of the store, no EC2."""
    assert '"wms-sweep"' in terraform["resource"]["aws_iam_role.github"]["for_each"]
    store = terraform["output"]["store_url"]["value"].removeprefix("s3://${aws_s3_bucket.data.bucket}/")
    by_sid = {s["sid"]: s for s in statements(terraform, "github_sweep")}
    assert allowed(terraform, "github_sweep") == {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}
    assert by_sid["ReadWriteBatchRecords"]["resources"] == [f"${{aws_s3_bucket.data.arn}}/{store}/batches/*"]
    policy = terraform["locals"]["github_policies"]["wms-sweep"]
    assert policy == "${data.aws_iam_policy_document.github_sweep.json}"


def test_the_readme_says_what_the_roles_and_environments_cannot_tell_apart(terraform: dict[str, Any]) -> None:
    """The trust matches `sub` alone, which names the environment and not the workflow file: a
    workflow pushed to a data branch that named wms-production on a GitHub-hosted runner (where no
    pre-job check runs) got its role and secrets while the environment had to admit data/**. What
    keeps it out now is the environments' limit to main, which the README must have set."""
    (statement,) = terraform["data"]["aws_iam_policy_document.assume_github"]["statement"]
    checked = {c["variable"].rsplit(":", 1)[1] for c in statement["condition"]}
    assert checked == {"aud", "sub"}  # AWS checks no other claim of GitHub's token
    readme = " ".join(all_docs().split())
    assert "**GitHub-hosted runners check no workflow**" in readme
    assert "Secrets live in three GitHub environments, each limited to `main`" in readme
    assert (
        "each role trusts only tokens whose `sub` is `repo:OWNER/NAME:environment:<its environment>`"
        in readme
    )
    assert "GitHub's token names the workflow file only as it is on the pushed branch" in readme
    assert "each environment limited to `main`" in readme  # the setup's secrets paragraph
