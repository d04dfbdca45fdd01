"""Data path: TUSZ layout and annotations, EDF reading and preprocessing, synthetic corpus, cache, windows."""
