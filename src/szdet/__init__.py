"""szdet: seizure detection for scalp EEG, from TUSZ EDF files to scored events.

The package reads as the pipeline: data/ -> models/ -> train/ -> evaluate/, plus cloud/ and cli.py.
"""

__version__ = "0.1.0"
