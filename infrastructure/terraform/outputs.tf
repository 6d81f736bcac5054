output "instance_id" {
  description = "compute.instance_id (or find it by the Name tag)."
  value       = aws_instance.gpu.id
}

output "public_ip" {
  description = "The Elastic IP: SSH and MLflow address."
  value       = aws_eip.instance.public_ip
}

output "mlflow_url" {
  description = "tracking.uri for runs that log to the instance's MLflow."
  value       = "http://${aws_eip.instance.public_ip}:${var.mlflow_port}"
}

output "store_url" {
  description = "store.url for the dataset versions."
  value       = "s3://${aws_s3_bucket.data.bucket}/${var.s3_prefix}/store"
}

output "ecr_repository_url" {
  description = "Where the serving image is pushed."
  value       = aws_ecr_repository.model.repository_url
}
