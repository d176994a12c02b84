# --- naming ---------------------------------------------------------------------------------------------------

variable "name" {
  description = "Prefix of every resource name (queue, table, secrets, roles, cluster, service, log group, alarms)."
  type        = string
  default     = "kordiam-bridge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name: 3-40 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

# --- the queue --------------------------------------------------------------------------------------------------

variable "kordiam_sender_principal_arns" {
  description = <<-EOT
    IAM principals allowed to send notifications to the queue: Kordiam's role (cross-account), or the IAM user or
    role whose credentials you configured in Kordiam's message-queue export. An account root
    (arn:aws:iam::123456789012:root) admits every identity of that account. Nobody else may send (the queue policy
    denies it), except operator_principal_arns and the bridge's own worker and ingress roles.
  EOT
  type        = list(string)

  validation {
    condition     = length(var.kordiam_sender_principal_arns) > 0
    error_message = "kordiam_sender_principal_arns: at least one principal must be allowed to send."
  }
  validation {
    condition = alltrue([
      for arn in var.kordiam_sender_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/.+|user/.+)$", arn))
    ])
    error_message = "kordiam_sender_principal_arns: each must be an IAM role, user or account-root ARN (no wildcards)."
  }
}

variable "operator_principal_arns" {
  description = <<-EOT
    IAM roles or users of the people (or automation) who run the operator commands: redrive the dead-letter queue
    (StartMessageMoveTask, ListMessageMoveTasks) and replay messages onto the queue. They are exempted from the
    queues' send denials; attach the output operator_policy_arn to them for the permissions.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for arn in var.operator_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", arn))
    ])
    error_message = "operator_principal_arns: each must be an IAM role or user ARN."
  }
}

variable "fifo_queue" {
  description = <<-EOT
    Create FIFO queues (names end in .fifo). Content-based deduplication stays off: the producer must send a
    MessageGroupId (the Kordiam element id keeps one story's updates in order) and a MessageDeduplicationId.
    The worker runs groups in parallel and one group's messages in order.
  EOT
  type        = bool
  default     = false
}

variable "fifo_high_throughput" {
  description = "FIFO only: high-throughput mode (deduplication and throughput limit per message group)."
  type        = bool
  default     = true
}

variable "max_receive_count" {
  description = <<-EOT
    Receives after which SQS moves a message to the dead-letter queue (redrive policy). The worker dead-letters a
    message itself, with the failure's reason, on its last allowed receive; the redrive is the safety net.
  EOT
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "max_receive_count: a whole number from 1 to 1000."
  }
}

variable "message_retention_seconds" {
  description = "How long an unprocessed notification stays on the queue (60 s to 14 days; default 4 days). The dead-letter queue always keeps 14 days, counted on a standard queue from when a message was first sent: keep this plus dead_letter_age_threshold_seconds under 14 days."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds: 60 to 1209600 (14 days)."
  }
}

variable "processing_budget_seconds" {
  description = <<-EOT
    The time one processing attempt of a message may take before the worker's heartbeat has to extend its
    visibility: the Kordiam fetch (with its own retries, up to 20 s), every channel's write and the feedback.
    The queue's visibility timeout and the worker's queue.visibility_timeout are both set from it (at least the
    long-poll wait + the SDK read margin, so a receive never outlives its own visibility). It is also how long a
    message stays invisible after a worker dies without releasing it.
  EOT
  type        = number
  default     = 60

  validation {
    condition     = var.processing_budget_seconds >= 30 && var.processing_budget_seconds <= 43200
    error_message = "processing_budget_seconds: 30 to 43200 (the SQS maximum visibility timeout)."
  }
}

variable "receive_wait_time_seconds" {
  description = "Long-poll wait of the worker's receives (and the queue's default), 1-20 s."
  type        = number
  default     = 20

  validation {
    condition     = var.receive_wait_time_seconds >= 1 && var.receive_wait_time_seconds <= 20
    error_message = "receive_wait_time_seconds: 1 to 20."
  }
}

# --- encryption -------------------------------------------------------------------------------------------------

variable "kms_key_arn" {
  description = <<-EOT
    Customer managed KMS key for the queues, the table, the secrets and the logs. Default (null): the module
    creates one with rotation. A key of your own must allow the senders (kms:GenerateDataKey and kms:Decrypt via
    SQS), CloudWatch Logs for the log group, and delegate to IAM; see infra/terraform/README.md.
  EOT
  type        = string
  default     = null
}

# --- the worker -------------------------------------------------------------------------------------------------

variable "image" {
  description = "The worker's container image, by digest for production (registry/kordiam-bridge@sha256:...) or by tag."
  type        = string
}

variable "ecr_repository_arns" {
  description = "ECR repositories the image is pulled from (grants the execution role pull access to these only). Empty for a public registry."
  type        = list(string)
  default     = []
}

variable "kordiam_base_url" {
  description = "Kordiam API root; the client appends /api/v2/..."
  type        = string
  default     = "https://api.kordiam.app"

  validation {
    condition     = can(regex("^https?://[^/]+", var.kordiam_base_url))
    error_message = "kordiam_base_url: an http(s) URL."
  }
}

variable "kordiam_client_id" {
  description = "Kordiam OAuth2 client id (Kordiam > API page). The client secret goes into the secret kordiam_client_secret_arn, never into Terraform."
  type        = string
}

variable "worker_concurrency" {
  description = "Messages one task processes at the same time (queue.concurrency)."
  type        = number
  default     = 32

  validation {
    condition     = var.worker_concurrency >= 1 && var.worker_concurrency <= 1000
    error_message = "worker_concurrency: 1 to 1000."
  }
}

variable "shutdown_timeout_seconds" {
  description = "The worker's drain deadline after SIGTERM (queue.shutdown_timeout): in-flight messages finish, unfinished ones are released."
  type        = number
  default     = 25

  validation {
    condition     = var.shutdown_timeout_seconds > 0 && var.shutdown_timeout_seconds <= 110
    error_message = "shutdown_timeout_seconds: more than 0, at most 110 (ECS stopTimeout is at most 120)."
  }
}

variable "stop_timeout_seconds" {
  description = <<-EOT
    ECS stopTimeout: seconds between SIGTERM and SIGKILL. At least shutdown_timeout_seconds + 5 (releasing the
    unfinished messages and flushing deletes happen after the drain deadline); at most 120 on Fargate.
  EOT
  type        = number
  default     = 40

  validation {
    condition     = var.stop_timeout_seconds >= 30 && var.stop_timeout_seconds <= 120
    error_message = "stop_timeout_seconds: 30 to 120 (the Fargate maximum)."
  }
}

variable "log_level" {
  description = "Worker log level: debug, info, warning or error."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warning", "error"], var.log_level)
    error_message = "log_level: debug, info, warning or error."
  }
}

variable "extra_environment" {
  description = <<-EOT
    More configuration for the worker as BRIDGE_<SECTION>__<KEY> variables, e.g. { BRIDGE_FEEDBACK__PUBLISH_WHEN_LIVE = "false" }.
    Never secrets: those belong in Secrets Manager. Keys the module sets itself are rejected.
  EOT
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.extra_environment) : can(regex("^BRIDGE_[A-Z0-9_]+$", key))])
    error_message = "extra_environment: keys must be BRIDGE_<SECTION>__<KEY> variables."
  }
  validation {
    condition = length(setintersection(keys(var.extra_environment), [
      "BRIDGE_QUEUE__URL", "BRIDGE_QUEUE__DLQ_URL", "BRIDGE_QUEUE__REGION", "BRIDGE_QUEUE__VISIBILITY_TIMEOUT",
      "BRIDGE_QUEUE__SHUTDOWN_TIMEOUT", "BRIDGE_STATE__URL", "BRIDGE_KORDIAM__CLIENT_SECRET", "BRIDGE_CHANNELS",
      "BRIDGE_OPS__HOST", "BRIDGE_OPS__PORT",
    ])) == 0
    error_message = "extra_environment: the queue URLs, timeouts, state URL, ops address and the secrets are set by the module."
  }
  validation {
    condition     = alltrue([for key in keys(var.extra_environment) : !can(regex("SECRET|PASSWORD|TOKEN", key))])
    error_message = "extra_environment: secrets go into Secrets Manager, not into the task definition."
  }
}

variable "channel_s3_targets" {
  description = <<-EOT
    S3 hot folders of newsml channels (their target = s3://bucket/prefix/). The task role may put and read objects
    under the prefix and list it; nothing else in the bucket. kms_key_arn: the bucket's SSE-KMS key, if it has one.
  EOT
  type = list(object({
    bucket_arn  = string
    prefix      = string
    kms_key_arn = optional(string)
  }))
  default = []

  validation {
    condition = alltrue([
      for target in var.channel_s3_targets : can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", target.bucket_arn))
    ])
    error_message = "channel_s3_targets: bucket_arn must be a bucket ARN (arn:aws:s3:::bucket), without a key."
  }
  validation {
    condition = alltrue([
      for target in var.channel_s3_targets : target.prefix == "" || (endswith(target.prefix, "/") && !startswith(target.prefix, "/") && !strcontains(target.prefix, "*"))
    ])
    error_message = "channel_s3_targets: prefix is empty or ends with \"/\" (no leading \"/\", no wildcard)."
  }
}

# --- the ECS service --------------------------------------------------------------------------------------------

variable "enable_service" {
  description = <<-EOT
    Create the ECS service and its autoscaling. Set false for the first apply, put the secret values in, then
    apply again with true (tasks cannot start before the secrets have a value).
  EOT
  type        = bool
  default     = true
}

variable "create_cluster" {
  description = "Create an ECS cluster (with Container Insights). False: run in cluster_name, which must have Container Insights enabled (the autoscaling reads RunningTaskCount from it)."
  type        = bool
  default     = true
}

variable "cluster_name" {
  description = "ECS cluster name. Default (null): var.name."
  type        = string
  default     = null
}

variable "vpc_id" {
  description = "VPC of the tasks."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the tasks: private subnets with a NAT gateway or VPC endpoints (SQS, DynamoDB, Secrets Manager, CloudWatch Logs, ECR) and a route to Kordiam and the channels."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids: at least one subnet (two or more across availability zones for production)."
  }
}

variable "assign_public_ip" {
  description = "Give tasks a public IP (only for public subnets without NAT; not recommended)."
  type        = bool
  default     = false
}

variable "egress_cidr_blocks" {
  description = "Where tasks may connect (HTTPS to Kordiam, the channels and AWS APIs)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "egress_tcp_ports" {
  description = "TCP ports tasks may connect to. Add 80 only for a channel without TLS."
  type        = list(number)
  default     = [443]
}

variable "metrics_ingress_cidr_blocks" {
  description = "Networks allowed to reach the ops port 9090 (/metrics for Prometheus). Empty: none."
  type        = list(string)
  default     = []
}

variable "task_cpu" {
  description = "Fargate task CPU units (256 = 0.25 vCPU)."
  type        = number
  default     = 512
}

variable "task_memory" {
  description = "Fargate task memory (MiB), valid for task_cpu."
  type        = number
  default     = 1024
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64 (Graviton; the image must be built for it)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture: X86_64 or ARM64."
  }
}

variable "min_capacity" {
  description = "Fewest running tasks. At least 1: the backlog-per-task metric divides by the running task count."
  type        = number
  default     = 1

  validation {
    condition     = var.min_capacity >= 1
    error_message = "min_capacity: at least 1 (a service scaled to zero has no RunningTaskCount to divide by)."
  }
}

variable "max_capacity" {
  description = "Most running tasks."
  type        = number
  default     = 10
}

variable "target_backlog_per_task" {
  description = <<-EOT
    Visible messages per running task the autoscaling aims for. Acceptable backlog = acceptable latency x
    messages one task finishes per second (about worker_concurrency / average seconds per message): with 32 in
    flight, about 1 s per message and 30 s acceptable delay that is about 960; the default scales out earlier.
  EOT
  type        = number
  default     = 300

  validation {
    condition     = var.target_backlog_per_task > 0
    error_message = "target_backlog_per_task: more than 0."
  }
}

variable "scale_out_cooldown_seconds" {
  description = "Seconds after a scale-out before the next one."
  type        = number
  default     = 60
}

variable "scale_in_cooldown_seconds" {
  description = "Seconds after a scale-in before the next one (longer: a scale-in drains a task)."
  type        = number
  default     = 300
}

# --- state ------------------------------------------------------------------------------------------------------

variable "table_deletion_protection" {
  description = "Protect the DynamoDB state table from deletion (turn off before destroying the module)."
  type        = bool
  default     = true
}

# --- secrets and logs -------------------------------------------------------------------------------------------

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can still be restored (7-30; 0 deletes at once)."
  type        = number
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days: 0, or 7 to 30."
  }
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of the worker's JSON logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 365, ... 3653)."
  }
}

# --- alarms -----------------------------------------------------------------------------------------------------

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires (an SNS topic, usually)."
  type        = list(string)
  default     = []
}

variable "ok_actions" {
  description = "ARNs notified when an alarm recovers."
  type        = list(string)
  default     = []
}

variable "dead_letter_age_threshold_seconds" {
  description = "Alarm when the oldest dead letter has been on the dead-letter queue longer than this (default 7 days). SQS deletes a dead letter 14 days after it was first sent; on a standard queue one SQS moved may have waited message_retention_seconds before, so this plus message_retention_seconds must stay under 14 days."
  type        = number
  default     = 604800

  validation {
    condition     = var.dead_letter_age_threshold_seconds >= 60
    error_message = "dead_letter_age_threshold_seconds: at least 60 (and, with message_retention_seconds on a standard queue, less than the 14-day retention)."
  }
}

variable "oldest_message_age_threshold_seconds" {
  description = "Alarm when the oldest message on the queue has waited longer than this (the bridge is stalled or too slow)."
  type        = number
  default     = 900
}

# --- the webhook ingress (optional) ------------------------------------------------------------------------------

variable "enable_ingress" {
  description = "Run `kordiam-bridge ingress` (Kordiam's webhooks onto the queue) as a second ECS service behind an HTTPS Application Load Balancer."
  type        = bool
  default     = false
}

variable "ingress_certificate_arn" {
  description = "ACM certificate of the HTTPS listener (for ingress_domain_name). Required when enable_ingress."
  type        = string
  default     = null

  validation {
    condition     = var.ingress_certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.ingress_certificate_arn))
    error_message = "ingress_certificate_arn: an ACM certificate ARN."
  }
}

variable "ingress_domain_name" {
  description = "The name Kordiam calls (covered by the certificate; point it at the output ingress_alb_dns_name). Null: the ALB's own DNS name, which the certificate does not cover."
  type        = string
  default     = null
}

variable "ingress_subnet_ids" {
  description = "Subnets of the load balancer (public subnets in two or more availability zones for an internet-facing one). Required when enable_ingress."
  type        = list(string)
  default     = []
}

variable "ingress_internal" {
  description = "An internal load balancer (Kordiam reaches it through your own proxy or VPN) instead of an internet-facing one."
  type        = bool
  default     = false
}

variable "ingress_allowed_cidr_blocks" {
  description = "Networks allowed to reach the load balancer (ports 443, and 80 for the redirect): Kordiam's egress addresses (ask Kordiam's support). Required when enable_ingress."
  type        = list(string)
  default     = []
}

variable "ingress_ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "ingress_deletion_protection" {
  description = "Deletion protection of the load balancer (turn off before destroying it)."
  type        = bool
  default     = true
}

variable "ingress_access_logs_bucket" {
  description = "S3 bucket for the load balancer's access logs (its policy must let Elastic Load Balancing write). Null: no access logs."
  type        = string
  default     = null
}

variable "ingress_web_acl_arn" {
  description = "WAFv2 web ACL (REGIONAL) to associate with the load balancer. Null: none."
  type        = string
  default     = null
}

variable "ingress_global_export_path" {
  description = "Path of the Global Export receiver (BRIDGE_INGRESS__GLOBAL_EXPORT__PATH); its auth comes from ingress_environment and ingress_secret_arns. Null: no Global Export receiver."
  type        = string
  default     = "/kordiam"
}

variable "ingress_platform_path" {
  description = "Path of the Platform integration receiver (BRIDGE_INGRESS__PLATFORM__PATH); api_user and api_secret come from ingress_environment and ingress_secret_arns. Null: no Platform receiver."
  type        = string
  default     = null
}

variable "ingress_environment" {
  description = "Non-secret ingress settings as BRIDGE_INGRESS__* variables, e.g. BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TYPE = \"bearer\", BRIDGE_INGRESS__PLATFORM__API_USER = \"kordiam\"."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.ingress_environment) : startswith(key, "BRIDGE_INGRESS__")])
    error_message = "ingress_environment: every key starts with BRIDGE_INGRESS__."
  }
}

variable "ingress_secret_arns" {
  description = "The ingress's secrets: BRIDGE_INGRESS__* variable => Secrets Manager secret ARN, e.g. BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN, BRIDGE_INGRESS__PLATFORM__API_SECRET. ECS injects them at start; the execution role may read exactly these."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.ingress_secret_arns) : startswith(key, "BRIDGE_INGRESS__")])
    error_message = "ingress_secret_arns: every key starts with BRIDGE_INGRESS__."
  }
  validation {
    condition     = alltrue([for arn in values(var.ingress_secret_arns) : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", arn))])
    error_message = "ingress_secret_arns: each value is a Secrets Manager secret ARN (no wildcards)."
  }
}

variable "ingress_secret_kms_key_arns" {
  description = "Customer managed keys of ingress_secret_arns other than the module's key (the execution role decrypts through Secrets Manager only)."
  type        = list(string)
  default     = []
}

variable "ingress_task_cpu" {
  description = "CPU units of an ingress task."
  type        = number
  default     = 256
}

variable "ingress_task_memory" {
  description = "Memory (MiB) of an ingress task."
  type        = number
  default     = 512
}

variable "ingress_min_capacity" {
  description = "Fewest ingress tasks (two keep it answering through a task replacement or an availability-zone loss)."
  type        = number
  default     = 2
}

variable "ingress_max_capacity" {
  description = "Most ingress tasks; above ingress_min_capacity the service scales on requests per task."
  type        = number
  default     = 4
}

variable "ingress_target_requests_per_task" {
  description = "Target of the ingress autoscaling: ALB requests per task per minute."
  type        = number
  default     = 3000
}
