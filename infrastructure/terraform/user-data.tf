# What the instances boot with: a cloud-config per role, rendered from
# infrastructure/cloud-init/*.yaml.tftpl with plain interpolations only, which carries the
# settings, the bootstrap and the sha256 of every other script of infrastructure/scripts and
# manifest of infrastructure/k3s the instance needs, which the bootstrap fetches from the
# bucket. No secret goes in: the runner's GitHub token and the alerts' webhook URL stay in SSM
# Parameter Store and are read on the instance. tests/test_infrastructure.py renders the same
# templates and validates them.

locals {
  split = var.layout == "split"

  # Graviton families carry a "g" after the generation digit (t4g, m7g, c7gn, r8gd).
  serving_arch = can(regex("^[a-z]+[0-9]+g", var.serving_instance_type)) ? "arm64" : "amd64"

  # Every script and k3s manifest as an instance gets it: its text less its comment lines (a
  # line whose first character that is not a blank is "#", but not "#!"), which are for people
  # reading this repository. The bucket holds each under its sha256 (aws_s3_object.boot_file
  # below), each template names those its instance needs so (/etc/wms/boot-files, from
  # boot_sha), and bootstrap.sh fetches them and checks them before anything runs.
  uncommented = "/(?m)^[ \t]*#([^!\n].*)?\n/"
  boot_texts = merge(
    { for script in fileset("${path.module}/../scripts", "*.sh") : script => replace(file("${path.module}/../scripts/${script}"), local.uncommented, "") },
    { for manifest in fileset("${path.module}/../k3s", "*.yaml") : manifest => replace(file("${path.module}/../k3s/${manifest}"), local.uncommented, "") },
  )
  boot_sha = { for name, text in local.boot_texts : name => sha256(text) }

  # The scripts the user data carries itself, as <name>_sh (dashes become underscores), every
  # line after the first indented to sit in a write_files literal block ("content: |"): the
  # bootstrap, lib.sh and base.sh run before the AWS CLI is there, and lease-guard.sh must stop
  # an idle instance whatever S3 says. EC2 takes at most 16 KB of user data: with every script
  # in it, the single layout's came to 15.7 KB gzipped.
  scripts = {
    for script in ["bootstrap.sh", "lib.sh", "base.sh", "lease-guard.sh"] :
    "${replace(trimsuffix(script, ".sh"), "-", "_")}_sh" => indent(6, local.boot_texts[script])
  }

  common_vars = merge(local.scripts, {
    boot_sha                = local.boot_sha
    boot_files_uri          = "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/boot"
    region                  = var.region
    mlflow_port             = var.mlflow_port
    mlflow_version          = var.mlflow_version
    mlflow_artifacts_uri    = local.mlflow_artifacts_uri
    mlflow_backup_uri       = "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/mlflow-backup/mlflow.db"
    k3s_version             = var.k3s_version
    helm_version            = var.helm_version
    github_repository       = var.github_repository
    runner_version          = var.runner_version
    runner_token_parameter  = var.runner_token_parameter
    alert_webhook_parameter = var.alert_webhook_parameter
    # The inbox the node sends its pods' captures to (capture.sh); "" turns capture off there.
    capture_inbox = var.capture_inbox ? local.capture_dir : ""
  })

  # The Elastic IPs are separate from their associations, so the address can go into the
  # user data (k3s certificate, MLflow's allowed hosts) without a cycle.
  serving_config = templatefile("${path.module}/../cloud-init/serving.yaml.tftpl", merge(local.common_vars, {
    public_ip     = try(aws_eip.serving[0].public_ip, "")
    runner_name   = "${var.project}-serving"
    runner_sha256 = var.runner_sha256[var.runner_version][local.serving_arch == "arm64" ? "arm64" : "x64"]
  }))

  gpu_config = templatefile("${path.module}/../cloud-init/gpu.yaml.tftpl", merge(local.common_vars, {
    runner_name   = var.instance_name # compute.runner_name, which ready_probe = "runner" waits for
    runner_sha256 = var.runner_sha256[var.runner_version]["x64"]
  }))

  single_config = templatefile("${path.module}/../cloud-init/single.yaml.tftpl", merge(local.common_vars, {
    public_ip     = try(aws_eip.instance[0].public_ip, "")
    runner_name   = var.instance_name
    runner_sha256 = var.runner_sha256[var.runner_version]["x64"]
  }))

  # What each instance boots with: its cloud-config less the template's comment lines, as the
  # scripts lose theirs (they are for people reading this repository, and EC2 takes at most
  # 16 KB); "#cloud-config", which cloud-init reads first, goes back in.
  serving_user_data = "#cloud-config\n${replace(local.serving_config, local.uncommented, "")}"
  gpu_user_data     = "#cloud-config\n${replace(local.gpu_config, local.uncommented, "")}"
  single_user_data  = "#cloud-config\n${replace(local.single_config, local.uncommented, "")}"
}

# The scripts and manifests the instances fetch at boot (bootstrap.sh), each under its sha256: a
# changed file is a new key, which the user data names at the same apply.
resource "aws_s3_object" "boot_file" {
  for_each     = local.boot_texts
  bucket       = aws_s3_bucket.data.id
  key          = "${var.s3_prefix}/boot/${sha256(each.value)}"
  content      = each.value
  content_type = "text/plain"
}
