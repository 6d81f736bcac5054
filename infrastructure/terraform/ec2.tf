# The two machines. The GPU instance (Name = var.instance_name, tagged wms:managed) is the one
# `wms compute` starts and stops; in split it only trains, in single it also serves. The
# serving node (split only) is always on; its other Name and missing wms:managed tag keep it
# out of `wms compute` and the reaper. Both boot from cloud-init (user-data.tf).

data "aws_ami" "gpu" {
  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*"]
  }
}

data "aws_ami" "serving" {
  count       = local.split && var.serving_ami_id == "" ? 1 : 0
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${local.serving_arch}-server-*"]
  }

  filter {
    name   = "architecture"
    values = [local.serving_arch == "arm64" ? "arm64" : "x86_64"]
  }
}

resource "aws_instance" "gpu" {
  #checkov:skip=CKV_AWS_88: without a NAT gateway (about $33/month) its own public address is how it reaches GitHub, PyPI and S3; SSH is open to allowed_ssh_cidr and the serving node only
  #checkov:skip=CKV_AWS_126: basic 5-minute metrics suffice for a machine that runs for a training; detailed monitoring costs about $2/month and nothing alerts on it
  ami                         = var.ami_id != "" ? var.ami_id : data.aws_ami.gpu.id
  instance_type               = var.instance_type
  key_name                    = var.key_name
  vpc_security_group_ids      = [aws_security_group.instance.id]
  iam_instance_profile        = aws_iam_instance_profile.instance.name
  associate_public_ip_address = true # the runner reaches GitHub; in split the address changes at each start
  user_data_base64            = base64gzip(local.split ? local.gpu_user_data : local.single_user_data)
  # its bootstrap fetches the scripts from the bucket at the first boot
  depends_on    = [aws_s3_object.boot_file]
  ebs_optimized = true

  # `wms compute stop` stops it; a shutdown from inside must not delete it.
  instance_initiated_shutdown_behavior = "stop"

  # Spot: a reclaimed instance is stopped with its disk (and the checkpoint on it) kept, and
  # starts again when capacity returns, like an on-demand instance that `wms compute` stopped.
  dynamic "instance_market_options" {
    for_each = var.gpu_spot ? [1] : []
    content {
      market_type = "spot"
      spot_options {
        spot_instance_type             = "persistent"
        instance_interruption_behavior = "stop"
      }
    }
  }

  metadata_options {
    http_tokens = "required"
    # Only the host gets the role's credentials: a pod is one hop behind the node's network.
    # Photos the pods keep for labelling go through the node (scripts/capture.sh).
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = var.root_volume_gb
    volume_type = "gp3"
    encrypted   = true
  }

  tags = {
    Name          = var.instance_name
    "wms:managed" = "true"
  }

  lifecycle {
    # WMS starts and stops the instance; Terraform must not fight over its state. A newer AMI
    # (most_recent) must not replace the instance and its disk behind a plain apply; to move
    # to one: terraform apply -replace=aws_instance.gpu
    # (The run-time lease tags are the provider's ignore_tags, in versions.tf.)
    ignore_changes = [ami]
  }
}

resource "aws_instance" "serving" {
  #checkov:skip=CKV_AWS_126: basic 5-minute metrics suffice; the service's own /metrics feed the dashboard and alerts, and detailed monitoring costs about $2/month
  count                  = local.split ? 1 : 0
  ami                    = var.serving_ami_id != "" ? var.serving_ami_id : data.aws_ami.serving[0].id
  instance_type          = var.serving_instance_type
  key_name               = var.key_name
  vpc_security_group_ids = [aws_security_group.serving[0].id, aws_security_group.gpu_ssh_clients[0].id]
  iam_instance_profile   = aws_iam_instance_profile.serving[0].name
  user_data_base64       = base64gzip(local.serving_user_data)
  # its bootstrap fetches the scripts from the bucket at the first boot
  depends_on    = [aws_s3_object.boot_file]
  ebs_optimized = true

  metadata_options {
    http_tokens = "required"
    # Only the host gets the role's credentials: a pod is one hop behind the node's network.
    # Photos the pods keep for labelling go through the node (scripts/capture.sh).
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = var.serving_root_volume_gb
    volume_type = "gp3"
    encrypted   = true
  }

  # No wms:managed and another Name: nothing in WMS ever stops it.
  tags = {
    Name = "${var.project}-serving"
    Role = "serving"
  }

  lifecycle {
    # A newer Ubuntu AMI must not replace the node (and its MLflow database) behind a plain
    # apply. To move to one: sudo systemctl start mlflow-backup on the node, then
    # terraform apply -replace='aws_instance.serving[0]' (the new node restores the backup).
    ignore_changes = [ami]
  }
}
