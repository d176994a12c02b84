terraform {
  # Preconditions, optional object attributes and endswith() need >= 1.3; tested with 1.11.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Metric-math target tracking (customized_metric_specification.metrics) and the redrive allow policy
      # resource are in every 5.x release used here; 6.x renames data.aws_region.name.
      version = ">= 5.46.0, < 6.0.0"
    }
  }
}
