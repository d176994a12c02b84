# One customer managed key for the bridge's data at rest: both queues, the state table, the secrets and the logs.
# Created unless var.kms_key_arn brings one.

resource "aws_kms_key" "this" {
  count = var.kms_key_arn == null ? 1 : 0

  description             = "${var.name}: SQS queues, DynamoDB state, secrets and logs of kordiam-bridge"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms[0].json
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  count = var.kms_key_arn == null ? 1 : 0

  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this[0].key_id
}

# A key policy: "*" as the resource means "this key". Principals are never "*".
data "aws_iam_policy_document" "kms" {
  count = var.kms_key_arn == null ? 1 : 0

  #checkov:skip=CKV_AWS_109:Key policy: the account root delegates this key's administration to IAM (AWS default key policy); "*" is this key.
  #checkov:skip=CKV_AWS_111:Key policy: the account root delegates this key's use to IAM (AWS default key policy); "*" is this key.
  #checkov:skip=CKV_AWS_356:Key policy: in a key policy the resource "*" can only mean the key itself.

  statement {
    sid       = "DelegateToIam"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # Kordiam (or its IAM identity) encrypts the messages it sends; only through SQS.
  statement {
    sid       = "KordiamSendsThroughSqs"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = var.kordiam_sender_principal_arns
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid    = "CloudWatchLogsForTheWorkerLogGroup"
    effect = "Allow"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:DescribeKey",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}"]
    }
  }

  # CloudWatch alarms publishing to an SNS topic encrypted with this key.
  statement {
    sid       = "CloudWatchAlarmsToEncryptedSns"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}
