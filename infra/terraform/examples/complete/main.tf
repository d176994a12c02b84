# A complete deployment: the bridge module, an encrypted SNS topic for its alarms, and an operator role for
# dead-letter redrives and replays.

locals {
  name = "kordiam-bridge-${var.environment}"
}

# Operators: assumed by the principals you trust; gets the module's operator policy (redrive, replay).
data "aws_iam_policy_document" "operator_assume" {
  count = length(var.operator_trusted_principal_arns) > 0 ? 1 : 0

  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.operator_trusted_principal_arns
    }
  }
}

resource "aws_iam_role" "operator" {
  count = length(var.operator_trusted_principal_arns) > 0 ? 1 : 0

  name                 = "${local.name}-operator"
  description          = "Redrive kordiam-bridge dead letters and replay messages."
  assume_role_policy   = data.aws_iam_policy_document.operator_assume[0].json
  max_session_duration = 3600
}

resource "aws_iam_role_policy_attachment" "operator" {
  count = length(var.operator_trusted_principal_arns) > 0 ? 1 : 0

  role       = aws_iam_role.operator[0].name
  policy_arn = module.kordiam_bridge.operator_policy_arn
}

module "kordiam_bridge" {
  source = "../../modules/kordiam-bridge"

  name = local.name

  # Queue
  kordiam_sender_principal_arns = var.kordiam_sender_principal_arns
  operator_principal_arns       = aws_iam_role.operator[*].arn
  fifo_queue                    = var.fifo_queue
  max_receive_count             = 5
  message_retention_seconds     = 345600 # 4 days
  processing_budget_seconds     = 60

  # Worker
  image                    = var.image
  ecr_repository_arns      = var.ecr_repository_arns
  kordiam_base_url         = "https://api.kordiam.app"
  kordiam_client_id        = var.kordiam_client_id
  worker_concurrency       = 32
  shutdown_timeout_seconds = 25
  stop_timeout_seconds     = 40
  extra_environment = {
    BRIDGE_FEEDBACK__PUBLISH_WHEN_LIVE = "true"
  }

  # Service
  enable_service          = var.enable_service
  vpc_id                  = var.vpc_id
  subnet_ids              = var.private_subnet_ids
  task_cpu                = 512
  task_memory             = 1024
  min_capacity            = 1
  max_capacity            = 10
  target_backlog_per_task = 300

  # Webhook ingress (off unless enable_ingress): Kordiam's Global Export webhooks with a bearer token.
  enable_ingress              = var.enable_ingress
  ingress_certificate_arn     = var.ingress_certificate_arn
  ingress_domain_name         = var.ingress_domain_name
  ingress_subnet_ids          = var.public_subnet_ids
  ingress_allowed_cidr_blocks = var.kordiam_webhook_cidr_blocks
  ingress_global_export_path  = "/kordiam"
  ingress_environment = {
    BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TYPE = "bearer"
  }
  ingress_secret_arns = var.enable_ingress ? {
    BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN = aws_secretsmanager_secret.webhook_token[0].arn
  } : {}

  # Alarms
  alarm_actions                        = [aws_sns_topic.alarms.arn]
  ok_actions                           = [aws_sns_topic.alarms.arn]
  oldest_message_age_threshold_seconds = 900

  tags = {
    service = "kordiam-bridge"
  }
}

resource "aws_sns_topic" "alarms" {
  name              = "${local.name}-alarms"
  kms_master_key_id = module.kordiam_bridge.kms_key_arn
}

resource "aws_sns_topic_subscription" "alarms_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# The bearer token Kordiam sends with each Global Export webhook: put the value out of band, give it to Kordiam.
resource "aws_secretsmanager_secret" "webhook_token" {
  count = var.enable_ingress ? 1 : 0
  #checkov:skip=CKV2_AWS_57:The token is configured in Kordiam's webhook settings too; rotate it there and here together, not by a Lambda.

  name                    = "${local.name}/ingress-webhook-token"
  description             = "Bearer token of Kordiam's Global Export webhooks. Becomes BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN."
  kms_key_id              = module.kordiam_bridge.kms_key_arn
  recovery_window_in_days = 7
}
