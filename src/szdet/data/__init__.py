"""Data path: TUSZ layout and annotations, EDF reading and preprocessing, cache, windows."""
