output "queue_url" {
  description = "The notification queue: configure it in Kordiam's message-queue export (with the region)."
  value       = aws_sqs_queue.main.url
}

output "queue_arn" {
  description = "ARN of the notification queue (for the sender's IAM policy)."
  value       = aws_sqs_queue.main.arn
}

output "queue_name" {
  description = "Name of the notification queue."
  value       = aws_sqs_queue.main.name
}

output "dlq_url" {
  description = "The dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue (the source of a redrive)."
  value       = aws_sqs_queue.dlq.arn
}

output "kms_key_arn" {
  description = "The key encrypting the queues, table, secrets and logs; the sender needs kms:GenerateDataKey and kms:Decrypt on it."
  value       = local.kms_key_arn
}

output "state_table_name" {
  description = "DynamoDB state table (the worker's state.url is dynamodb://<this>)."
  value       = aws_dynamodb_table.state.name
}

output "state_table_arn" {
  description = "ARN of the state table."
  value       = aws_dynamodb_table.state.arn
}

output "kordiam_client_secret_arn" {
  description = "Put the Kordiam client secret here (plain string)."
  value       = aws_secretsmanager_secret.kordiam_client_secret.arn
}

output "channels_secret_arn" {
  description = "Put the channels JSON array here (the [[channels]] tables, credentials included)."
  value       = aws_secretsmanager_secret.channels.arn
}

output "task_role_arn" {
  description = "The worker's IAM role."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "The ECS execution role (image pull, logs, secrets)."
  value       = aws_iam_role.execution.arn
}

output "operator_policy_arn" {
  description = "Attach to the roles in operator_principal_arns: redrive the dead-letter queue, replay messages, requeue parked elements."
  value       = aws_iam_policy.operator.arn
}

output "cluster_name" {
  description = "ECS cluster of the service."
  value       = local.cluster_name
}

output "service_name" {
  description = "ECS service of the worker (null while enable_service is false)."
  value       = var.enable_service ? aws_ecs_service.worker[0].name : null
}

output "task_definition_arn" {
  description = "Current task definition revision."
  value       = aws_ecs_task_definition.worker.arn
}

output "log_group_name" {
  description = "CloudWatch Logs group of the worker's JSON logs."
  value       = aws_cloudwatch_log_group.worker.name
}

output "security_group_id" {
  description = "Security group of the worker tasks (allow it on VPC endpoints you add)."
  value       = aws_security_group.worker.id
}

output "alarm_arns" {
  description = "The CloudWatch alarms by purpose."
  value = merge(
    {
      dead_letters          = aws_cloudwatch_metric_alarm.dlq_not_empty.arn
      dead_letters_expiring = aws_cloudwatch_metric_alarm.dead_letters_expiring.arn
      oldest_message_age    = aws_cloudwatch_metric_alarm.oldest_message_age.arn
    },
    var.enable_service ? { no_running_task = aws_cloudwatch_metric_alarm.no_running_task[0].arn } : {},
    var.enable_ingress && var.enable_service ? {
      ingress_no_healthy_task = aws_cloudwatch_metric_alarm.ingress_no_healthy_task[0].arn
      ingress_errors          = aws_cloudwatch_metric_alarm.ingress_errors[0].arn
    } : {},
  )
}

output "visibility_timeout_seconds" {
  description = "The queue's visibility timeout, derived from processing_budget_seconds (the worker uses the same)."
  value       = local.visibility_timeout_seconds
}

# --- the webhook ingress (enable_ingress) -------------------------------------------------------------------------

output "ingress_global_export_url" {
  description = "Give this to Kordiam's support as the Global Export webhook base URL (Kordiam calls {url}/element...). Null without the ingress or the receiver."
  value       = var.enable_ingress ? try("https://${local.ingress_host}${local.ingress_receiver_paths["global_export"]}", null) : null
}

output "ingress_platform_url" {
  description = "Give this to Kordiam's support as the Platform integration base URL (Kordiam calls {url}/oauth2/token, {url}/publication...). Null without the ingress or the receiver."
  value       = var.enable_ingress ? try("https://${local.ingress_host}${local.ingress_receiver_paths["platform"]}", null) : null
}

output "ingress_alb_dns_name" {
  description = "DNS name of the ingress load balancer: point ingress_domain_name at it (CNAME, or a Route 53 alias with ingress_alb_zone_id)."
  value       = try(aws_lb.ingress[0].dns_name, null)
}

output "ingress_alb_zone_id" {
  description = "Hosted zone of the ingress load balancer (for a Route 53 alias record)."
  value       = try(aws_lb.ingress[0].zone_id, null)
}

output "ingress_security_group_id" {
  description = "Security group of the ingress load balancer."
  value       = try(aws_security_group.ingress_alb[0].id, null)
}

output "ingress_task_role_arn" {
  description = "Role of the ingress tasks (sqs:SendMessage on the queue, read-only on the state table)."
  value       = try(aws_iam_role.ingress_task[0].arn, null)
}
