"""`data.montage: bipolar` end to end: a cache built from CHB-MIT-labelled EDFs, a bipolar model
(18 graph nodes) trained and run by `szdet detect` on bipolar and referential files; montages
never mixed; the config refuses a model whose inputs do not fit its montage."""

import json
from pathlib import Path

import numpy as np
import pytest

from edf_factory import write_recording
from montage_support import write_bipolar_recording, write_chb_mit_edf, write_referential_edf
from szdet.cli import main
from szdet.config import Config, PreprocessConfig
from szdet.config_load import load_config
from szdet.data.cache import build_cache
from szdet.data.edf import EdfSignal, load_edf
from szdet.data.manifest import CacheSplit
from szdet.data.montage import DOUBLE_BANANA
from szdet.data.tusz import find_recordings, read_annotation
from szdet.errors import UserError
from szdet.evaluate.inference import load_detector
from train_support import train, write_config

PRE = PreprocessConfig()


def _bipolar_corpus(root: Path) -> Path:
    corpus = root / "corpus"
    for k, (split, patient) in enumerate(
        [("train", "chb00001"), ("train", "chb00002"), ("dev", "chb00003"), ("dev", "chb00004")]
    ):
        write_bipolar_recording(corpus, split, patient, 60.0, ((20.0, 35.0),), seed=k)
    return corpus


@pytest.fixture(scope="module")
def bipolar_cache(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bipolar")
    corpus = _bipolar_corpus(root)
    for split in ("train", "dev"):
        build_cache(corpus, split, root / "cache", PRE, 1, None, None, montage="bipolar")
    return {"root": root, "corpus": corpus, "cache": root / "cache"}


def test_a_bipolar_cache_holds_the_double_banana_and_notes_the_repeated_label(bipolar_cache):
    manifest = json.loads((bipolar_cache["cache"] / "train/manifest.json").read_text())
    assert manifest["montage"] == "bipolar" and manifest["channels"] == list(DOUBLE_BANANA)
    assert manifest["preprocess_hash"] == PRE.fingerprint("bipolar") and not manifest["skipped"]
    record = manifest["recordings"][0]
    assert "channel T4-T6 appears 2 times (T8-P8, T8-P8): the first is used" in record["notes"]
    split = CacheSplit.open(bipolar_cache["cache"], "train", preprocess=PRE, montage="bipolar")
    edf = find_recordings(bipolar_cache["corpus"], "train")[0].edf
    expected = load_edf(edf, PRE, "bipolar").signal.astype(np.float16)
    np.testing.assert_array_equal(split.signal(0), expected)
    assert split.signal(0).shape == (18, 60 * 256)


def test_montages_are_never_mixed(bipolar_cache, tmp_path):
    built_for = r"cache built for data\.montage bipolar, this config's is referential; "
    with pytest.raises(UserError, match=rf"preprocess\.json: {built_for}use another --out"):
        build_cache(bipolar_cache["corpus"], "train", bipolar_cache["cache"], PRE, 1, None, None)
    with pytest.raises(UserError, match=rf"manifest\.json: {built_for}build a cache with"):
        CacheSplit.open(bipolar_cache["cache"], "train", preprocess=PRE, montage="referential")
    # a referential cache of bipolar files: each skipped, with the reason
    report = build_cache(bipolar_cache["corpus"], "train", tmp_path, PRE, 1, None, None)
    assert len(report.skipped) == 2
    assert all(s["reason"].startswith("bipolar recording (FP1-F7") for s in report.skipped)


def test_a_tusz_corpus_feeds_the_bipolar_and_average_montages(tmp_path):
    corpus = tmp_path / "corpus"
    le = write_recording(corpus, "train", "aaaaaaaa", seconds=30, setup="02_tcp_le")
    write_recording(corpus, "train", "aaaaaaab", seconds=30, drop=("FZ", "PZ"))
    for montage in ("bipolar", "average"):
        build_cache(corpus, "train", tmp_path / montage, PRE, 1, None, None, montage=montage)
        split = CacheSplit.open(tmp_path / montage, "train", preprocess=PRE, montage=montage)
        assert [r.interpolated for r in split.recordings] == [[], ["FZ", "PZ"]]
        assert split.signal(0).shape[0] == (18 if montage == "bipolar" else 19)
        np.testing.assert_array_equal(
            split.signal(0), load_edf(le, PRE, montage).signal.astype(np.float16)
        )


def test_the_model_reads_its_montages_channels_and_a_misfit_written_out_is_refused():
    # the channel count follows the montage: switching it is one setting, not two
    assert load_config(None, ["data.montage=bipolar"]).model.in_channels == 18
    assert load_config(None, ["data.montage=average"]).model.in_channels == 19
    assert Config.model_validate({"data": {"montage": "bipolar"}}).model.in_channels == 18
    with pytest.raises(UserError) as e:
        load_config(None, ["data.montage=bipolar", "model.in_channels=19"])
    assert str(e.value) == (
        "--set data.montage=bipolar, --set model.in_channels=19: model.in_channels (19) must "
        "equal the 18 channels of data.montage bipolar"
    )
    with pytest.raises(UserError, match=r"in_channels \(18\) must equal the 19 channels"):
        load_config(None, ["model.in_channels=18"])
    bipolar = load_config(None, ["data.montage=bipolar", "model.in_channels=18"])
    assert bipolar.data.montage == "bipolar"


@pytest.mark.slow
def test_a_bipolar_model_trains_and_detects_on_bipolar_and_referential_files(
    bipolar_cache, tmp_path, capsys
):
    config = write_config(
        tmp_path, bipolar_cache["cache"], data={"montage": "bipolar"}, model={"in_channels": 18}
    )
    proc = train(config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = load_config(config).run_dir / "checkpoints" / "best.pt"
    detector = load_detector(best)
    assert detector.cfg.data.montage == "bipolar" and detector.cfg.model.in_channels == 18

    chb = write_chb_mit_edf(tmp_path / "in/chb.edf", 30.0, seed=7)
    siena = write_referential_edf(tmp_path / "in/siena.edf", 30.0, 512.0, "EEG {}", modern=True)
    out = tmp_path / "events"
    code = main(["detect", str(chb), str(siena), "--checkpoint", str(best), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for edf in (chb, siena):
        written = read_annotation(out / f"{edf.stem}.csv_bi")
        assert written.duration_s == pytest.approx(30.0, abs=0.01)
    # the referential file is converted to the checkpoint's montage, exactly as load_edf does
    track, _ = detector.predict_edf(EdfSignal(siena, detector.cfg.preprocess, "bipolar"))
    assert track.shape == (round(30.0 * detector.cfg.evaluate.frame_hz),)
    assert np.isfinite(track).all() and track.min() >= 0 and track.max() <= 1
