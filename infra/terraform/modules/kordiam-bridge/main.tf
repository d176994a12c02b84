# kordiam-bridge on AWS: the notification queue and its dead-letter queue, the DynamoDB state table, the
# secrets, least-privilege roles, and the worker as an autoscaled ECS Fargate service with alarms.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  fifo_suffix = var.fifo_queue ? ".fifo" : ""
  queue_name  = "${var.name}-notifications${local.fifo_suffix}"
  dlq_name    = "${var.name}-notifications-dlq${local.fifo_suffix}"
  table_name  = "${var.name}-state"

  cluster_name   = coalesce(var.cluster_name, var.name)
  cluster_arn    = var.create_cluster ? aws_ecs_cluster.this[0].arn : "arn:${local.partition}:ecs:${local.region}:${local.account_id}:cluster/${local.cluster_name}"
  container_name = "worker"
  ops_port       = 9090
  log_group_name = "/ecs/${var.name}"

  kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.this[0].arn

  # The worker's SQS read timeout is the long-poll wait + 10 s; a message's visibility must outlast a receive,
  # so the visibility timeout is the processing budget, and never less than that plus a margin.
  visibility_timeout_seconds = max(var.processing_budget_seconds, var.receive_wait_time_seconds + 15)

  dlq_retention_seconds = 1209600 # 14 days, the SQS maximum: time to inspect and redrive

  # How much of the DLQ's retention a dead letter SQS moved (max_receive_count) may have used up on the queue: a
  # standard queue keeps its first enqueue time through the move, a FIFO queue resets it (AWS, "Setting-up
  # dead-letter queue retention"). The DLQ's ApproximateAgeOfOldestMessage counts from the move either way.
  time_on_the_queue_before_dead_letter_seconds = var.fifo_queue ? 0 : var.message_retention_seconds

  # aws:PrincipalArn is the role or user ARN of a request, never an account root: an account root given as a
  # sender admits every identity of that account.
  kordiam_sender_patterns = [
    for arn in var.kordiam_sender_principal_arns : endswith(arn, ":root") ? "${trimsuffix(arn, "root")}*" : arn
  ]

  tags = merge(var.tags, { "app" = "kordiam-bridge", "kordiam-bridge:name" = var.name })
}
