"""Training: loop, losses, schedule, checkpoints, distributed setup."""
