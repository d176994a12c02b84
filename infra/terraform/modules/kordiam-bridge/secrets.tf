# The secrets the worker needs. Terraform creates the containers only: the values are put in out of band
# (aws secretsmanager put-secret-value, see infra/terraform/README.md), so they never enter the Terraform state.
# ECS reads them at task start (execution role) and hands them to the worker as environment variables.

resource "aws_secretsmanager_secret" "kordiam_client_secret" {
  #checkov:skip=CKV2_AWS_57:Kordiam issues the OAuth2 client secret; it cannot be rotated by a Lambda. Rotate it in Kordiam, put the new value, redeploy.
  name                    = "${var.name}/kordiam-client-secret"
  description             = "Kordiam API v2 OAuth2 client secret (plain string). Becomes BRIDGE_KORDIAM__CLIENT_SECRET."
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret" "channels" {
  #checkov:skip=CKV2_AWS_57:Holds the channels' CMS credentials (e.g. WordPress Application Passwords) issued by each CMS; rotated there, not by a Lambda.
  name                    = "${var.name}/channels"
  description             = "The worker's [[channels]] as a JSON array, credentials included. Becomes BRIDGE_CHANNELS."
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = local.tags
}
