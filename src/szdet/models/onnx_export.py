"""The trained V3 network as one ONNX file, for onnxruntime on any CPU (evaluate/onnx_engine.py).

The file holds the whole network: (batch, in_channels, window_samples) float32 EEG named "eeg" ->
what ``model.localised`` returns: (batch, window_samples) per-sample seizure logits named "logits"
(probabilities are their sigmoid, as in PyTorch) and (batch, in_channels, window_samples) per-node
evidence named "evidence" (where the seizure is, evaluate/localise.py). The batch is dynamic, the
window length fixed.

The network is built with two execution settings that change how, not what, it computes
(config.py: EXECUTION), so a checkpoint trained with any of them loads strictly:

- ``kernels: pure``: the Mamba-2 layers as the pure-PyTorch chunked scan (mamba_ssm's kernels are
  CUDA code, outside ONNX's operator set);
- ``eigensolver: jacobi``: the Laplacian PE's eigenvectors by batched Jacobi in plain tensor ops
  (ONNX has no eigh); under export its rounds become one ONNX Scan (models/eigen.py).

``tcn_fused`` (channels-last blocks around a compiled kernel) is refused: set it to false, the
weights are the same. The graph is captured by ``torch.export`` and translated by torch's dynamo
ONNX exporter (onnxscript): the TorchScript exporter fails on the adjacency's boolean scatter.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from szdet.config import ModelConfig
from szdet.errors import UserError
from szdet.fileio import atomic_path
from szdet.models.detector import V3Detector

INPUT_NAME = "eeg"
OUTPUT_NAME = "logits"
EVIDENCE_NAME = "evidence"
# torch.export specialises a dimension of size 1 to the constant 1: tracing at batch 2 keeps the
# batch symbolic (any batch >= 1 runs).
TRACE_BATCH = 2


class _Exported(nn.Module):
    """The network's ``localised`` (logits and evidence), one module down. torch.export names
    lifted parameters by their path, and at the top level V3Detector's submodule ``graph``
    collides with the exported module's fx ``graph``."""

    def __init__(self, network: V3Detector) -> None:
        super().__init__()
        self.network = network

    def forward(self, eeg: Tensor) -> tuple[Tensor, Tensor]:
        logits, evidence = self.network.localised(eeg)
        return logits, evidence


def import_extra(name: str) -> ModuleType:
    """``import name``, a package of the optional extra szdet[onnx], or a one-line UserError."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"{name} is not installed: pip install 'szdet[onnx]'") from None


def exportable_config(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the execution settings that export (module docstring); a one-line UserError
    for a config that cannot."""
    if cfg.tcn_fused:
        raise UserError(
            "model.tcn_fused=true cannot be exported to ONNX (its TCN blocks are a compiled "
            "kernel); export with model.tcn_fused=false: the weights are the same"
        )
    return cfg.model_copy(update={"kernels": "pure", "eigensolver": "jacobi"})


def export_onnx(
    model_cfg: ModelConfig, state_dict: Mapping[str, Tensor], window_samples: int, path: Path
) -> None:
    """Write the network of ``model_cfg`` with the weights ``state_dict`` (a checkpoint's
    "model") to ``path`` as ONNX, for windows of ``window_samples`` samples; atomic, and checked
    by ``onnx.checker``."""
    cfg = exportable_config(model_cfg)
    onnx = import_extra("onnx")
    import_extra("onnxscript")  # what torch's exporter translates with
    network = V3Detector(cfg)  # on the CPU
    network.load_state_dict(state_dict, strict=True)
    example = torch.zeros(TRACE_BATCH, cfg.in_channels, window_samples)
    with torch.no_grad():
        # The module itself, not a torch.export program made beforehand: the capture must run
        # inside the ONNX export, where models/eigen.py writes the Jacobi rounds as one scan.
        onnx_program = torch.onnx.export(
            _Exported(network).eval(),
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, EVIDENCE_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            dynamo=True,
            verbose=False,
        )
    assert onnx_program is not None  # the dynamo exporter always returns its program
    # The exporter tags every node with its provenance (fx node, module path, a stack trace
    # through this machine's source files): ~70% of the tiny network's file, no use to a runtime.
    for node in onnx_program.model.graph.all_nodes():
        node.metadata_props.clear()
    with atomic_path(path) as tmp:
        # One self-contained file (the cloud network's weights are far below protobuf's 2 GB).
        onnx_program.save(tmp, external_data=False)
    onnx.checker.check_model(path, full_check=True)
