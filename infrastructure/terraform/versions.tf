# The AWS side of WMS: the GPU instance that trains and serves (k3s, MLflow, the self-hosted
# runner), its Elastic IP and security group, an instance profile limited to the project's
# S3 prefix and ECR repository, the dataset/artifact bucket and the serving image repository.
#
#   terraform init
#   terraform apply -var allowed_ssh_cidr=203.0.113.7/32 -var key_name=wms
#
# `wms compute` finds the instance by its Name tag (compute.instance_tag = "Name=wms-k3s").

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project   = var.project
      ManagedBy = "terraform"
    }
  }
}
