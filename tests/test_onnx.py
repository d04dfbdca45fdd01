"""The network exported to ONNX (models/onnx_export.py) and run by onnxruntime
(evaluate/onnx_engine.py): the probabilities of the PyTorch network it came from (eigh PE and
pure Mamba-2, the CPU defaults) within 1e-4, on random windows and stitched over a real cache;
the reference TCN and the multi-rate variant; refusals in one line."""

import sys

import numpy as np
import onnx
import pytest
import torch

from szdet.config import Config
from szdet.data.manifest import CacheSplit
from szdet.data.windows import WindowIndex
from szdet.errors import UserError
from szdet.evaluate.onnx_engine import OnnxNetwork
from szdet.evaluate.stitch import predict_tracks
from szdet.gpu_check.variants import VARIANTS, variant_config
from szdet.models import build_model
from szdet.models.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from train_support import TINY

CFG = Config.model_validate({"windows": TINY["windows"], "model": TINY["model"]})
MULTIRATE = next(v for v in VARIANTS if v.name == "multirate_tcn")
CONFIGS = {"reference": CFG, "multirate_tcn": variant_config(CFG, MULTIRATE)}
TOLERANCE = 1e-4  # on probabilities


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    """(the PyTorch network, its export run by onnxruntime, the .onnx file), per variant."""
    cfg = CONFIGS[request.param]
    torch.manual_seed(0)
    network = build_model(cfg.model).eval()  # model.eigensolver: eigh, as trained
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    export_onnx(cfg.model, network.state_dict(), cfg.window_samples, path)
    return network, OnnxNetwork(path), path


@pytest.mark.parametrize("batch", [1, 5])
def test_probabilities_match_pytorch(exported, batch):
    network, engine, _ = exported
    torch.manual_seed(batch)
    x = torch.randn(batch, CFG.model.in_channels, CFG.window_samples) * 2
    x[0, 3, 100:110] = torch.nan  # the network's one sanitising step is exported too
    with torch.no_grad():
        want = torch.sigmoid(network(x))
    got = torch.sigmoid(engine(x))
    assert got.shape == want.shape == (batch, CFG.window_samples)
    assert (got - want).abs().max().item() <= TOLERANCE


def test_stitched_tracks_of_real_windows_match_pytorch(exported, cache_dir):
    network, engine, _ = exported
    split = CacheSplit.open(cache_dir, "dev")
    index = WindowIndex.build(split, CFG.windows.length_s, CFG.windows.eval_stride_s)
    assert len(index) % 4  # a last, shorter batch: the batch axis is dynamic
    runs = [
        predict_tracks(model, split, index, batch_size=4, device="cpu", show_progress=False)
        for model in (network, engine)
    ]
    for want, got in zip(*runs, strict=True):
        assert np.abs(got - want).max() <= TOLERANCE


def test_file_passes_the_checker_with_a_dynamic_batch(exported):
    _, engine, path = exported
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == [OUTPUT_NAME]
    batch, channels, samples = graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and (channels.dim_value, samples.dim_value) == (19, CFG.window_samples)
    with pytest.raises(ValueError, match="exported for"):
        engine(torch.zeros(1, 19, CFG.window_samples // 2))


def test_a_fused_tcn_is_refused_in_one_line(tmp_path):
    fused = CFG.model.model_copy(update={"tcn_fused": True})
    path = tmp_path / "fused.onnx"
    with pytest.raises(UserError, match=r"^model\.tcn_fused=true cannot be exported") as e:
        export_onnx(fused, build_model(fused).state_dict(), CFG.window_samples, path)
    assert "\n" not in str(e.value) and not path.exists()


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(UserError, match=r"pip install 'szdet\[onnx\]'"):
        OnnxNetwork(tmp_path / "network.onnx")


def test_a_file_that_is_not_a_network_is_named(tmp_path):
    path = tmp_path / "network.onnx"
    path.write_text("not protobuf")
    with pytest.raises(UserError, match=f"^{path}: not a network onnxruntime can load"):
        OnnxNetwork(path)
