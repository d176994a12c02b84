# Three identities, each with only what it uses:
#  - the task role: the worker's own AWS calls (SQS, DynamoDB, S3 hot folders, and KMS through them). It reads
#    no secret: ECS injects those at start with the execution role.
#  - the execution role: ECS pulling the image, writing the logs, reading the two secrets.
#  - the operator policy: redrive the dead-letter queue, replay messages, requeue parked elements; attach it to
#    your operators.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksOfThisAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    # Confused-deputy protection: only tasks of this account and region.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

# --- task role --------------------------------------------------------------------------------------------------

resource "aws_iam_role" "task" {
  name                 = "${var.name}-task"
  description          = "kordiam-bridge worker: consume the notification queue, dead-letter, keep state."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "task" {
  # bridge/queue/sqs.py: ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch, GetQueueAttributes
  # (redrive policy at start). The batch calls are authorised as DeleteMessage / ChangeMessageVisibility.
  # SendMessageBatch (authorised as SendMessage): the worker puts parked elements back on the queue once their
  # channel accepts again (bridge/pipeline/parking.py), and the reconciliation sweep enqueues missed changes.
  statement {
    sid    = "ConsumeTheQueue"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:SendMessage",
    ]
    resources = [aws_sqs_queue.main.arn]
  }

  # Poison and permanently failing messages are copied to the DLQ with their failure context (SendMessage). No
  # GetQueueUrl: the module gives the worker the DLQ's URL (BRIDGE_QUEUE__DLQ_URL).
  statement {
    sid       = "DeadLetter"
    effect    = "Allow"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.dlq.arn]
  }

  # bridge/state/dynamodb.py: DescribeTable (start-up check), conditional PutItem/UpdateItem/DeleteItem,
  # GetItem, Query. No transactions, so no ConditionCheckItem.
  statement {
    sid    = "State"
    effect = "Allow"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Query",
    ]
    resources = [aws_dynamodb_table.state.arn]
  }

  # The queues and the table are encrypted with the key: receiving decrypts, dead-lettering encrypts.
  statement {
    sid       = "KeyThroughSqsAndDynamoDb"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com", "dynamodb.${local.region}.amazonaws.com"]
    }
  }

  # newsml channels writing to S3 hot folders: put and read back items under their prefix, list the prefix.
  dynamic "statement" {
    for_each = var.channel_s3_targets
    content {
      sid       = "HotFolderObjects${statement.key}"
      effect    = "Allow"
      actions   = ["s3:PutObject", "s3:GetObject"]
      resources = ["${statement.value.bucket_arn}/${statement.value.prefix}*"]
    }
  }

  dynamic "statement" {
    for_each = var.channel_s3_targets
    content {
      sid       = "HotFolderList${statement.key}"
      effect    = "Allow"
      actions   = ["s3:ListBucket"]
      resources = [statement.value.bucket_arn]

      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${statement.value.prefix}*"]
      }
    }
  }

  dynamic "statement" {
    for_each = { for index, target in var.channel_s3_targets : index => target if target.kms_key_arn != null }
    content {
      sid       = "HotFolderKey${statement.key}"
      effect    = "Allow"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value.kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "worker"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# --- execution role ---------------------------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name                 = "${var.name}-execution"
  description          = "ECS agent for kordiam-bridge: pull the image, write logs, inject the secrets."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "WriteTheWorkerLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.worker.arn}:*"]
  }

  statement {
    sid       = "InjectTheSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.kordiam_client_secret.arn, aws_secretsmanager_secret.channels.arn]
  }

  statement {
    sid       = "DecryptTheSecrets"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []
    content {
      sid       = "PullTheImage"
      effect    = "Allow"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = var.ecr_repository_arns
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "ecs-agent"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# ecr:GetAuthorizationToken has no resource-level permissions: AWS only accepts "*" for it.
data "aws_iam_policy_document" "ecr_token" {
  count = length(var.ecr_repository_arns) > 0 ? 1 : 0

  statement {
    sid       = "EcrLogin"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "ecr_token" {
  count = length(var.ecr_repository_arns) > 0 ? 1 : 0

  name   = "ecr-login"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.ecr_token[0].json
}

# --- operators --------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "operator" {
  # Redrive: StartMessageMoveTask moves dead letters back to the queue they came from (at most one task at a
  # time per queue); the caller needs to receive and delete on the DLQ and to send to the destination.
  # bridge/queue/admin.py also peeks (receive, then release with ChangeMessageVisibility) and deletes.
  statement {
    sid    = "RedriveTheDeadLetterQueue"
    effect = "Allow"
    actions = [
      "sqs:StartMessageMoveTask",
      "sqs:ListMessageMoveTasks",
      "sqs:CancelMessageMoveTask",
      "sqs:ReceiveMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.dlq.arn]
  }

  # Redrive destination and replay (SendMessageBatch, authorised as SendMessage): send to the queue. The commands
  # are given its URL (queue.url), so no GetQueueUrl; GetQueueAttributes checks it at start and reads its depth.
  statement {
    sid       = "ReplayOntoTheQueue"
    effect    = "Allow"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.main.arn]
  }

  # `kordiam-bridge status` and `parked list`: per-channel delivery counts and parked elements from the state table.
  statement {
    sid       = "ReadStateForStatus"
    effect    = "Allow"
    actions   = ["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:GetItem", "dynamodb:Query"]
    resources = [aws_dynamodb_table.state.arn]
  }

  # `kordiam-bridge parked requeue`: once the queue holds an element's notification, it unparks the element with a
  # DeleteItem conditional on what it read (its only write to the table).
  statement {
    sid       = "UnparkForParkedRequeue"
    effect    = "Allow"
    actions   = ["dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.state.arn]
  }

  statement {
    sid       = "KeyThroughSqsAndDynamoDB"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com", "dynamodb.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "operator" {
  name        = "${var.name}-operator"
  description = "kordiam-bridge operators: redrive the dead-letter queue, replay messages, requeue parked elements."
  policy      = data.aws_iam_policy_document.operator.json
  tags        = local.tags
}
