output "queue_url" {
  description = "Give Kordiam this queue URL (and the region) for its message-queue export."
  value       = module.kordiam_bridge.queue_url
}

output "queue_arn" {
  description = "For the sender's IAM policy (sqs:SendMessage)."
  value       = module.kordiam_bridge.queue_arn
}

output "kms_key_arn" {
  description = "For the sender's IAM policy (kms:GenerateDataKey, kms:Decrypt)."
  value       = module.kordiam_bridge.kms_key_arn
}

output "dlq_arn" {
  description = "Source of a dead-letter redrive."
  value       = module.kordiam_bridge.dlq_arn
}

output "kordiam_client_secret_arn" {
  description = "aws secretsmanager put-secret-value --secret-id <this> --secret-string <client secret>"
  value       = module.kordiam_bridge.kordiam_client_secret_arn
}

output "channels_secret_arn" {
  description = "aws secretsmanager put-secret-value --secret-id <this> --secret-string file://channels.json"
  value       = module.kordiam_bridge.channels_secret_arn
}

output "cluster_name" {
  description = "ECS cluster."
  value       = module.kordiam_bridge.cluster_name
}

output "service_name" {
  description = "ECS service."
  value       = module.kordiam_bridge.service_name
}

output "log_group_name" {
  description = "aws logs tail <this> --follow"
  value       = module.kordiam_bridge.log_group_name
}

output "operator_role_arn" {
  description = "Assume it to redrive or replay."
  value       = one(aws_iam_role.operator[*].arn)
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = aws_sns_topic.alarms.arn
}

output "ingress_global_export_url" {
  description = "Give Kordiam's support this Global Export webhook URL (with the token from webhook_token_secret_arn)."
  value       = module.kordiam_bridge.ingress_global_export_url
}

output "ingress_alb_dns_name" {
  description = "Point ingress_domain_name at this name."
  value       = module.kordiam_bridge.ingress_alb_dns_name
}

output "webhook_token_secret_arn" {
  description = "aws secretsmanager put-secret-value --secret-id <this> --secret-string <token Kordiam sends>"
  value       = try(aws_secretsmanager_secret.webhook_token[0].arn, null)
}
