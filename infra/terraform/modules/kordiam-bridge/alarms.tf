# Dead letters need a person, before SQS deletes them at 14 days; an old message means the bridge is stalled or too
# slow; no running task means nothing consumes at all.

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name        = "${var.name}-dead-letters"
  alarm_description = "Messages on ${aws_sqs_queue.dlq.name}: each carries failure.stage and failure.reason attributes. Fix the cause, then kordiam-bridge dlq redrive (or StartMessageMoveTask with the queue as DestinationArn), or drop them."

  namespace   = "AWS/SQS"
  metric_name = "ApproximateNumberOfMessagesVisible"
  dimensions = {
    QueueName = aws_sqs_queue.dlq.name
  }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"

  actions_enabled = true
  alarm_actions   = var.alarm_actions
  ok_actions      = var.ok_actions
  tags            = local.tags
}

# The dead-letters alarm notifies once, when the DLQ stops being empty; later dead letters change nothing it says, and
# SQS deletes each one 14 days after it was sent. This one warns while there is still time to redrive it. Its age is
# the time on the DLQ; a standard queue's dead letter that SQS moved was sent up to message_retention_seconds earlier.
resource "aws_cloudwatch_metric_alarm" "dead_letters_expiring" {
  alarm_name        = "${var.name}-dead-letters-expiring"
  alarm_description = "A message has been on ${aws_sqs_queue.dlq.name} for more than ${var.dead_letter_age_threshold_seconds} s; SQS deletes it 14 days (1209600 s) after it was first sent, no sooner than ${local.dlq_retention_seconds - var.dead_letter_age_threshold_seconds - local.time_on_the_queue_before_dead_letter_seconds} s from now. Redrive it (kordiam-bridge dlq redrive) or drop it now."

  namespace   = "AWS/SQS"
  metric_name = "ApproximateAgeOfOldestMessage"
  dimensions = {
    QueueName = aws_sqs_queue.dlq.name
  }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.dead_letter_age_threshold_seconds
  treat_missing_data  = "notBreaching"

  actions_enabled = true
  alarm_actions   = var.alarm_actions
  ok_actions      = var.ok_actions
  tags            = local.tags

  lifecycle {
    precondition {
      condition     = var.dead_letter_age_threshold_seconds + local.time_on_the_queue_before_dead_letter_seconds < local.dlq_retention_seconds
      error_message = "dead_letter_age_threshold_seconds (plus message_retention_seconds on a standard queue) must be less than the dead-letter queue's retention (1209600 s): SQS deletes a dead letter 14 days after it was first sent, and a standard queue's dead letter may have waited message_retention_seconds on the queue before SQS moved it."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  alarm_name        = "${var.name}-oldest-message-age"
  alarm_description = "The oldest notification on ${aws_sqs_queue.main.name} has waited more than ${var.oldest_message_age_threshold_seconds} s: workers down, stalled or too few."

  namespace   = "AWS/SQS"
  metric_name = "ApproximateAgeOfOldestMessage"
  dimensions = {
    QueueName = aws_sqs_queue.main.name
  }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.oldest_message_age_threshold_seconds
  treat_missing_data  = "notBreaching"

  actions_enabled = true
  alarm_actions   = var.alarm_actions
  ok_actions      = var.ok_actions
  tags            = local.tags
}

resource "aws_cloudwatch_metric_alarm" "no_running_task" {
  count = var.enable_service ? 1 : 0

  alarm_name        = "${var.name}-no-running-task"
  alarm_description = "The ${var.name} ECS service has no running task: tasks fail to start (secrets, image, network) or crash."

  namespace   = "ECS/ContainerInsights"
  metric_name = "RunningTaskCount"
  dimensions = {
    ClusterName = local.cluster_name
    ServiceName = aws_ecs_service.worker[0].name
  }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"

  actions_enabled = true
  alarm_actions   = var.alarm_actions
  ok_actions      = var.ok_actions
  tags            = local.tags
}

# --- the webhook ingress (enable_ingress) ---------------------------------------------------------------------------
# Kordiam retries a webhook the ingress does not take, then drops it; nothing on the queue shows that it was never
# sent. So: an alarm when no ingress task is healthy behind the load balancer, and one on 5xx answers to Kordiam.

resource "aws_cloudwatch_metric_alarm" "ingress_no_healthy_task" {
  count = var.enable_ingress && var.enable_service ? 1 : 0

  alarm_name        = "${var.name}-ingress-no-healthy-task"
  alarm_description = "No healthy ${var.name} ingress task behind the load balancer: Kordiam's webhooks are refused and, after Kordiam's retries, dropped."

  namespace   = "AWS/ApplicationELB"
  metric_name = "HealthyHostCount"
  dimensions = {
    LoadBalancer = aws_lb.ingress[0].arn_suffix
    TargetGroup  = aws_lb_target_group.ingress[0].arn_suffix
  }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"

  actions_enabled = true
  alarm_actions   = var.alarm_actions
  ok_actions      = var.ok_actions
  tags            = local.tags
}

resource "aws_cloudwatch_metric_alarm" "ingress_errors" {
  count = var.enable_ingress && var.enable_service ? 1 : 0

  alarm_name        = "${var.name}-ingress-errors"
  alarm_description = "The ${var.name} ingress answered Kordiam with 5xx (the queue or the state store unavailable, or no task): Kordiam retries, then drops the webhook. See the ingress logs (enqueue_failed, state_lookup_failed)."

  metric_query {
    id          = "errors"
    label       = "5xx answers to Kordiam"
    expression  = "FILL(balancer, 0) + FILL(tasks, 0)"
    return_data = true
  }

  metric_query {
    id = "balancer"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      period      = 60
      stat        = "Sum"
      dimensions = {
        LoadBalancer = aws_lb.ingress[0].arn_suffix
      }
    }
  }

  metric_query {
    id = "tasks"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      period      = 60
      stat        = "Sum"
      dimensions = {
        LoadBalancer = aws_lb.ingress[0].arn_suffix
        TargetGroup  = aws_lb_target_group.ingress[0].arn_suffix
      }
    }
  }

  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"

  actions_enabled = true
  alarm_actions   = var.alarm_actions
  ok_actions      = var.ok_actions
  tags            = local.tags
}
