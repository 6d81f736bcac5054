variable "project" {
  description = "Prefix of every resource name."
  type        = string
  default     = "wms"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "layout" {
  description = <<-EOT
    Where serving and the registry live. Monthly figures are us-east-1 on-demand list prices,
    to check against the current price list (a month = 730 h):
    - "split" (default): a small always-on serving node (var.serving_instance_type) runs k3s with
      the model service, the MLflow server (SQLite on its disk, backed up to S3 hourly; artifacts
      in S3) and a GitHub runner labelled wms-serve; the GPU instance only trains (runner label
      wms-gpu) and is stopped after each run, on demand or spot (var.gpu_spot).
      t4g.medium $0.0336/h = about $24.5/month; its 30 GB gp3 root at $0.08/GB-month = $2.40;
      its Elastic IP $0.005/h = about $3.65/month; the GPU's 100 GB gp3 = $8/month while
      stopped; g4dn.xlarge $0.526/h only while it trains (spot: often well below that; its
      auto-assigned public IPv4 adds $0.005/h while it runs). About $38.6/month before any
      training hour.
    - "single" (the seed's): one GPU instance runs everything (k3s and the model service,
      MLflow, the runner, training) and is stopped after each run, so serving and the registry
      are down while it sleeps. 100 GB gp3 = $8/month and its Elastic IP about $3.65/month:
      about $11.7/month, plus g4dn.xlarge $0.526/h whenever it runs.
  EOT
  type        = string
  default     = "split"

  validation {
    condition     = contains(["split", "single"], var.layout)
    error_message = "layout must be \"split\" (small always-on serving node + GPU that only trains) or \"single\" (one GPU instance for everything)."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the training machine (a GPU type for real training; g4dn.xlarge: $0.526/h on demand in us-east-1, list price)."
  type        = string
  default     = "g4dn.xlarge"
}

variable "instance_name" {
  description = "Name tag of the instance; must match compute.instance_tag in wms.toml."
  type        = string
  default     = "wms-k3s"
}

variable "ami_id" {
  description = "AMI of the instance; empty: the latest Deep Learning Base GPU AMI (Ubuntu 22.04)."
  type        = string
  default     = ""
}

variable "root_volume_gb" {
  description = "Size of the GPU instance's root volume in GiB (environments, checkpoints; in single also k3s and MLflow). gp3: $0.08/GB-month."
  type        = number
  default     = 100
}

variable "key_name" {
  description = "Name of an existing EC2 key pair for SSH."
  type        = string
}

variable "allowed_ssh_cidr" {
  description = "The only network allowed to reach SSH, MLflow and the k3s API, e.g. your address /32."
  type        = string

  validation {
    condition     = can(cidrhost(var.allowed_ssh_cidr, 0)) && var.allowed_ssh_cidr != "0.0.0.0/0"
    error_message = "allowed_ssh_cidr must be a CIDR block narrower than 0.0.0.0/0, e.g. 203.0.113.7/32."
  }
}

variable "mlflow_port" {
  description = "Port of the MLflow server (compute.mlflow_port): on the serving node in split, on the GPU instance in single."
  type        = number
  default     = 5000
}

variable "bucket_name" {
  description = "S3 bucket of dataset versions and MLflow artifacts (store.url = s3://BUCKET/PREFIX)."
  type        = string
}

variable "s3_prefix" {
  description = "The project's prefix inside the bucket; the instance may touch nothing else."
  type        = string
  default     = "wms"
}

variable "ecr_repository" {
  description = "ECR repository of the serving image."
  type        = string
  default     = "wms-model"
}

variable "ecr_keep_images" {
  description = "How many recent images the ECR lifecycle policy keeps."
  type        = number
  default     = 10
}

variable "gpu_spot" {
  description = "Run the GPU instance as a persistent spot instance that AWS stops (not terminates) when it reclaims it, keeping its disk and checkpoint. Changing it replaces the instance."
  type        = bool
  default     = false
}

variable "serving_instance_type" {
  description = "Instance type of the always-on serving node (split only); Graviton types (t4g, m7g, ...) get an arm64 AMI, others amd64. t4g.medium: $0.0336/h, about $24.5/month on demand in us-east-1 (list price)."
  type        = string
  default     = "t4g.medium"

  validation {
    condition     = !can(regex("^(g|p)[0-9]", var.serving_instance_type))
    error_message = "serving_instance_type is the small always-on node; a GPU type (g*, p*) belongs in instance_type."
  }
}

variable "serving_ami_id" {
  description = "AMI of the serving node; empty: the latest Canonical Ubuntu 24.04 server AMI of its architecture."
  type        = string
  default     = ""
}

variable "serving_root_volume_gb" {
  description = "Size of the serving node's root volume in GiB (k3s images, the MLflow database, the runner's work folder). gp3: $0.08/GB-month."
  type        = number
  default     = 30
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose self-hosted runners the instances become."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository is owner/name, e.g. octo-org/water-meters."
  }
}

variable "runner_token_parameter" {
  description = "Name of the SSM SecureString parameter that holds the GitHub token allowed to administer the repository's self-hosted runners (a fine-grained PAT with Administration: write and Contents: read; not an App installation token, which expires after an hour). You create it (aws ssm put-parameter --type SecureString); Terraform only names it, so the token is in neither user data nor state."
  type        = string
  default     = "/wms/github/runner-token"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.runner_token_parameter))
    error_message = "runner_token_parameter is a parameter path starting with /, e.g. /wms/github/runner-token."
  }
}

variable "alert_webhook_parameter" {
  description = "Name of an SSM SecureString parameter holding a Slack-compatible incoming webhook URL (Slack, Mattermost, Rocket.Chat) that Alertmanager on the serving node sends the alerts to. You create it (aws ssm put-parameter --type SecureString); Terraform only names it, so the URL is in neither user data nor state. Empty: nobody is paged, and the alerts are only seen on Prometheus's and Alertmanager's pages through a port-forward."
  type        = string
  default     = ""

  validation {
    condition     = var.alert_webhook_parameter == "" || can(regex("^/[A-Za-z0-9_./-]+$", var.alert_webhook_parameter))
    error_message = "alert_webhook_parameter is empty or a parameter path starting with /, e.g. /wms/alerts/webhook-url."
  }
}

variable "capture_inbox" {
  description = "Let the model's pods keep photos for labelling (the chart's serve.capture) in the bucket's <s3_prefix>/inbox/: the pods write them to the serving node's spool, and the node sends them on every minute (scripts/capture.sh); its role may list, read and write that prefix (and read the dataset store, for the daily drift report its runner makes). The pods get no credentials: the instance metadata answers the host alone (hop limit 1). Off by default: tell your users first (docs/serving.md, \"Keeping photos for labelling\")."
  type        = bool
  default     = false
}

variable "capture_keep_days" {
  description = "Days a photo kept for labelling stays in the bucket's <s3_prefix>/inbox/ before S3 deletes it (then noncurrent_version_days more as an old version); 0: until someone moves it out. Tell your users (docs/serving.md)."
  type        = number
  default     = 180

  validation {
    condition     = var.capture_keep_days >= 0 && floor(var.capture_keep_days) == var.capture_keep_days
    error_message = "capture_keep_days is a whole number of days, 0 or more (0: keep until moved out)."
  }
}

variable "k3s_version" {
  description = "k3s release installed on the node that serves (the Kubernetes version of the cluster)."
  type        = string
  default     = "v1.31.12+k3s1"
}

variable "helm_version" {
  description = "Helm release installed beside k3s (wms deploy runs helm upgrade --install)."
  type        = string
  default     = "v3.19.0"
}

variable "mlflow_version" {
  description = "MLflow release of the tracking server; keep it equal to the client's pin in constraints.txt."
  type        = string
  default     = "3.17.2"
}

variable "runner_version" {
  description = "GitHub Actions runner release installed on the instances (it updates itself afterwards)."
  type        = string
  default     = "2.328.0"
}

variable "runner_sha256" {
  description = "SHA-256 of the GitHub runner's tarballs, per runner_version and architecture (x64: the GPU instance and an x86 serving node; arm64: a Graviton serving node), as GitHub publishes them (\"SHA-256 Checksums\" at https://github.com/actions/runner/releases/tag/v<runner_version>, or the new-runner page's \"Validate the hash\"). The bootstrap installs no tarball that differs, and Terraform refuses a runner_version without both here: add the next version's before changing runner_version."
  type        = map(map(string))
  default = {
    "2.328.0" = {
      x64   = "01066fad3a2893e63e6ca880ae3a1fad5bf9329d60e77ee15f2b97c148c3cd4e"
      arm64 = "b801b9809c4d9301932bccadf57ca13533073b2aa9fa9b8e625a8db905b5d8eb"
    }
  }
  validation {
    condition     = alltrue([for version, sums in var.runner_sha256 : alltrue([for arch, sum in sums : contains(["x64", "arm64"], arch) && can(regex("^[0-9a-f]{64}$", sum))])])
    error_message = "runner_sha256 maps a runner version to { x64 = \"<sha256>\", arm64 = \"<sha256>\" }, 64 lowercase hex digits each, as the release notes give them."
  }
  validation {
    condition     = length(setintersection(keys(lookup(var.runner_sha256, var.runner_version, {})), ["x64", "arm64"])) == 2
    error_message = "runner_sha256 lacks the x64 and arm64 SHA-256 of runner_version ${var.runner_version}: add them, from https://github.com/actions/runner/releases/tag/v${var.runner_version}, as runner_sha256 = { \"${var.runner_version}\" = { x64 = \"<sha256>\", arm64 = \"<sha256>\" } } (a runner tarball is never installed unchecked)."
  }
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object of the bucket is kept (versioning) before it expires."
  type        = number
  default     = 90
}

variable "github_oidc_provider_arn" {
  description = "ARN of GitHub's OIDC provider (token.actions.githubusercontent.com) where the account has one already; empty: Terraform creates it."
  type        = string
  default     = ""
}
