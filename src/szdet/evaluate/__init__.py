"""Evaluation: stitch window outputs per recording, post-process to events, score, report."""
