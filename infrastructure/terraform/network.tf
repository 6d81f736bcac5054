data "aws_vpc" "default" {
  default = true
}

resource "aws_security_group" "instance" {
  name        = "${var.project}-instance"
  description = "WMS training/serving instance: SSH and MLflow from the allowed CIDR only"
  vpc_id      = data.aws_vpc.default.id

  ingress {
    description = "SSH"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [var.allowed_ssh_cidr]
  }

  ingress {
    description = "MLflow"
    from_port   = var.mlflow_port
    to_port     = var.mlflow_port
    protocol    = "tcp"
    cidr_blocks = [var.allowed_ssh_cidr]
  }

  egress {
    description = "Updates, ECR, S3 and GitHub (the self-hosted runner polls out)"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_eip" "instance" {
  domain   = "vpc"
  instance = aws_instance.gpu.id
  tags     = { Name = var.instance_name }
}
