terraform {
  # Preconditions, optional object attributes and endswith() need >= 1.3; tested with 1.11.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.49.0 is the first release with aws_kms_key.rotation_period_in_days (older ones refuse the argument at
      # plan); metric-math target tracking and the redrive allow policy resource predate it. 6.x renames
      # data.aws_region.name.
      version = ">= 5.49.0, < 6.0.0"
    }
  }
}
