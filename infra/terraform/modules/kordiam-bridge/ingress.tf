# The optional webhook ingress (enable_ingress): `kordiam-bridge ingress` from the worker's image as a second ECS
# Fargate service behind an internet-facing (or internal) Application Load Balancer. TLS ends at the load balancer
# (ACM certificate); plain HTTP only redirects. Only the receivers' paths are forwarded: /healthz, /readyz and
# /metrics stay inside the VPC. The tasks send to the worker's queue (sqs:SendMessage, nothing else on it) and
# read the state table to map the ids Kordiam sends back.

locals {
  ingress_count     = var.enable_ingress ? 1 : 0
  ingress_port      = 8780
  ingress_container = "ingress"
  ingress_host      = coalesce(var.ingress_domain_name, try(aws_lb.ingress[0].dns_name, "ingress.invalid"))

  # Index name => its hash key's type; each index is keyed on the attribute of its name (bridge/state/dynamodb.py).
  ingress_indexes    = var.enable_ingress ? { external_id = "S", publication_id = "N" } : {}
  ingress_index_arns = [for name in keys(local.ingress_indexes) : "${aws_dynamodb_table.state.arn}/index/${name}"]

  ingress_receiver_paths = {
    for name, path in { global_export = var.ingress_global_export_path, platform = var.ingress_platform_path } :
    name => trimsuffix(path, "/") if path != null
  }

  ingress_module_environment = merge(
    {
      # The load balancer's nodes take addresses in its subnets: their X-Forwarded-For names Kordiam's address, so
      # the rate limit and the logs see each caller rather than the balancer.
      BRIDGE_INGRESS__TRUSTED_PROXIES = jsonencode(sort([for subnet in data.aws_subnet.ingress : subnet.cidr_block]))
      BRIDGE_QUEUE__URL               = aws_sqs_queue.main.url
      BRIDGE_QUEUE__REGION            = local.region
      BRIDGE_STATE__URL               = "dynamodb://${aws_dynamodb_table.state.name}"
      BRIDGE_STATE__REGION            = local.region
      BRIDGE_INGRESS__HOST            = "0.0.0.0"
      BRIDGE_INGRESS__PORT            = tostring(local.ingress_port)
      BRIDGE_INGRESS__LOG_LEVEL       = var.log_level
      BRIDGE_HEALTHCHECK_URL          = "http://127.0.0.1:${local.ingress_port}/healthz"
      BRIDGE_HEALTHCHECK_TIMEOUT      = "4"
    },
    { for name, path in local.ingress_receiver_paths : "BRIDGE_INGRESS__${upper(name)}__PATH" => path },
  )
  ingress_environment = merge(var.ingress_environment, local.ingress_module_environment)

  # The channel table (the main channel's ids are what Kordiam sends back) plus the receivers' own secrets.
  ingress_secrets = merge(var.ingress_secret_arns, { BRIDGE_CHANNELS = aws_secretsmanager_secret.channels.arn })

  ingress_container_definition = {
    name      = local.ingress_container
    image     = var.image
    essential = true
    command   = ["ingress"]
    user      = "10001:10001"

    environment = [for key in sort(keys(local.ingress_environment)) : { name = key, value = local.ingress_environment[key] }]
    secrets     = [for key in sort(keys(local.ingress_secrets)) : { name = key, valueFrom = local.ingress_secrets[key] }]

    portMappings = [{ name = "webhooks", containerPort = local.ingress_port, protocol = "tcp" }]

    healthCheck = {
      command     = ["CMD", "kordiam-bridge-healthcheck"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 20
    }

    # The server closes its listener and lets answers in flight finish (10 s) on SIGTERM.
    stopTimeout = 20

    readonlyRootFilesystem = true
    privileged             = false

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = local.region
        awslogs-stream-prefix = local.ingress_container
        mode                  = "non-blocking"
        max-buffer-size       = "4m"
      }
    }
  }
}

data "aws_subnet" "ingress" {
  for_each = var.enable_ingress ? toset(var.ingress_subnet_ids) : toset([])

  id = each.value
}

# --- network -----------------------------------------------------------------------------------------------------

resource "aws_security_group" "ingress_alb" {
  count = local.ingress_count

  name_prefix = "${var.name}-ingress-alb-"
  description = "kordiam-bridge ingress load balancer: HTTPS (and the HTTP redirect) from ingress_allowed_cidr_blocks; to the ingress tasks only."
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-ingress-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "ingress_alb" {
  for_each = var.enable_ingress ? {
    for pair in setproduct(var.ingress_allowed_cidr_blocks, [443, 80]) : "${pair[0]}:${pair[1]}" => pair
  } : {}

  security_group_id = aws_security_group.ingress_alb[0].id
  description       = each.value[1] == 443 ? "Kordiam's webhooks (HTTPS)" : "HTTP, answered with a redirect to HTTPS"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "ingress_alb_to_tasks" {
  count = local.ingress_count

  security_group_id            = aws_security_group.ingress_alb[0].id
  description                  = "Forward to the ingress tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.ingress_port
  to_port                      = local.ingress_port
  referenced_security_group_id = aws_security_group.ingress_tasks[0].id
  tags                         = local.tags
}

resource "aws_security_group" "ingress_tasks" {
  count = local.ingress_count

  name_prefix = "${var.name}-ingress-"
  description = "kordiam-bridge ingress tasks: the webhook port from the load balancer only; outbound HTTPS to AWS APIs."
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-ingress" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "ingress_tasks_from_alb" {
  count = local.ingress_count

  security_group_id            = aws_security_group.ingress_tasks[0].id
  description                  = "Webhooks and health checks from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.ingress_port
  to_port                      = local.ingress_port
  referenced_security_group_id = aws_security_group.ingress_alb[0].id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "ingress_tasks" {
  for_each = var.enable_ingress ? toset(var.egress_cidr_blocks) : toset([])

  security_group_id = aws_security_group.ingress_tasks[0].id
  description       = "SQS, DynamoDB, Secrets Manager, CloudWatch Logs, ECR (tcp 443)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
  tags              = local.tags
}

# --- load balancer -----------------------------------------------------------------------------------------------

resource "aws_lb" "ingress" {
  count = local.ingress_count
  #checkov:skip=CKV2_AWS_76:No web ACL is created here, so none to give the Log4j managed rule group; the operator's own ACL (ingress_web_acl_arn) carries its rules. The image runs no Java.

  name                       = trimsuffix(substr("${var.name}-ingress", 0, 32), "-")
  load_balancer_type         = "application"
  internal                   = var.ingress_internal
  subnets                    = var.ingress_subnet_ids
  security_groups            = [aws_security_group.ingress_alb[0].id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.ingress_deletion_protection
  desync_mitigation_mode     = "strictest"
  idle_timeout               = 60

  dynamic "access_logs" {
    for_each = var.ingress_access_logs_bucket == null ? [] : [var.ingress_access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = "${var.name}-ingress"
      enabled = true
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.ingress_certificate_arn != null
      error_message = "ingress_certificate_arn: the HTTPS listener needs an ACM certificate when enable_ingress is true."
    }
    precondition {
      condition     = length(var.ingress_subnet_ids) >= 2
      error_message = "ingress_subnet_ids: an Application Load Balancer needs subnets in at least two availability zones."
    }
    precondition {
      condition     = length(var.ingress_allowed_cidr_blocks) > 0
      error_message = "ingress_allowed_cidr_blocks: name the networks Kordiam calls from (none would admit nobody)."
    }
    precondition {
      condition     = length(local.ingress_receiver_paths) > 0
      error_message = "ingress_global_export_path, ingress_platform_path: configure at least one receiver."
    }
  }
}

resource "aws_wafv2_web_acl_association" "ingress" {
  count = var.enable_ingress && var.ingress_web_acl_arn != null ? 1 : 0

  resource_arn = aws_lb.ingress[0].arn
  web_acl_arn  = var.ingress_web_acl_arn
}

resource "aws_lb_target_group" "ingress" {
  count = local.ingress_count
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the hop to the tasks stays inside the VPC, admitted by security group from the load balancer only.

  name                 = trimsuffix(substr("${var.name}-ingress", 0, 32), "-")
  target_type          = "ip"
  protocol             = "HTTP"
  port                 = local.ingress_port
  vpc_id               = var.vpc_id
  deregistration_delay = 15

  health_check {
    path                = "/healthz"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "ingress_https" {
  count = local.ingress_count

  load_balancer_arn = aws_lb.ingress[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ingress_ssl_policy
  certificate_arn   = var.ingress_certificate_arn

  # Anything but a receiver's path (the ops routes included) ends here.
  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      message_body = "{\"error\": \"not found\"}"
      status_code  = "404"
    }
  }

  tags = local.tags
}

resource "aws_lb_listener_rule" "ingress_receivers" {
  for_each = var.enable_ingress ? local.ingress_receiver_paths : {}

  listener_arn = aws_lb_listener.ingress_https[0].arn
  priority     = each.key == "global_export" ? 10 : 20

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ingress[0].arn
  }

  condition {
    path_pattern {
      values = [each.value, "${each.value}/*"]
    }
  }

  tags = local.tags
}

resource "aws_lb_listener" "ingress_http_redirect" {
  count = local.ingress_count

  load_balancer_arn = aws_lb.ingress[0].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }

  tags = local.tags
}

# --- the service ---------------------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "ingress" {
  count = local.ingress_count

  family                   = "${var.name}-ingress"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.ingress_task_cpu)
  memory                   = tostring(var.ingress_task_memory)
  execution_role_arn       = aws_iam_role.ingress_execution[0].arn
  task_role_arn            = aws_iam_role.ingress_task[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([local.ingress_container_definition])

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.ingress_max_capacity >= var.ingress_min_capacity
      error_message = "ingress_max_capacity must be at least ingress_min_capacity."
    }
  }
}

resource "aws_ecs_service" "ingress" {
  count = var.enable_ingress && var.enable_service ? 1 : 0

  name             = "${var.name}-ingress"
  cluster          = local.cluster_arn
  task_definition  = aws_ecs_task_definition.ingress[0].arn
  desired_count    = var.ingress_min_capacity
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.ingress_tasks[0].id]
    assign_public_ip = var.assign_public_ip
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.ingress[0].arn
    container_name   = local.ingress_container
    container_port   = local.ingress_port
  }

  health_check_grace_period_seconds  = 30
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  enable_execute_command  = false

  tags = local.tags

  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_iam_role_policy.ingress_task, aws_iam_role_policy.ingress_execution, aws_lb_listener.ingress_https]
}

resource "aws_appautoscaling_target" "ingress" {
  count = var.enable_ingress && var.enable_service ? 1 : 0

  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${local.cluster_name}/${aws_ecs_service.ingress[0].name}"
  min_capacity       = var.ingress_min_capacity
  max_capacity       = var.ingress_max_capacity
  tags               = local.tags
}

resource "aws_appautoscaling_policy" "ingress_requests" {
  count = var.enable_ingress && var.enable_service ? 1 : 0

  name               = "${var.name}-ingress-requests-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.ingress[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.ingress[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.ingress[0].resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.ingress_target_requests_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.ingress[0].arn_suffix}/${aws_lb_target_group.ingress[0].arn_suffix}"
    }
  }
}

# --- identities ----------------------------------------------------------------------------------------------------

resource "aws_iam_role" "ingress_task" {
  count = local.ingress_count

  name                 = "${var.name}-ingress-task"
  description          = "kordiam-bridge ingress: send webhooks to the notification queue, read the state table."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "ingress_task" {
  count = local.ingress_count

  # bridge/ingress: SendMessageBatch (bridge/queue/send_batcher.py), authorised as SendMessage; GetQueueAttributes
  # for the queue's MaximumMessageSize, read by the first send of a body over 1 KiB (bridge/queue/sqs.py): without
  # it every such webhook would be answered 503. Nothing else: /readyz makes no SQS call.
  statement {
    sid       = "SendToTheQueue"
    effect    = "Allow"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.main.arn]
  }

  # bridge/ingress/lookup.py through bridge/state/dynamodb.py: DescribeTable (start-up check of the indexes),
  # Query on the table (an element's deliveries) and on the two indexes (a CMS id or a publication id back to its
  # element). It writes nothing.
  statement {
    sid       = "ReadState"
    effect    = "Allow"
    actions   = ["dynamodb:DescribeTable", "dynamodb:Query"]
    resources = [aws_dynamodb_table.state.arn]
  }

  statement {
    sid       = "LookUpIds"
    effect    = "Allow"
    actions   = ["dynamodb:Query"]
    resources = local.ingress_index_arns
  }

  # Sending to the encrypted queue needs a data key; reading the encrypted table decrypts.
  statement {
    sid       = "KeyThroughSqsAndDynamoDb"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com", "dynamodb.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "ingress_task" {
  count = local.ingress_count

  name   = "ingress"
  role   = aws_iam_role.ingress_task[0].id
  policy = data.aws_iam_policy_document.ingress_task[0].json
}

resource "aws_iam_role" "ingress_execution" {
  count = local.ingress_count

  name                 = "${var.name}-ingress-execution"
  description          = "ECS agent for the kordiam-bridge ingress: pull the image, write logs, inject its secrets."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "ingress_execution" {
  count = local.ingress_count

  statement {
    sid       = "WriteTheLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.worker.arn}:*"]
  }

  statement {
    sid       = "InjectTheSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = sort(distinct(values(local.ingress_secrets)))
  }

  statement {
    sid       = "DecryptTheSecrets"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = concat([local.kms_key_arn], var.ingress_secret_kms_key_arns)

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

resource "aws_iam_role_policy" "ingress_execution" {
  count = local.ingress_count

  name   = "ecs-agent"
  role   = aws_iam_role.ingress_execution[0].id
  policy = data.aws_iam_policy_document.ingress_execution[0].json
}

resource "aws_iam_role_policy" "ingress_ecr_token" {
  count = var.enable_ingress && length(var.ecr_repository_arns) > 0 ? 1 : 0

  name   = "ecr-login"
  role   = aws_iam_role.ingress_execution[0].id
  policy = data.aws_iam_policy_document.ecr_token[0].json
}
