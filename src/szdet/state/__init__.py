"""A run's state, below both training and evaluation: checkpoint files (checkpoint.py), what they
hold (contents.py), the rules for continuing a run (resume.py) and the run directory (run_dir.py)."""
