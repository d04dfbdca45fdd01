"""`szdet export` end to end on the hard synthetic corpus (`szdet synth --difficulty hard`): a
checkpoint trained there becomes a detector bundle whose operating points differ by budget, with
ordered intervals; `detect --fa-per-24h` runs at the documented point; `evaluate` uses the
bundle's thresholds; a bundle for other inputs is refused.

The dev split is 0.8 h, on which one false alarm is 30 FA/24h: the budgets are set to that scale
(evaluate.fa_targets_per_24h), as a user would on a short calibration split."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from szdet.cli import main
from szdet.config import Config
from szdet.data.cache import build_cache
from szdet.data.manifest import CacheSplit
from szdet.errors import UserError
from szdet.evaluate.inference import load_detector
from szdet.models.onnx_export import INPUT_NAME, OUTPUT_NAME
from szdet.state import bundle
from szdet.state.checkpoint import read_checkpoint
from szdet.state.contents import load_for_inference
from szdet.synth.corpus import write_corpus

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/local/smoke.yaml"
BUDGETS = [30, 60, 120, 240, 480]
SHORT_RUN = {
    "windows.length_s": 20, "windows.train_stride_s": 5, "windows.eval_stride_s": 10,
    "train.epochs": 2, "train.max_steps_per_epoch": 20, "tracking.mode": "disabled",
    "evaluate.fa_targets_per_24h": f"[{','.join(map(str, BUDGETS))}]",
}  # fmt: skip


def _flags(settings: dict) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    write_corpus(root / "corpus", patients=10, minutes=24, seed=1, difficulty="hard")
    for split in ("train", "dev"):
        build_cache(root / "corpus", split, root / "cache", Config().preprocess, 2, None, None)
    run = {
        "paths.cache_dir": root / "cache",
        "paths.runs_dir": root / "runs",
        "paths.run_name": "h",
    }
    args = ["train", "--config", str(SMOKE), "--resume", "false", *_flags({**SHORT_RUN, **run})]
    assert main(args) == 0
    checkpoint = root / "runs/h/checkpoints/best.pt"
    detector = root / "out/hard.detector"
    export = ["export", "--checkpoint", str(checkpoint), "--cache", str(root / "cache")]
    assert main([*export, "--out", str(detector), "--onnx"]) == 0
    return {"root": root, "checkpoint": checkpoint, "detector": detector}


@pytest.mark.slow
def test_the_bundle_holds_the_checkpoints_model_and_its_provenance(trained):
    ckpt = read_checkpoint(trained["checkpoint"])
    made = read_checkpoint(trained["detector"], formats=(bundle.FORMAT,))
    assert made.keys() >= {"config", "fingerprint", "model", "channels", "preprocess_hash"}
    assert "optimizer" not in made  # a product, not a training state
    for name, weights in ckpt["model"].items():
        assert torch.equal(made["model"][name], weights), name
    provenance = made["provenance"]
    assert provenance["step"] == ckpt["step"] and provenance["calibration_split"] == "dev"
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["checkpoint_sha256"])
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["cache_manifest_sha256"])
    assert (trained["detector"].parent / "hard.detector.png").stat().st_size > 10_000
    x = torch.randn(2, 19, 20 * 256)
    with torch.no_grad():
        from_ckpt = load_for_inference(trained["checkpoint"]).model(x)
        from_bundle = load_for_inference(trained["detector"]).model(x)
    assert torch.equal(from_ckpt, from_bundle)


@pytest.mark.slow
def test_budgets_pick_different_thresholds_with_ordered_intervals(trained):
    points = read_checkpoint(trained["detector"], formats=(bundle.FORMAT,))["operating_points"]
    assert [p["fa_per_24h_budget"] for p in points["points"]] == BUDGETS
    assert points["patients"] >= 2 and points["seizure_events"] >= 2
    thresholds = [p["threshold_on"] for p in points["points"]]
    assert None not in thresholds and len(set(thresholds)) >= 2, thresholds
    assert thresholds == sorted(thresholds, reverse=True)  # a larger budget never stricter
    sensitivity = [p["ovlp"]["sensitivity"]["value"] for p in points["points"]]
    assert sensitivity == sorted(sensitivity)
    widths = []
    for p in points["points"]:
        for method in ("ovlp", "taes", "szcore"):
            for rate in p[method].values():
                assert rate["low"] <= rate["value"] <= rate["high"]
                widths.append(rate["high"] - rate["low"])
    assert max(widths) > 0


@pytest.mark.slow
def test_detect_runs_at_the_point_of_the_budget_asked(trained, tmp_path, capsys):
    points = read_checkpoint(trained["detector"], formats=(bundle.FORMAT,))["operating_points"]
    edf = sorted((trained["root"] / "corpus/edf/dev").rglob("*.edf"))[0]
    capsys.readouterr()
    args = ["detect", str(edf), "--checkpoint", str(trained["detector"]), "--format", "szcore"]
    assert main([*args, "--out", str(tmp_path / "budget"), "--fa-per-24h", "100"]) == 0
    said = capsys.readouterr().err
    at_60 = points["points"][1]  # 100 lies between 60 and 120: the point of 60, never looser
    assert (
        f"operating point for 60 FA/24h, calibrated on dev: threshold {at_60['threshold_on']:.4f}"
        in said
    )
    by_hand = ["--out", str(tmp_path / "hand"), "--threshold", repr(at_60["threshold_on"])]
    assert main([*args, *by_hand]) == 0
    [tsv] = (tmp_path / "budget").iterdir()
    assert tsv.read_text() == (tmp_path / "hand" / tsv.name).read_text()

    assert main([*args, "--out", str(tmp_path / "no"), "--fa-per-24h", "1"]) == 1
    assert (
        "no operating point for 1 FA/24h: this detector was calibrated on dev for 30, 60, 120, 240, 480"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "no").exists()
    checkpoint = ["--checkpoint", str(trained["checkpoint"]), "--out", str(tmp_path / "ck")]
    assert main(["detect", str(edf), *checkpoint, "--fa-per-24h", "60"]) == 1
    assert "a training checkpoint has no calibrated operating points" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_applies_the_bundles_thresholds_and_shows_what_dev_promised(
    trained, tmp_path, capsys
):
    cache = str(trained["root"] / "cache")
    args = ["evaluate", "--checkpoint", str(trained["detector"]), "--cache", cache]
    assert main([*args, "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    points = load_detector(trained["detector"]).operating_points
    for p in points["points"]:
        at = metrics["sens_at_fa"][f"{p['fa_per_24h_budget']:g}"]
        assert at["threshold"] == p["threshold_on"]
        assert at["calibrated_ovlp"] == p["ovlp"]
        # on dev itself, what dev promised is what is measured
        assert at["sensitivity"] == p["ovlp"]["sensitivity"]["value"]
    assert "calibrated on dev: sensitivity" in capsys.readouterr().out


@pytest.mark.slow
def test_a_bundle_for_other_inputs_is_refused_in_one_line(trained, tmp_path):
    made = read_checkpoint(trained["detector"], formats=(bundle.FORMAT,))
    for key, value, said in (
        ("channels", ["FP1", "FP2"], "reads channels ['FP1', 'FP2'], this szdet's referential"),
        ("preprocess_hash", "0" * 16, f"with preprocessing {'0' * 16}, this szdet computes"),
    ):
        doctored = tmp_path / f"{key}.detector"
        torch.save({**made, key: value}, doctored)
        with pytest.raises(UserError, match=re.escape(said)) as refused:
            load_for_inference(doctored)
        assert "\n" not in str(refused.value) and "export it again" in str(refused.value)


@pytest.mark.slow
def test_the_onnx_network_detects_as_the_torch_one_does(trained, tmp_path, capsys):
    network = trained["detector"].with_name("hard.detector.onnx")
    assert network.stat().st_size > 100_000
    split = CacheSplit.open(trained["root"] / "cache", "dev", max_recordings=4)
    by_torch = load_detector(trained["detector"]).predict(split)
    by_onnx = load_detector(trained["detector"], engine="onnx").predict(split)
    # Within 1e-4 but where a node's top-k edges tie to ~1e-5 and float32 rounding flips one
    # (PyTorch does the same between batch sizes): then ~1e-3 on that step (tests/test_onnx.py).
    gap = np.concatenate([np.abs(a - b) for a, b in zip(by_torch, by_onnx, strict=True)])
    assert np.mean(gap > 1e-4) <= 0.01 and gap.max() <= 1e-2
    # Every dev recording at the loosest budget, so that events are found and their channels
    # (from each node's evidence, an output of the network) are compared, not a lone bckg row.
    edfs = [str(e) for e in sorted((trained["root"] / "corpus/edf/dev").rglob("*.edf"))]
    args = ["detect", *edfs, "--checkpoint", str(trained["detector"]), "--format", "szcore"]
    args += ["--fa-per-24h", str(BUDGETS[-1])]
    for engine in ("torch", "onnx"):
        assert main([*args, "--engine", engine, "--out", str(tmp_path / engine)]) == 0
    channels = []
    for tsv in sorted((tmp_path / "torch").iterdir()):
        assert tsv.read_text() == (tmp_path / "onnx" / tsv.name).read_text(), tsv.name
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
        channels += [row[4] for row in rows if row[2].startswith("sz")]
    assert channels and "n/a" not in channels, channels
    capsys.readouterr()
    edf = edfs[0]
    checkpoint = ["--checkpoint", str(trained["checkpoint"]), "--out", str(tmp_path / "ck")]
    assert main(["detect", str(edf), *checkpoint, "--engine", "onnx"]) == 1
    assert "--engine onnx runs a detector made by `szdet export --onnx`" in capsys.readouterr().err


@pytest.mark.slow
def test_a_network_without_evidence_is_refused_in_one_line(trained, tmp_path):
    """An earlier szdet exported the logits alone: `detect` could not fill the channels."""
    old = tmp_path / "old.detector"
    old.write_bytes(trained["detector"].read_bytes())
    shape = [None, 19, 20 * 256]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])],
        "logits-only",
        [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, shape)],
    )
    onnx.save(onnx.helper.make_model(graph), tmp_path / "old.detector.onnx")
    with pytest.raises(UserError, match="network gives no per-node evidence") as refused:
        load_detector(old, engine="onnx")
    assert str(refused.value).startswith(f"{tmp_path / 'old.detector.onnx'}: ")
    assert "\n" not in str(refused.value) and "export it again" in str(refused.value)
