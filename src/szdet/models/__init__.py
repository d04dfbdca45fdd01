"""The V3 dual-stream detector: TCN encoder, Mamba-2 node and edge streams, dynamic graph."""
