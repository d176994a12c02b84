# The queue Kordiam sends change notifications to, and its dead-letter queue.

resource "aws_sqs_queue" "dlq" {
  name = local.dlq_name

  fifo_queue                  = var.fifo_queue
  content_based_deduplication = var.fifo_queue ? false : null
  deduplication_scope         = var.fifo_queue ? (var.fifo_high_throughput ? "messageGroup" : "queue") : null
  fifo_throughput_limit       = var.fifo_queue ? (var.fifo_high_throughput ? "perMessageGroupId" : "perQueue") : null

  # Dead letters wait 14 days (the maximum) for an operator to look at them and redrive them.
  message_retention_seconds  = local.dlq_retention_seconds
  visibility_timeout_seconds = local.visibility_timeout_seconds

  kms_master_key_id                 = local.kms_key_arn
  kms_data_key_reuse_period_seconds = 300

  tags = local.tags
}

resource "aws_sqs_queue" "main" {
  name = local.queue_name

  fifo_queue = var.fifo_queue
  # Off: the producer sets MessageGroupId (the element id) and MessageDeduplicationId. Identical bodies are
  # legitimate repeats (the same element updated twice), so the body must not deduplicate.
  content_based_deduplication = var.fifo_queue ? false : null
  deduplication_scope         = var.fifo_queue ? (var.fifo_high_throughput ? "messageGroup" : "queue") : null
  fifo_throughput_limit       = var.fifo_queue ? (var.fifo_high_throughput ? "perMessageGroupId" : "perQueue") : null

  message_retention_seconds  = var.message_retention_seconds
  visibility_timeout_seconds = local.visibility_timeout_seconds
  receive_wait_time_seconds  = var.receive_wait_time_seconds

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  kms_master_key_id                 = local.kms_key_arn
  kms_data_key_reuse_period_seconds = 300

  tags = local.tags
}

# Only the bridge's queue may dead-letter into the DLQ; a redrive (StartMessageMoveTask) goes back to it.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main.arn]
  })
}

# Kordiam may send; nobody else may (an explicit deny beats any identity policy in the account), except the worker
# (it requeues parked elements and, with [reconcile], missed changes), the operators who replay messages and the
# webhook ingress's task role (enable_ingress); their own policies allow the send, same account. TLS only.
resource "aws_sqs_queue_policy" "main" {
  queue_url = aws_sqs_queue.main.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "KordiamSends"
        Effect    = "Allow"
        Principal = { AWS = var.kordiam_sender_principal_arns }
        Action    = "sqs:SendMessage"
        Resource  = aws_sqs_queue.main.arn
      },
      {
        Sid       = "NobodyElseSends"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "sqs:SendMessage"
        Resource  = aws_sqs_queue.main.arn
        Condition = {
          ArnNotLike = { "aws:PrincipalArn" = concat(local.kordiam_sender_patterns, [aws_iam_role.task.arn], var.operator_principal_arns, aws_iam_role.ingress_task[*].arn) }
        }
      },
      {
        Sid       = "TlsOnly"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "sqs:*"
        Resource  = aws_sqs_queue.main.arn
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
}

# Only the worker (dead-lettering with the failure's reason) and the operators send to the DLQ. TLS only.
resource "aws_sqs_queue_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "OnlyTheWorkerDeadLetters"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "sqs:SendMessage"
        Resource  = aws_sqs_queue.dlq.arn
        Condition = {
          ArnNotLike = { "aws:PrincipalArn" = concat([aws_iam_role.task.arn], var.operator_principal_arns) }
        }
      },
      {
        Sid       = "TlsOnly"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "sqs:*"
        Resource  = aws_sqs_queue.dlq.arn
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
}
