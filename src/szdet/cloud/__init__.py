"""Cloud glue: S3 cache transfer and experiment tracking."""
