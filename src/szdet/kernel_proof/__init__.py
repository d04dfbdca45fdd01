"""`szdet check-kernels`: the Mamba-2 paths compared on this machine (check.py), and the CUDA path
proven without a GPU: interpreter parity (parity.py), launch audit (audit.py), AOT compile (aot.py).
"""
