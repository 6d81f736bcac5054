# The workflows' AWS access without long-lived keys: GitHub's OIDC provider and one role per
# GitHub environment. Each role trusts only this repository's jobs that run in its environment
# (the token's `sub` is repo:OWNER/NAME:environment:ENV), and allows only what those jobs do.
# It cannot tell one workflow from another in the same environment (AWS checks no claim besides
# `aud` and `sub`): what keeps a workflow pushed to a data branch out is the environment's
# limit to main, which refuses its job before GitHub issues it a token. docs/compute.md, "Running
# the production loop safely".
# Set each role's ARN as its environment's variable AWS_ROLE_ARN (Settings → Environments →
# wms-production / wms-compute / wms-sweep → Variables), not as a repository variable: a repository-wide
# AWS_ROLE_ARN would hand the production role to the wms-compute jobs too.

locals {
  github_oidc_arn = var.github_oidc_provider_arn != "" ? var.github_oidc_provider_arn : aws_iam_openid_connect_provider.github[0].arn
  github_policies = {
    "wms-production" = data.aws_iam_policy_document.github_production.json
    "wms-compute"    = data.aws_iam_policy_document.github_compute.json
    "wms-sweep"      = data.aws_iam_policy_document.github_sweep.json
  }
  gpu_instance_arn = "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/${aws_instance.gpu.id}"
}

# An account holds one provider per URL: where it already has GitHub's, pass its ARN instead.
resource "aws_iam_openid_connect_provider" "github" {
  count          = var.github_oidc_provider_arn == "" ? 1 : 0
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  # AWS checks GitHub's certificate against its own trusted CAs and ignores these; the AWS
  # provider's 5.x releases still require the argument. They are GitHub's published thumbprints.
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
}

data "aws_iam_policy_document" "assume_github" {
  for_each = toset(["wms-production", "wms-compute", "wms-sweep"])

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_repository}:environment:${each.key}"]
    }
  }
}

# Start, stop and lease the GPU instance: what wms.compute asks of EC2 (describe, tag, start,
# stop). Describing cannot be limited to one instance; the rest is limited to the GPU instance.
data "aws_iam_policy_document" "github_compute" {
  statement {
    sid       = "DescribeInstances"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeInstanceStatus"]
    resources = ["*"]
  }

  statement {
    sid       = "StartStopAndLeaseTheGpuInstance"
    actions   = ["ec2:StartInstances", "ec2:StopInstances", "ec2:CreateTags", "ec2:DeleteTags"]
    resources = [local.gpu_instance_arn]
  }
}

# The sweeper's look (`wms pipeline sweep --dry-run`): which data branches have a finished run,
# in the store's batch records, and a refused branch recorded there. Nothing else of the store.
data "aws_iam_policy_document" "github_sweep" {
  statement {
    sid       = "ListStore"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.s3_prefix}/store/*", "${var.s3_prefix}/store"]
    }
  }

  statement {
    sid       = "ReadWriteBatchRecords"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.data.arn}/${var.s3_prefix}/store/batches/*"]
  }
}

# The jobs that train and deploy: the dataset store (MLflow's artifacts go through its server),
# the serving image's repository, and the GPU instance (in split the pipeline starts and stops
# it itself; in single it holds a lease on it).
data "aws_iam_policy_document" "github_production" {
  source_policy_documents = [data.aws_iam_policy_document.github_compute.json]

  statement {
    sid       = "ListStore"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.s3_prefix}/store/*", "${var.s3_prefix}/store"]
    }
  }

  statement {
    sid       = "ReadWriteStore"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.data.arn}/${var.s3_prefix}/store/*"]
  }

  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushTheServingImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [aws_ecr_repository.model.arn]
  }
}

resource "aws_iam_role" "github" {
  for_each           = toset(["wms-production", "wms-compute", "wms-sweep"])
  name               = "${var.project}-github-${trimprefix(each.key, "wms-")}"
  assume_role_policy = data.aws_iam_policy_document.assume_github[each.key].json
  # The train and sweep jobs hold their credentials for up to 12 h (role-duration-seconds), a
  # start of the instance up to 95 minutes (it waits out a maintenance); the other jobs end
  # within the default hour.
  max_session_duration = lookup({ "wms-production" = 43200, "wms-compute" = 5700 }, each.key, 3600)
}

resource "aws_iam_role_policy" "github" {
  for_each = aws_iam_role.github
  name     = each.value.name
  role     = each.value.id
  policy   = local.github_policies[each.key]
}
