"""The processing pipeline: notification → element → channels → feedback."""
