terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  # State in S3 with native locking; the bucket and key come from a backend file:
  #   terraform init -backend-config=backend.hcl        (see backend.hcl.example)
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project     = "kordiam-bridge"
      environment = var.environment
      managed-by  = "terraform"
    }
  }
}
