# What `terraform output` tells the person setting WMS up: addresses, the MLflow URLs (one to
# open from the allowed network, one for the runners inside the VPC), how to reach each
# machine and the cluster, and the values of the repository variables the workflows read.

locals {
  # The machine that serves (k3s, MLflow): the serving node in split, the GPU instance in single.
  serving_public_ip = local.split ? try(aws_eip.serving[0].public_ip, null) : try(aws_eip.instance[0].public_ip, null)
  # The Elastic IP's DNS name: inside the VPC it resolves to the private address of the instance
  # the Elastic IP is on (AWS's split-horizon DNS for public hostnames), so the runners' jobs
  # reach MLflow over the private network and, since the Elastic IP moves to a replaced
  # instance, at a name that outlives it; its private address does not.
  serving_internal_host = local.split ? try(aws_eip.serving[0].public_dns, null) : try(aws_eip.instance[0].public_dns, null)
  ssh_key_file          = "~/.ssh/${var.key_name}.pem"
  capture_dir           = "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/inbox"
  mlflow_artifacts_uri  = "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/mlflow"
}

output "layout" {
  description = "split: serving node + GPU that only trains; single: one GPU instance for everything."
  value       = var.layout
}

output "instance_id" {
  description = "The GPU instance (compute.instance_id, or find it by the Name tag compute.instance_tag)."
  value       = aws_instance.gpu.id
}

output "public_ip" {
  description = "The GPU instance's address: its Elastic IP in single; in split the address it has now, which changes at each start (wms compute reads the current one)."
  value       = local.split ? aws_instance.gpu.public_ip : try(aws_eip.instance[0].public_ip, null)
}

output "serving_instance_id" {
  description = "The always-on serving node (split; null in single). Not tagged wms:managed: WMS never stops it."
  value       = try(aws_instance.serving[0].id, null)
}

output "serving_ip" {
  description = "The Elastic IP of the machine that runs k3s and MLflow: the serving node in split, the GPU instance in single."
  value       = local.serving_public_ip
}

output "mlflow_url" {
  description = "MLflow from the allowed network (your laptop): tracking.uri there. In single it answers only while the instance runs."
  value       = "http://${local.serving_public_ip}:${var.mlflow_port}"
}

output "mlflow_url_internal" {
  description = "MLflow from inside the VPC, for the runners' jobs: the repository variable WMS_TRACKING_URI (in split the GPU reaches the serving node only over the private network: this name resolves to the node's private address there, whichever instance holds the Elastic IP); from a laptop in split, compute.remote_tracking_uri."
  value       = "http://${local.serving_internal_host}:${var.mlflow_port}"
}

output "store_url" {
  description = "store.url for the dataset versions (repository variable WMS_STORE_URL)."
  value       = "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/store"
}

output "mlflow_artifacts_uri" {
  description = "Where the MLflow server keeps run files in the bucket (its --artifacts-destination): wms data forget --mlflow-artifacts, so that the bucket's old versions of a forgotten photo's drawings go too."
  value       = local.mlflow_artifacts_uri
}

output "capture_dir" {
  description = "The inbox the serving node sends the pods' captures to, with capture_inbox = true (the repository variable WMS_CAPTURE_DIR, and serve.capture_dir where you label); null while it is off."
  value       = var.capture_inbox ? local.capture_dir : null
}

output "ecr_repository_url" {
  description = "Where the serving image is pushed."
  value       = aws_ecr_repository.model.repository_url
}

output "kubeconfig_path" {
  description = "Where k3s writes the cluster's kubeconfig on the machine that serves (a copy for the runner's jobs is ~runner/.kube/config)."
  value       = "/etc/rancher/k3s/k3s.yaml"
}

output "kubeconfig_command" {
  description = "Fetches the kubeconfig to this machine, pointed at the public address (the k3s API is open to allowed_ssh_cidr only)."
  value       = "ssh -i ${local.ssh_key_file} ubuntu@${local.serving_public_ip} sudo cat /etc/rancher/k3s/k3s.yaml | sed 's#https://127.0.0.1:6443#https://${local.serving_public_ip}:6443#' > wms-kubeconfig.yaml && export KUBECONFIG=$PWD/wms-kubeconfig.yaml"
}

output "ssh_commands" {
  description = "SSH to each machine (the key file is assumed at ~/.ssh/<key_name>.pem). Bootstrap log: journalctl -u wms-bootstrap."
  value = {
    gpu     = "ssh -i ${local.ssh_key_file} ubuntu@${local.split ? aws_instance.gpu.public_ip : try(aws_eip.instance[0].public_ip, "")}"
    serving = "ssh -i ${local.ssh_key_file} ubuntu@${local.serving_public_ip}"
  }
}

output "runner_labels" {
  description = "The self-hosted runners the instances register (runs-on: [self-hosted, linux, <label>])."
  value = local.split ? {
    (var.instance_name)      = "wms-gpu"
    "${var.project}-serving" = "wms-serve"
    } : {
    (var.instance_name) = "wms-gpu,wms-serve"
  }
}

output "repository_variables" {
  description = "GitHub repository variables (Settings > Secrets and variables > Actions > Variables) for this layout."
  # No WMS_GPU_HOST: in split the jobs read the GPU instance's private address from EC2 at each
  # start (compute.address = "private"), so a replaced instance is found at its new one.
  value = {
    WMS_LAYOUT       = var.layout
    WMS_TRACKING_URI = "http://${local.serving_internal_host}:${var.mlflow_port}"
    WMS_STORE_URL    = "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/store"
    AWS_REGION       = var.region
    # Turns on the daily drift report (drift-report.yaml); empty while capture_inbox is off.
    WMS_CAPTURE_DIR = var.capture_inbox ? local.capture_dir : ""
  }
}

output "github_role_arns" {
  description = "Each GitHub environment's AWS_ROLE_ARN (an environment variable, set in that environment): the roles its jobs assume through GitHub's OIDC provider, instead of keys."
  value       = { for env, role in aws_iam_role.github : env => role.arn }
}
