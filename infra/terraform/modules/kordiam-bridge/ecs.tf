# The worker as an ECS Fargate service.

resource "aws_cloudwatch_log_group" "worker" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags
}

resource "aws_ecs_cluster" "this" {
  count = var.create_cluster ? 1 : 0

  name = local.cluster_name

  # Needed: the autoscaling divides the backlog by ECS/ContainerInsights RunningTaskCount.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_security_group" "worker" {
  name_prefix = "${var.name}-worker-"
  description = "kordiam-bridge worker tasks: outbound HTTPS only; ops port only from metrics_ingress_cidr_blocks."
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-worker" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "worker" {
  for_each = {
    for pair in setproduct(var.egress_cidr_blocks, var.egress_tcp_ports) : "${pair[0]}:${pair[1]}" => pair
  }

  security_group_id = aws_security_group.worker.id
  description       = "Kordiam API, channels, AWS APIs (tcp ${each.value[1]})"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each = toset(var.metrics_ingress_cidr_blocks)

  security_group_id = aws_security_group.worker.id
  description       = "Prometheus scrape of /metrics on the ops port"
  ip_protocol       = "tcp"
  from_port         = local.ops_port
  to_port           = local.ops_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

locals {
  # The whole configuration comes from the environment (BRIDGE_<SECTION>__<KEY>); no config file in the image.
  module_environment = {
    BRIDGE_QUEUE__URL                = aws_sqs_queue.main.url
    BRIDGE_QUEUE__DLQ_URL            = aws_sqs_queue.dlq.url
    BRIDGE_QUEUE__REGION             = local.region
    BRIDGE_QUEUE__CONCURRENCY        = tostring(var.worker_concurrency)
    BRIDGE_QUEUE__WAIT_TIME_SECONDS  = tostring(var.receive_wait_time_seconds)
    BRIDGE_QUEUE__VISIBILITY_TIMEOUT = tostring(local.visibility_timeout_seconds)
    BRIDGE_QUEUE__SHUTDOWN_TIMEOUT   = tostring(var.shutdown_timeout_seconds)
    BRIDGE_KORDIAM__BASE_URL         = var.kordiam_base_url
    BRIDGE_KORDIAM__CLIENT_ID        = var.kordiam_client_id
    BRIDGE_STATE__URL                = "dynamodb://${aws_dynamodb_table.state.name}"
    BRIDGE_STATE__REGION             = local.region
    BRIDGE_OPS__HOST                 = "0.0.0.0"
    BRIDGE_OPS__PORT                 = tostring(local.ops_port)
    BRIDGE_OPS__LOG_LEVEL            = var.log_level
  }
  environment = merge(var.extra_environment, local.module_environment)

  # Resolved by ECS at task start with the execution role, handed to the worker as environment variables.
  secrets = {
    BRIDGE_KORDIAM__CLIENT_SECRET = aws_secretsmanager_secret.kordiam_client_secret.arn
    BRIDGE_CHANNELS               = aws_secretsmanager_secret.channels.arn
  }

  container_definition = {
    name      = local.container_name
    image     = var.image
    essential = true
    command   = ["run"]
    user      = "10001:10001"

    environment = [for key in sort(keys(local.environment)) : { name = key, value = local.environment[key] }]
    secrets     = [for key in sort(keys(local.secrets)) : { name = key, valueFrom = local.secrets[key] }]

    portMappings = [{ name = "ops", containerPort = local.ops_port, protocol = "tcp" }]

    # The image's health check, in ECS terms (ECS ignores the image's HEALTHCHECK).
    healthCheck = {
      command     = ["CMD", "kordiam-bridge-healthcheck"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }

    # SIGTERM, then SIGKILL after stopTimeout: longer than the worker's drain deadline.
    stopTimeout = var.stop_timeout_seconds

    readonlyRootFilesystem = true
    privileged             = false

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = local.region
        awslogs-stream-prefix = local.container_name
        mode                  = "non-blocking"
        max-buffer-size       = "4m"
      }
    }
  }
}

resource "aws_ecs_task_definition" "worker" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.task_cpu)
  memory                   = tostring(var.task_memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([local.container_definition])

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.stop_timeout_seconds >= var.shutdown_timeout_seconds + 5
      error_message = "stop_timeout_seconds must be at least shutdown_timeout_seconds + 5: the worker releases unfinished messages and flushes deletes after its drain deadline."
    }
    precondition {
      condition     = var.max_capacity >= var.min_capacity
      error_message = "max_capacity must be at least min_capacity."
    }
  }
}

resource "aws_ecs_service" "worker" {
  count = var.enable_service ? 1 : 0

  name             = var.name
  cluster          = local.cluster_arn
  task_definition  = aws_ecs_task_definition.worker.arn
  desired_count    = var.min_capacity
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = var.assign_public_ip
  }

  # A worker has no load balancer: a rolling deployment starts new tasks before it stops old ones, and a
  # deployment whose tasks never become healthy is rolled back.
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
    # The autoscaling owns the task count after the first apply.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_iam_role_policy.task, aws_iam_role_policy.execution]
}
