"""Config loading: extends, --set overrides, and one-line errors naming file, field and value."""

from pathlib import Path

import pytest

from szdet.config import CHANNELS_19, Config
from szdet.config_load import assignment, load_config
from szdet.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_shipped_config_loads():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        assert isinstance(load_config(path), Config)


def test_modal_configs_equal_the_cloud_configs_they_extend():
    for name in ("smoke", "train"):
        modal = load_config(ROOT / f"configs/modal/{name}.yaml")
        cloud = load_config(ROOT / f"configs/cloud/{name}.yaml")
        assert modal == cloud


def test_cloud_smoke_extends_train_and_overrides(tmp_path):
    smoke = load_config(ROOT / "configs/cloud/smoke.yaml")
    train = load_config(ROOT / "configs/cloud/train.yaml")
    assert (smoke.train.epochs, smoke.train.batch_size, smoke.data.max_recordings) == (1, 32, 50)
    assert (train.train.epochs, train.train.batch_size) == (100, 64)
    assert smoke.model == train.model  # same architecture, only the schedule differs


def test_extends_chain_merges_nested_sections(tmp_path):
    write(tmp_path / "base.yaml", "train: {lr: 0.1, epochs: 7}\nmodel: {node_dim: 32}\n")
    write(tmp_path / "mid.yaml", "extends: base.yaml\ntrain: {lr: 0.2}\n")
    cfg = load_config(write(tmp_path / "top.yaml", "extends: mid.yaml\nmodel: {node_layers: 2}\n"))
    assert (cfg.train.lr, cfg.train.epochs) == (0.2, 7)
    assert (cfg.model.node_dim, cfg.model.node_layers) == (32, 2)


def test_set_overrides_win_and_parse_yaml_values(tmp_path):
    path = write(tmp_path / "c.yaml", "train: {lr: 0.1}\n")
    cfg = load_config(
        path, ["train.lr=3e-4", "evaluate.fa_targets_per_24h=[10, 1]", "preprocess.notch_hz=null"]
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.evaluate.fa_targets_per_24h == [10.0, 1.0]
    assert cfg.preprocess.notch_hz is None


def test_a_path_flags_override_keeps_the_text_as_given():
    # `--out 1e3` is `--set paths.cache_dir=...` of the text itself: not a number, a bool or null
    for text in ("1e3", "yes", "null", "it's here", "a: b", "[x]", "/abs/path"):
        cfg = load_config(None, [assignment("paths.cache_dir", text)])
        assert cfg.paths.cache_dir == Path(text)


def test_typo_names_file_field_and_allowed(tmp_path):
    path = write(tmp_path / "typo.yaml", "train:\n  epochz: 3\n")
    with pytest.raises(UserError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "train.epochz" in msg and "epochs" in msg and "\n" not in msg


def test_bad_value_names_the_file_it_came_from_in_an_extends_chain(tmp_path):
    base = write(tmp_path / "base.yaml", "train: {precision: fp8}\n")
    top = write(tmp_path / "top.yaml", "extends: base.yaml\ntrain: {lr: 0.1}\n")
    with pytest.raises(UserError) as e:
        load_config(top)
    msg = str(e.value)
    assert str(base) in msg and "train.precision" in msg and "'fp8'" in msg and "bf16" in msg


def test_bad_override_names_the_flag(tmp_path):
    with pytest.raises(
        UserError, match=r"--set train.batch_size=0: train.batch_size: .*greater than or equal to 1"
    ):
        load_config(None, ["train.batch_size=0"])


def test_cross_field_rules(tmp_path):
    # A rule across fields names the --set that broke it, not the file it was given with.
    cloud = Path(__file__).resolve().parent.parent / "configs/cloud/train.yaml"
    with pytest.raises(UserError, match=r"^--set preprocess.bandpass_high_hz=200: .*Nyquist"):
        load_config(cloud, ["preprocess.bandpass_high_hz=200"])
    with pytest.raises(UserError, match="threshold_off_ratio"):
        load_config(None, ["evaluate.threshold_off_ratio=1.2"])
    # Any on-threshold is valid, low ones included (the dev sweep goes down to ~0.0003).
    assert load_config(None, ["evaluate.threshold_on=0.01"]).evaluate.threshold_on == 0.01


def test_windows_must_fit_the_models_downsample(tmp_path):
    # 2.01 s x 256 Hz is no whole number of samples; 60 s x 256 Hz = 15,360 is no multiple of 7.
    with pytest.raises(UserError, match=r"^--set windows.length_s=2.01: .*windows.length_s"):
        load_config(None, ["windows.length_s=2.01"])
    cloud = Path(__file__).resolve().parent.parent / "configs/cloud/train.yaml"
    with pytest.raises(UserError, match=r"^--set model.downsample=7: .*model.downsample \(7\)"):
        load_config(cloud, ["model.downsample=7"])
    path = write(tmp_path / "w.yaml", "windows:\n  length_s: 61.03\n")
    with pytest.raises(UserError, match=rf"^{path}: .*preprocess.sample_rate_hz") as e:
        load_config(path)
    assert "\n" not in str(e.value)
    # 1.1 x 250 is 275.00000000000006 in floating point: a whole 275 samples, 11 steps of 25.
    fits = ["preprocess.sample_rate_hz=250", "windows.length_s=1.1", "model.downsample=25"]
    assert load_config(None, fits).model.downsample == 25


def test_a_duplicate_key_is_refused_naming_file_line_and_key(tmp_path):
    # YAML's last-one-wins would silently train with lr 0.5.
    path = write(tmp_path / "dup.yaml", "train:\n  lr: 0.001\n  epochs: 3\n  lr: 0.5\n")
    with pytest.raises(
        UserError, match=rf"^{path}: line 4: duplicate key 'lr' \(first on line 2\)$"
    ):
        load_config(path)
    sections = write(tmp_path / "sections.yaml", "train: {lr: 0.1}\nmodel: {}\ntrain: {}\n")
    with pytest.raises(UserError, match=rf"^{sections}: line 3: duplicate key 'train'"):
        load_config(sections)
    # The same key in two sections, or in a file and the one it extends, is no duplicate.
    write(tmp_path / "base.yaml", "train: {lr: 0.1}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ntrain: {lr: 0.2}\nmodel: {}\n")
    assert load_config(child).train.lr == 0.2
    merged = write(tmp_path / "merge.yaml", "x: &x {lr: 0.1}\ntrain: {<<: *x, lr: 0.3}\n")
    with pytest.raises(UserError, match=r"merge.yaml: x: unknown field"):  # the merge was allowed
        load_config(merged)


def test_early_stopping_needs_an_fa_target_to_follow():
    with pytest.raises(UserError, match=r"evaluate.fa_targets_per_24h: .*at least 1 item"):
        load_config(None, ["evaluate.fa_targets_per_24h=[]"])
    with pytest.raises(UserError, match=r"evaluate.fa_targets_per_24h.0: .*greater than 0"):
        load_config(None, ["evaluate.fa_targets_per_24h=[-1]"])


def test_missing_invalid_and_cyclic_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "train: [unclosed\n"))
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_fingerprints_track_what_they_cover():
    a, b = load_config(None), load_config(None, ["train.lr=0.5"])
    assert a.fingerprint() == b.fingerprint()  # model section unchanged
    c = load_config(None, ["model.node_dim=32"])
    assert a.fingerprint() != c.fingerprint()
    # how the same weights run (kernels, chunks, recomputation) is not the architecture
    d = load_config(None, ["model.kernels=pure", "model.recompute_pure_mamba=false"])
    assert a.fingerprint() == d.fingerprint()
    notch = load_config(None, ["preprocess.notch_hz=50"]).preprocess
    assert a.preprocess.fingerprint("referential") != notch.fingerprint("referential")


def test_channel_order_is_the_design_order():
    assert len(CHANNELS_19) == 19 and CHANNELS_19[:2] == ("FP1", "F3") and CHANNELS_19[-1] == "O2"


def test_preprocess_fingerprint_covers_the_algorithm_version(monkeypatch):
    import szdet.config

    before = load_config(None).preprocess.fingerprint("referential")
    monkeypatch.setattr(szdet.config, "PREPROCESS_ALGORITHM", szdet.config.PREPROCESS_ALGORITHM + 1)
    assert load_config(None).preprocess.fingerprint("referential") != before
