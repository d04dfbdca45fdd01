"""The synthetic corpus generator: TUSZ-shaped EDFs and annotations for smoke runs and tests."""
