"""The launcher environment has no szdet installed, as on a user's machine: the standard-library
modules the launchers share with it (szdet/cloud/restart.py) come from the checkout, as
modal/app.py takes them."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "src"))
