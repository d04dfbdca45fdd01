"""An exported network (models/onnx_export.py) run by onnxruntime on the CPU, as a torch module.

``OnnxNetwork(path)`` behaves as the network it was exported from does in inference: forward
takes the (B, C, L) float windows and returns (B, L) logits as a torch tensor, and ``localised``
the logits and the (B, C, L) per-node evidence, so ``stitch.predict_into`` (model.eval(),
model(x) or model.localised(x), torch.sigmoid of the logits) runs it unchanged. onnxruntime is the
optional extra szdet[onnx], imported when a network is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from szdet.errors import UserError
from szdet.models.onnx_export import EVIDENCE_NAME, INPUT_NAME, OUTPUT_NAME, import_extra


class OnnxNetwork(nn.Module):
    """An onnxruntime session (CPUExecutionProvider) over ``path``; ``threads`` for its
    operators (default: torch's, so both engines get the same share of the machine)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        ort = import_extra("onnxruntime")
        if not Path(path).is_file():
            raise UserError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's own exception types: a file it cannot load
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path}: not a network onnxruntime can load ({first_line})") from None
        # (batch, channels, samples): the batch is symbolic, the rest fixed at export.
        _, self.channels, self.window_samples = self.session.get_inputs()[0].shape
        # An earlier szdet exported the logits alone.
        self.localises = EVIDENCE_NAME in {o.name for o in self.session.get_outputs()}

    def forward(self, x: Tensor) -> Tensor:
        (logits,) = self._run(x, OUTPUT_NAME)
        return logits

    def localised(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The logits (B, L) and each node's evidence (B, C, L), as the network's own."""
        logits, evidence = self._run(x, OUTPUT_NAME, EVIDENCE_NAME)
        return logits, evidence

    def _run(self, x: Tensor, *outputs: str) -> list[Tensor]:
        if tuple(x.shape[1:]) != (self.channels, self.window_samples):
            raise ValueError(
                f"input {tuple(x.shape)}: this network was exported for (B, {self.channels}, "
                f"{self.window_samples})"
            )
        eeg = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return [torch.from_numpy(a) for a in self.session.run(list(outputs), {INPUT_NAME: eeg})]
