variable "region" {
  description = "AWS region of the deployment."
  type        = string
  default     = "eu-central-1"
}

variable "environment" {
  description = "Environment name, part of every resource name (kordiam-bridge-<environment>)."
  type        = string
  default     = "production"
}

variable "image" {
  description = "Worker image, by digest (e.g. 123456789012.dkr.ecr.eu-central-1.amazonaws.com/kordiam-bridge@sha256:...)."
  type        = string
}

variable "ecr_repository_arns" {
  description = "ECR repositories of the image (empty for a public registry)."
  type        = list(string)
  default     = []
}

variable "kordiam_client_id" {
  description = "Kordiam OAuth2 client id."
  type        = string
}

variable "kordiam_sender_principal_arns" {
  description = "IAM principals Kordiam sends with (its role, or the IAM user whose keys are configured in Kordiam)."
  type        = list(string)
}

variable "vpc_id" {
  description = "VPC for the worker tasks."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (with NAT or VPC endpoints) in at least two availability zones."
  type        = list(string)
}

variable "fifo_queue" {
  description = "FIFO queues (the producer must set MessageGroupId = element id)."
  type        = bool
  default     = false
}

variable "enable_service" {
  description = "false for the first apply (secrets still empty), then true."
  type        = bool
  default     = true
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarms topic (confirm the subscription mail). Null: no subscription."
  type        = string
  default     = null
}

variable "operator_trusted_principal_arns" {
  description = "Who may assume the operator role (e.g. your SSO admin role). Empty: no operator role."
  type        = list(string)
  default     = []
}

variable "enable_ingress" {
  description = "Run the webhook ingress (for accounts Kordiam connects through webhooks) behind an HTTPS load balancer."
  type        = bool
  default     = false
}

variable "ingress_certificate_arn" {
  description = "ACM certificate for ingress_domain_name (required with enable_ingress)."
  type        = string
  default     = null
}

variable "ingress_domain_name" {
  description = "The host name Kordiam calls, e.g. kordiam-webhooks.example.com (a DNS record to the output ingress_alb_dns_name)."
  type        = string
  default     = null
}

variable "public_subnet_ids" {
  description = "Public subnets (two or more availability zones) of the ingress load balancer."
  type        = list(string)
  default     = []
}

variable "kordiam_webhook_cidr_blocks" {
  description = "Kordiam's egress addresses (ask Kordiam's support): the only networks that reach the ingress."
  type        = list(string)
  default     = []
}
