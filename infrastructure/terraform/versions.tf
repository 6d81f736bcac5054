# The AWS side of WMS, in one of two layouts (var.layout, costs in its description):
#   split (default)  an always-on serving node (k3s + model service, MLflow, runner wms-serve)
#                    and a GPU instance that only trains (runner wms-gpu), stopped after runs
#   single           one GPU instance for everything, stopped after runs (the seed's)
# Plus the instances' security groups, Elastic IPs and roles (limited to the project's S3
# prefix, the ECR repository and the runner token's SSM parameter), the dataset/artifact
# bucket and the serving image repository. The instances bootstrap themselves with cloud-init
# from infrastructure/cloud-init and infrastructure/scripts (user-data.tf).
#
#   aws ssm put-parameter --region "$AWS_REGION" --type SecureString --name /wms/github/runner-token --value <token>
#   terraform init
#   terraform apply -var region="$AWS_REGION" -var allowed_ssh_cidr=203.0.113.7/32 -var key_name=wms \
#     -var bucket_name=<bucket> -var github_repository=<owner>/<repo>
#   terraform output
#
# `wms compute` finds the GPU instance by its Name tag (compute.instance_tag = "Name=wms-k3s").

terraform {
  required_version = ">= 1.9" # a variable's validation that reads another variable (runner_sha256)
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
  # The tags WMS writes on the GPU instance while runs hold it (a lease per holder, their
  # summary, the mark of a stop under way): an apply during a run neither shows them as drift
  # nor removes them, whatever the holder is called (wms.compute.leases names them).
  ignore_tags {
    keys         = ["wms:lease-expires", "wms:lease-holders", "wms:stopping"]
    key_prefixes = ["wms:lease:"]
  }
}
