"""The CUDA path proven without a GPU: interpreter parity, launch audit, AOT compile."""
