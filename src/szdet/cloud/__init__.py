"""Cloud glue: S3 cache transfer and the launchers' preflight plan."""
