resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_18: access logs need a second bucket and nobody reads them for a private bucket reached by two roles; turn on CloudTrail data events if an audit needs them
  #checkov:skip=CKV2_AWS_62: nothing reacts to bucket events; git pushes drive the pipeline
  #checkov:skip=CKV_AWS_144: versioning keeps every overwritten or deleted object; a replica in a second region doubles the storage bill, add one if the photos cannot be labelled again
  bucket = var.bucket_name
}

# Versioning keeps what is overwritten (the MLflow database backup, hourly when it changed) or deleted:
# old versions go after 90 days, and unfinished multipart uploads after a week. A deletion also
# leaves a delete marker, which S3 keeps after the versions behind it expired unless told
# otherwise: the dataset store's locks delete two objects at every use, so without the
# expiration below every pipeline run would leave four markers for good.
resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }

    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # The photos the model's pods keep for labelling (capture_inbox) go after capture_keep_days, as
  # the users were told (docs/serving.md), and what leaves the inbox (expired, moved out to be
  # labelled) keeps its old version one day, not noncurrent_version_days: of two expirations
  # that overlap, S3 honours the shorter.
  dynamic "rule" {
    for_each = var.capture_keep_days > 0 ? [1] : []
    content {
      id     = "expire-captured-photos"
      status = "Enabled"
      filter {
        prefix = "${var.s3_prefix}/inbox/"
      }
      expiration {
        days = var.capture_keep_days
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    # The AWS-managed key (aws/s3): no key policy to keep, and the bucket key keeps KMS
    # requests (and their cost) to a few per object batch.
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_ecr_repository" "model" {
  #checkov:skip=CKV_AWS_51: a redeploy of the same model at the same commit pushes its tag (v<version>-<commit>) again; each tag names one model and one commit
  name                 = var.ecr_repository
  image_tag_mutability = "MUTABLE"

  encryption_configuration {
    encryption_type = "KMS" # the AWS-managed key (aws/ecr)
  }

  image_scanning_configuration {
    scan_on_push = true
  }
}

resource "aws_ecr_lifecycle_policy" "model" {
  repository = aws_ecr_repository.model.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the ${var.ecr_keep_images} most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.ecr_keep_images
      }
      action = { type = "expire" }
    }]
  })
}
