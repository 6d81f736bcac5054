# What the instances boot with: a cloud-config per role, rendered from
# infrastructure/cloud-init/*.yaml.tftpl with plain interpolations only, which carries the
# scripts of infrastructure/scripts, the k3s manifests of infrastructure/k3s and the settings
# they read. No secret goes in: the runner's GitHub token and the alerts' webhook URL stay in
# SSM Parameter Store and are read on the instance. tests/test_infrastructure.py renders the
# same templates and validates them.

locals {
  split = var.layout == "split"

  # Graviton families carry a "g" after the generation digit (t4g, m7g, c7gn, r8gd).
  serving_arch = can(regex("^[a-z]+[0-9]+g", var.serving_instance_type)) ? "arm64" : "amd64"

  # Every script, as <name>_sh (dashes become underscores) = its text less its comment lines
  # (a line whose first character that is not a blank is "#", but not "#!"), every line after
  # the first indented to sit in a write_files literal block ("content: |"). EC2 takes at most
  # 16 KB of user data: as text, not base64, the gzip that Terraform applies can work (the
  # single layout's came to 14.6 KB gzipped in base64, 9.5 KB as text), and the comments, which
  # are for people reading this repository, were a third of it once gzipped.
  uncommented = "/(?m)^[ \t]*#([^!\n].*)?\n/"
  scripts = {
    for script in fileset("${path.module}/../scripts", "*.sh") :
    "${replace(trimsuffix(script, ".sh"), "-", "_")}_sh" => indent(6, replace(file("${path.module}/../scripts/${script}"), local.uncommented, ""))
  }

  # The k3s manifests of infrastructure/k3s (monitoring.sh puts them in k3s's manifests folder),
  # as <name>_yaml, the same way (their comments left out too).
  manifests = {
    for manifest in fileset("${path.module}/../k3s", "*.yaml") :
    "${replace(trimsuffix(manifest, ".yaml"), "-", "_")}_yaml" => indent(6, replace(file("${path.module}/../k3s/${manifest}"), local.uncommented, ""))
  }

  common_vars = merge(local.scripts, local.manifests, {
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
  # scripts lose theirs (they are for people reading this repository, and the single layout's
  # user data comes near EC2's 16 KB); "#cloud-config", which cloud-init reads first, goes back in.
  serving_user_data = "#cloud-config\n${replace(local.serving_config, local.uncommented, "")}"
  gpu_user_data     = "#cloud-config\n${replace(local.gpu_config, local.uncommented, "")}"
  single_user_data  = "#cloud-config\n${replace(local.single_config, local.uncommented, "")}"
}
