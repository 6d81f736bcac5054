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

variable "instance_type" {
  description = "EC2 instance type of the training machine (a GPU type for real training)."
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
  description = "Size of the root volume in GiB (images, k3s, MLflow)."
  type        = number
  default     = 100
}

variable "key_name" {
  description = "Name of an existing EC2 key pair for SSH."
  type        = string
}

variable "allowed_ssh_cidr" {
  description = "The only network allowed to reach SSH and MLflow, e.g. your address /32."
  type        = string

  validation {
    condition     = can(cidrhost(var.allowed_ssh_cidr, 0)) && var.allowed_ssh_cidr != "0.0.0.0/0"
    error_message = "allowed_ssh_cidr must be a CIDR block narrower than 0.0.0.0/0, e.g. 203.0.113.7/32."
  }
}

variable "mlflow_port" {
  description = "Port of the MLflow server on the instance (compute.mlflow_port)."
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
