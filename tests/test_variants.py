"""The speed variants (src/szdet/gpu_check/variants.py): each is a few `--set` flags away, builds
a valid config at the cloud and the smoke widths, and trains on the synthetic corpus to dev AUROC
>= 0.90 on a CPU, through `szdet train` itself.

The training runs use the smoke model on 20 s windows (a third of the smoke's compute per step):
three short epochs over 8 patients x 12 minutes take each variant to 0.94-0.97 (the reference:
0.94), so 0.90 leaves room without letting a variant that does not learn pass.
"""

from pathlib import Path

import pytest

from szdet.cli import main
from szdet.config import Config
from szdet.config_load import load_config
from szdet.data.cache import build_cache
from szdet.gpu_check.variants import VARIANTS, set_flags, variant_config, widest_head
from szdet.models import build_model
from szdet.models.summary import forward_flops
from szdet.state.run_dir import read_metrics
from szdet.synth.corpus import write_corpus

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/local/smoke.yaml"
CLOUD = ROOT / "configs/cloud/train.yaml"
SHORT_RUN = {
    "windows.length_s": 20, "windows.train_stride_s": 5, "windows.eval_stride_s": 10,
    "train.epochs": 3, "train.max_steps_per_epoch": 20, "tracking.mode": "disabled",
}  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("variants")
    write_corpus(root / "corpus", patients=8, minutes=12, seed=0)
    for split in ("train", "dev"):
        build_cache(root / "corpus", split, root / "cache", Config().preprocess, 2, None, None)
    return root / "cache"


def test_widest_head_divides_the_inner_width():
    assert widest_head(128, 32) == 32 and widest_head(32, 16) == 16  # the cloud's streams
    assert widest_head(8, 16) == 8 and widest_head(24, 16) == 12 and widest_head(7, 4) == 1


def test_each_variant_is_a_valid_config_and_a_few_set_flags():
    cloud = load_config(CLOUD)
    reference = forward_flops(cloud.model, cloud.window_samples)
    for variant in VARIANTS:
        flags = set_flags(cloud, variant)
        assert flags and all(f == "--set" for f in flags[::2])
        via_flags = load_config(CLOUD, flags[1::2])
        assert via_flags == variant_config(cloud, variant)
        build_model(via_flags.model)  # builds
    wide = load_config(CLOUD, set_flags(cloud, VARIANTS[0])[1::2]).model
    assert (wide.node_headdim, wide.edge_headdim) == (32, 16)
    multirate = variant_config(cloud, next(v for v in VARIANTS if v.name == "multirate_tcn"))
    tcn = forward_flops(multirate.model, multirate.window_samples)["tcn"]
    assert tcn < reference["tcn"] / 5  # ~6x fewer TCN MACs (model-summary prints both)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_each_variant_trains_to_dev_auroc_090(variant, cache_dir, tmp_path):
    smoke = load_config(SMOKE)
    run = {"paths.cache_dir": cache_dir, "paths.runs_dir": tmp_path, "paths.run_name": "v"}
    overrides = [f"{key}={value}" for key, value in {**SHORT_RUN, **run}.items()]
    args = ["train", "--config", str(SMOKE), "--resume", "false"]
    args += [arg for o in overrides for arg in ("--set", o)] + set_flags(smoke, variant)
    assert main(args) == 0
    trained = load_config(tmp_path / "v/config.yaml")
    for key, value in variant.overrides(smoke.model).items():
        assert getattr(trained.model, key) == value  # the run trained the variant
    aurocs = [
        r["val/auroc"] for r in read_metrics(tmp_path / "v/metrics.jsonl") if r["kind"] == "epoch"
    ]
    assert len(aurocs) == 3 and max(aurocs) >= 0.90, aurocs
