data "aws_ami" "gpu" {
  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*"]
  }
}

resource "aws_instance" "gpu" {
  ami                    = var.ami_id != "" ? var.ami_id : data.aws_ami.gpu.id
  instance_type          = var.instance_type
  key_name               = var.key_name
  vpc_security_group_ids = [aws_security_group.instance.id]
  iam_instance_profile   = aws_iam_instance_profile.instance.name

  # `wms compute stop` stops it; a shutdown from inside must not delete it.
  instance_initiated_shutdown_behavior = "stop"

  metadata_options {
    http_tokens = "required"
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
    # WMS starts and stops the instance; Terraform must not fight over its state.
    ignore_changes = [tags["wms:lease-expires"]]
  }
}
