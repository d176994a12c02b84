"""SQS transport and the consumer loop."""
