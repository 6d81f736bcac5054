# Who may reach what: everything from var.allowed_ssh_cidr only, plus, in split, MLflow on the
# serving node from the GPU instance (which logs its runs there over the VPC's private
# addresses) and SSH to the GPU instance from the serving node (whose pipeline trains there).
# Elastic IPs: the serving node's in split, the GPU instance's in single.

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

  # In split the pipeline on the serving node trains here over SSH (a group of its own, which
  # the serving node joins, so that the two groups do not name each other).
  dynamic "ingress" {
    for_each = local.split ? [aws_security_group.gpu_ssh_clients[0].id] : []
    content {
      description     = "SSH from the serving node (training over SSH)"
      from_port       = 22
      to_port         = 22
      protocol        = "tcp"
      security_groups = [ingress.value]
    }
  }

  # In single the cluster is on this instance.
  dynamic "ingress" {
    for_each = local.split ? [] : [6443]
    content {
      description = "k3s API"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = [var.allowed_ssh_cidr]
    }
  }

  egress {
    description = "HTTPS: GitHub (the runner polls out), PyPI, S3, ECR, SSM, container images"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "HTTP: Ubuntu's package mirrors"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Inside the VPC: SSH to the GPU instance, MLflow on the serving node"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.default.cidr_block]
  }
}

resource "aws_security_group" "gpu_ssh_clients" {
  count       = local.split ? 1 : 0
  name        = "${var.project}-gpu-ssh-clients"
  description = "Members may SSH to the WMS GPU instance: the serving node, whose pipeline trains there"
  vpc_id      = data.aws_vpc.default.id
}

resource "aws_security_group" "serving" {
  count       = local.split ? 1 : 0
  name        = "${var.project}-serving"
  description = "WMS serving node: SSH, MLflow and the k3s API from the allowed CIDR; MLflow from the GPU instance"
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

  ingress {
    description = "k3s API"
    from_port   = 6443
    to_port     = 6443
    protocol    = "tcp"
    cidr_blocks = [var.allowed_ssh_cidr]
  }

  ingress {
    description     = "MLflow from the GPU instance (private address)"
    from_port       = var.mlflow_port
    to_port         = var.mlflow_port
    protocol        = "tcp"
    security_groups = [aws_security_group.instance.id]
  }

  egress {
    description = "HTTPS: GitHub (the runner polls out), PyPI, S3, ECR, SSM, container images"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "HTTP: Ubuntu's package mirrors"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Inside the VPC: SSH to the GPU instance, MLflow on the serving node"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.default.cidr_block]
  }
}

resource "aws_eip" "instance" {
  count  = local.split ? 0 : 1
  domain = "vpc"
  tags   = { Name = var.instance_name }
}

resource "aws_eip_association" "instance" {
  count         = local.split ? 0 : 1
  allocation_id = aws_eip.instance[0].id
  instance_id   = aws_instance.gpu.id
}

resource "aws_eip" "serving" {
  count  = local.split ? 1 : 0
  domain = "vpc"
  tags   = { Name = "${var.project}-serving" }
}

resource "aws_eip_association" "serving" {
  count         = local.split ? 1 : 0
  allocation_id = aws_eip.serving[0].id
  instance_id   = aws_instance.serving[0].id
}
