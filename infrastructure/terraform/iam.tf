# The instances' roles, each limited to what it does: the project's prefix of the bucket
# (dataset store, MLflow artifacts, the MLflow database backup), the runner token's SSM
# parameter (read at each runner start), the alerts' webhook parameter where one is named (read
# by the node that runs k3s) and, for the GPU instance, the serving image's ECR repository. No
# action is a wildcard.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # The parameter's name starts with "/": arn:...:parameter/wms/github/runner-token.
  runner_token_parameter_arn = "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${var.runner_token_parameter}"
  # The alerts' webhook URL, read by the node that runs k3s (monitoring.sh), when one is named.
  alert_webhook_parameter_arns = var.alert_webhook_parameter == "" ? [] : [
    "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${var.alert_webhook_parameter}"
  ]
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# What both machines need. With the AWS managed key aws/ssm, GetParameter decrypts without a
# kms statement; a parameter under a key of your own also needs kms:Decrypt on that key.
data "aws_iam_policy_document" "project_data" {
  statement {
    sid       = "ListProjectPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.s3_prefix}/*"]
    }
  }

  statement {
    sid       = "ReadWriteProjectPrefix"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.data.arn}/${var.s3_prefix}/*"]
  }

  statement {
    sid       = "ReadRunnerToken"
    actions   = ["ssm:GetParameter"]
    resources = [local.runner_token_parameter_arn]
  }
}

# The GPU instance: the project's data, its own lease tags, and in single the serving image,
# pushed from here (in split the serving node's deploy jobs push it with the workflow's own
# credentials, so a job on the GPU runner cannot overwrite a deployed image's tag).
data "aws_iam_policy_document" "instance" {
  source_policy_documents = [data.aws_iam_policy_document.project_data.json]

  # Its lease guard (infrastructure/scripts/lease-guard.sh) reads its own lease tags and
  # powers it off once they ran out; DescribeTags cannot be limited to one resource.
  statement {
    sid       = "ReadItsLeases"
    actions   = ["ec2:DescribeTags"]
    resources = ["*"]
  }

  # Before powering off, the guard tags it wms:stopping (and takes the tag off again when a
  # start leased it meanwhile), the mark a `wms compute start` waits on. Only that tag, and
  # only on instances WMS manages (the GPU instance; the serving node carries no wms:managed).
  statement {
    sid       = "MarkItselfStopping"
    actions   = ["ec2:CreateTags", "ec2:DeleteTags"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/wms:managed"
      values   = ["true"]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["wms:stopping"]
    }
  }

  # After a job on its runner, runner-job-lease.sh drops the job's run's lease when the job ended
  # before `wms` renewed it (a failed setup). Deleting a lease only ever shortens it, and only a
  # workflow run's (wms:lease:gh-run-*); the instance may write no lease, so it can never keep
  # itself running.
  statement {
    sid       = "DropItsRunsLease"
    actions   = ["ec2:DeleteTags"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/wms:managed"
      values   = ["true"]
    }
    condition {
      test     = "ForAllValues:StringLike"
      variable = "aws:TagKeys"
      values   = ["wms:lease:gh-run-*"]
    }
  }

  dynamic "statement" {
    for_each = local.split ? [] : local.alert_webhook_parameter_arns
    content {
      sid       = "ReadAlertWebhook"
      actions   = ["ssm:GetParameter"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.split ? [] : [1]
    content {
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = local.split ? [] : [1]
    content {
      sid = "EcrProjectRepository"
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
}

resource "aws_iam_role" "instance" {
  name               = "${var.project}-instance"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "instance" {
  name   = "${var.project}-instance"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance.json
}

resource "aws_iam_instance_profile" "instance" {
  name = "${var.project}-instance"
  role = aws_iam_role.instance.name
}

# The serving node (split): MLflow's artifacts and database backup, the runner token, the
# alerts' webhook and, with capture_inbox, the capture inbox (and reading the dataset store,
# for the drift report). Never writing the dataset store: the pipeline on its runner reaches
# the store with the workflow's own AWS credentials, so a job there cannot rewrite datasets
# (the gate's test split) through the node's role. Its deploy jobs push to ECR with the workflow's credentials too.
data "aws_iam_policy_document" "serving" {
  count = local.split ? 1 : 0

  statement {
    sid       = "ListMlflowPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.s3_prefix}/mlflow/*", "${var.s3_prefix}/mlflow-backup/*"]
    }
  }

  statement {
    sid     = "ReadWriteMlflow"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [
      "${aws_s3_bucket.data.arn}/${var.s3_prefix}/mlflow/*",
      "${aws_s3_bucket.data.arn}/${var.s3_prefix}/mlflow-backup/*",
    ]
  }

  statement {
    sid       = "ReadRunnerToken"
    actions   = ["ssm:GetParameter"]
    resources = [local.runner_token_parameter_arn]
  }

  # The scripts and manifests its bootstrap fetches (user-data.tf's aws_s3_object.boot_file).
  statement {
    sid       = "ReadBootFiles"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.data.arn}/${var.s3_prefix}/boot/*"]
  }

  # capture_inbox: the node sends the photos its model pods keep for labelling (the chart's
  # serve.capture, through the node's spool: scripts/capture-upload.sh) to the inbox. Listed
  # (the pods' caps count what is there), read and written; never deleted from here: emptying
  # it is the operator's. The pods themselves never reach this role (hop limit 1). The daily drift report
  # (drift-report.yaml, on this node's runner with this role) reads the inbox and the training
  # photos of the dataset store, which it may read and never write.
  dynamic "statement" {
    for_each = var.capture_inbox ? [1] : []
    content {
      sid       = "ListCaptureInboxAndStore"
      actions   = ["s3:ListBucket"]
      resources = [aws_s3_bucket.data.arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${var.s3_prefix}/inbox/*", "${var.s3_prefix}/store/*"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.capture_inbox ? [1] : []
    content {
      sid       = "WriteCaptureInbox"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = ["${aws_s3_bucket.data.arn}/${var.s3_prefix}/inbox/*"]
    }
  }

  dynamic "statement" {
    for_each = var.capture_inbox ? [1] : []
    content {
      sid       = "ReadStoreForDrift"
      actions   = ["s3:GetObject"]
      resources = ["${aws_s3_bucket.data.arn}/${var.s3_prefix}/store/*"]
    }
  }

  dynamic "statement" {
    for_each = local.alert_webhook_parameter_arns
    content {
      sid       = "ReadAlertWebhook"
      actions   = ["ssm:GetParameter"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role" "serving" {
  count              = local.split ? 1 : 0
  name               = "${var.project}-serving"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "serving" {
  count  = local.split ? 1 : 0
  name   = "${var.project}-serving"
  role   = aws_iam_role.serving[0].id
  policy = data.aws_iam_policy_document.serving[0].json
}

resource "aws_iam_instance_profile" "serving" {
  count = local.split ? 1 : 0
  name  = "${var.project}-serving"
  role  = aws_iam_role.serving[0].name
}
