# The bridge's state: what it delivered where, per element (pk) and item (sk), and the elements each channel has
# parked (pk parked#<channel>, no index needed); leases expire through TTL, parked elements never.

resource "aws_dynamodb_table" "state" {
  name         = local.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  # The ingress maps the ids in Kordiam's DELETEs back to deliveries through two indexes (bridge/state/dynamodb.py
  # INDEXES; the ingress refuses to start without them). Only with the ingress: every delivery written costs an
  # index write per index. Added to an existing table, DynamoDB fills them from the deliveries already there.
  dynamic "attribute" {
    for_each = local.ingress_indexes
    content {
      name = attribute.key
      type = attribute.value
    }
  }

  dynamic "global_secondary_index" {
    for_each = local.ingress_indexes
    content {
      name            = global_secondary_index.key
      hash_key        = global_secondary_index.key
      projection_type = "ALL"
    }
  }

  # Expired leases (epoch seconds) are removed by DynamoDB; the worker never relies on the deletion's timing.
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = local.kms_key_arn
  }

  deletion_protection_enabled = var.table_deletion_protection

  tags = local.tags
}
