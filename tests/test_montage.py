"""Channels resolved by name and the three montages (szdet/data/montage.py): the name table,
bipolar recognition, repeated labels, the exactness of every conversion, and the skip reasons;
then the same on real EDF files read by load_edf."""

from fractions import Fraction

import numpy as np
import pytest
from epilepsy2bids.eeg import Eeg

from edf_factory import scalp_field, write_edf
from montage_support import (
    CHB_MIT_LABELS,
    bipolar_signals,
    write_chb_mit_edf,
    write_labelled_edf,
    write_referential_edf,
)
from szdet.config import CHANNELS_19, PREPROCESS_ALGORITHM, PreprocessConfig, config_hash
from szdet.data.edf import EdfError, load_edf
from szdet.data.montage import (
    DOUBLE_BANANA,
    MontageError,
    Resolved,
    plan_montage,
    resolve_label,
    take_inventory,
)

PRE = PreprocessConfig()
INTERPOLABLE = PRE.interpolate_channels
TUSZ_LABELS = [f"EEG {c}-REF" for c in CHANNELS_19]


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "kind", "name"),
    [
        ("EEG FP1-REF", "electrode", "FP1"),  # TUSZ 01_tcp_ar
        ("EEG FP1-LE", "electrode", "FP1"),  # TUSZ 02_tcp_le
        ("EEG Fp1-AR", "electrode", "FP1"),
        ("Fp1-Avg", "electrode", "FP1"),  # SzCORE's BIDS releases
        ("FP1-AVG", "electrode", "FP1"),
        ("EEG Fp1", "electrode", "FP1"),  # Siena
        ("Fp1", "electrode", "FP1"),  # SeizeIT
        ("eeg fp1-ref", "electrode", "FP1"),
        ("  EEG Cz-REF ", "electrode", "CZ"),
        ("EEG T7-LE", "electrode", "T3"),
        ("T8", "electrode", "T4"),
        ("P7-Avg", "electrode", "T5"),
        ("EEG P8-REF", "electrode", "T6"),
        ("EEG A1-REF", "electrode", "A1"),  # an electrode, not one of the model's 19
        ("FP1-F7", "derivation", "FP1-F7"),  # CHB-MIT
        ("EEG FP1-F7", "derivation", "FP1-F7"),
        ("T7-P7", "derivation", "T3-T5"),
        ("P8-O2", "derivation", "T6-O2"),
        ("T7-FT9", "derivation", "T3-FT9"),
        ("EKG1", "other", "EKG1"),
        ("PHOTIC-REF", "other", "PHOTIC-REF"),
        ("LOC-ROC", "other", "LOC-ROC"),  # EOG: its ends are not electrodes
        ("--0", "other", "--0"),
        ("-", "other", "-"),
        ("EEG FP1-FP1", "other", "FP1-FP1"),
    ],
)
def test_resolve_label(label, kind, name):
    assert resolve_label(label) == Resolved(kind, name)


def test_the_vocabulary_matches_epilepsy2bids():
    """The tooling that writes SzCORE's BIDS releases: the same 19 electrodes and the same double
    banana, in its order."""
    assert sorted(resolve_label(e).name for e in Eeg.ELECTRODES_10_20) == sorted(CHANNELS_19)
    assert tuple(resolve_label(d).name for d in Eeg.BIPOLAR_DBANANA) == DOUBLE_BANANA
    assert all(set(d.split("-")) <= set(CHANNELS_19) for d in DOUBLE_BANANA)


def test_inventory_of_a_chb_mit_file_keeps_the_first_of_a_repeated_label():
    found = take_inventory(["ECG", *CHB_MIT_LABELS, "VNS"])
    assert found.electrodes == {}
    assert found.derivations["T4-T6"] == 15  # the first T8-P8 (after ECG)
    assert found.repeats == {"T4-T6": [15, 23]}
    assert found.derivations["T5-T3"] == 19  # P7-T7: reversed, a derivation of its own
    assert set(DOUBLE_BANANA) <= set(found.derivations)


def test_first_of_two_labels_for_one_electrode_is_used_and_noted():
    labels = [*TUSZ_LABELS, "EEG FP1-LE", "EEG T7-REF"]
    plan = plan_montage(labels, "referential", INTERPOLABLE)
    assert plan.read["FP1"] == 0 and plan.read["T3"] == CHANNELS_19.index("T3")
    assert any("FP1 appears 2 times (EEG FP1-REF, EEG FP1-LE)" in n for n in plan.notes)
    assert any("T3 appears 2 times" in n for n in plan.notes)


# --- plans and their matrices -----------------------------------------------------------------


def _rows(n_rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 50, (n_rows, 1000)).astype(np.float32)


def test_referential_reads_the_electrodes_untouched():
    plan = plan_montage(TUSZ_LABELS, "referential", INTERPOLABLE)
    assert plan.rows == CHANNELS_19 and plan.channels == CHANNELS_19 and plan.matrix is None
    x = _rows(19)
    assert plan.convert(x) is x


def test_average_subtracts_the_common_average_exactly():
    plan = plan_montage(TUSZ_LABELS, "average", INTERPOLABLE)
    x = _rows(19)
    out = plan.convert(x)
    np.testing.assert_allclose(out, x - x.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(plan.convert(out), out, atol=1e-4)  # an average stays one
    # any common reference drops out: -REF and -LE recordings of one head agree
    np.testing.assert_allclose(plan.convert(x - x[3]), out, atol=1e-3)


def test_bipolar_from_electrodes_is_the_double_banana_of_differences():
    plan = plan_montage(TUSZ_LABELS, "bipolar", INTERPOLABLE)
    assert plan.channels == DOUBLE_BANANA and plan.rows == CHANNELS_19
    x = _rows(19)
    expected = [x[CHANNELS_19.index(a)] - x[CHANNELS_19.index(b)] for a, b in _pairs()]
    np.testing.assert_array_equal(plan.convert(x), np.array(expected))


def _pairs() -> list[tuple[str, str]]:
    return [tuple(d.split("-")) for d in DOUBLE_BANANA]


def test_bipolar_from_chb_mit_reads_each_derivation_once_as_recorded():
    plan = plan_montage(list(CHB_MIT_LABELS), "bipolar", INTERPOLABLE)
    assert set(plan.rows) == set(DOUBLE_BANANA) and len(plan.rows) == 18
    assert plan.read["T4-T6"] == 14  # the first T8-P8
    assert plan.notes == ("channel T4-T6 appears 2 times (T8-P8, T8-P8): the first is used",)
    x = _rows(18)
    np.testing.assert_array_equal(plan.convert(x), x[[plan.rows.index(d) for d in DOUBLE_BANANA]])


def test_bipolar_from_reversed_and_chained_derivations_is_exact():
    """F7-FP1 is -(FP1-F7); CZ-PZ = (CZ-FZ) + (FZ-PZ) when only those are recorded."""
    field = {e: _rows(1, i)[0] for i, e in enumerate(CHANNELS_19)}
    recorded = [d for d in DOUBLE_BANANA if d not in ("FP1-F7", "CZ-PZ")]
    recorded += ["F7-FP1", "FZ-PZ"]
    plan = plan_montage(recorded, "bipolar", INTERPOLABLE)
    x = np.array([field[a] - field[b] for a, b in (r.split("-") for r in plan.rows)])
    out = plan.convert(x)
    for i, (a, b) in enumerate(_pairs()):
        np.testing.assert_allclose(out[i], field[a] - field[b], atol=1e-3)
    assert plan.matrix[DOUBLE_BANANA.index("FP1-F7"), plan.rows.index("F7-FP1")] == -1
    cz_pz = plan.matrix[DOUBLE_BANANA.index("CZ-PZ")]
    assert sorted(cz_pz[cz_pz != 0]) == [-1, 1] and np.count_nonzero(cz_pz) == 2


def test_a_bipolar_recording_cannot_feed_the_referential_or_average_montage():
    for montage in ("referential", "average"):
        with pytest.raises(MontageError) as e:
            plan_montage(list(CHB_MIT_LABELS), montage, INTERPOLABLE)
        message = str(e.value)
        assert message.startswith("bipolar recording (FP1-F7, F7-T7, T7-P7, ...)")
        assert f"the {montage} montage" in message and "data.montage: bipolar" in message
        assert "\n" not in message


def test_missing_channels_are_named():
    with pytest.raises(MontageError, match=r"^missing required channel\(s\) C3, O2$"):
        plan_montage([x for x in TUSZ_LABELS if "C3" not in x and "O2" not in x], "bipolar", [])
    # a derivation has no exact substitute: no interpolation for bipolar files
    no_midline = [d for d in CHB_MIT_LABELS if d not in ("FZ-CZ", "CZ-PZ")]
    with pytest.raises(MontageError, match=r"^missing derivation\(s\) FZ-CZ, CZ-PZ: not recorded"):
        plan_montage(no_midline, "bipolar", INTERPOLABLE)
    # electrodes missing only interpolable ones still feed the bipolar montage
    lacking = [x for x in TUSZ_LABELS if "FZ" not in x and "PZ" not in x]
    plan = plan_montage(lacking, "bipolar", INTERPOLABLE)
    assert plan.rows == CHANNELS_19 and "FZ" not in plan.read


def test_the_referential_cache_hash_is_the_one_before_montages():
    """Caches built before data.montage existed (all referential) stay valid."""
    before = config_hash({**PRE.model_dump(mode="json"), "algorithm": PREPROCESS_ALGORITHM})
    hashes = {m: PRE.fingerprint(m) for m in ("referential", "average", "bipolar")}
    assert hashes["referential"] == before and len(set(hashes.values())) == 3


# --- real EDF files ---------------------------------------------------------------------------


def _documented_pipeline(raw: np.ndarray, rate_hz: float, drop: tuple[str, ...]) -> np.ndarray:
    """data/edf.py's steps for the referential montage written out with scipy and mne alone (none
    of szdet's functions), in float64: mean out, polyphase resampling to 256 Hz, 4th-order
    Butterworth 0.5-120 Hz and Q=30 60 Hz notch run forward and back, spherical-spline
    interpolation of ``drop``, robust z-score from every 4th sample, clip at 10."""
    import mne
    from scipy import signal

    x = raw - raw.mean(axis=1, keepdims=True)
    up, down = Fraction(256.0 / rate_hz).limit_denominator(1000).as_integer_ratio()
    x = signal.resample_poly(x, up, down, axis=1)
    sos = signal.butter(4, [0.5, 120.0], btype="bandpass", fs=256.0, output="sos")
    sos = np.vstack([sos, signal.tf2sos(*signal.iirnotch(60.0, 30.0, fs=256.0))])
    x = signal.sosfiltfilt(sos, x, axis=1)
    if drop:
        names = [c[0] + c[1:].lower() for c in CHANNELS_19]
        head = mne.io.RawArray(x, mne.create_info(names, 256.0, "eeg"), verbose="error")
        head.set_montage("standard_1020", verbose="error")
        head.info["bads"] = [c[0] + c[1:].lower() for c in drop]
        x = head.interpolate_bads(reset_bads=True, verbose="error").get_data()
    q25, median, q75 = np.percentile(x[:, ::4], [25, 50, 75], axis=1)
    return np.clip((x - median[:, None]) / ((q75 - q25)[:, None] / 1.349), -10.0, 10.0)


def test_referential_load_is_the_documented_pipeline(tmp_path):
    """The default montage adds nothing to the documented steps (AR and LE, Fz/Pz interpolated),
    checked against an independent float64 implementation of them."""
    import mne

    field = scalp_field(30, 250.0, seed=4)
    for suffix, drop in (("REF", ()), ("LE", ("FZ", "PZ"))):
        signals = {c: v for c, v in field.items() if c not in drop}
        edf = write_edf(tmp_path / f"{suffix}.edf", signals, 250.0, f"EEG {{}}-{suffix}")
        raw = mne.io.read_raw_edf(edf, verbose="error")
        x = np.zeros((19, len(raw.times)))
        for i, c in enumerate(CHANNELS_19):
            if c not in drop:
                x[i] = raw.get_data(picks=[f"EEG {c}-{suffix}"])[0]
        out = load_edf(edf, PRE)
        assert out.interpolated == list(drop) and out.channels == CHANNELS_19
        np.testing.assert_allclose(out.signal, _documented_pipeline(x, 250.0, drop), atol=1e-4)


def test_every_dataset_naming_reads_the_same_referential_signal(tmp_path):
    """TUSZ, SzCORE BIDS (Fp1-Avg), Siena (EEG Fp1), SeizeIT (Fp1) and 10-10 names (EEG T7-LE)."""
    namings = [("EEG {}-REF", False), ("{}-Avg", True), ("EEG {}", True), ("{}", True)]
    namings.append(("EEG {}-LE", True))
    outs = [
        load_edf(write_referential_edf(tmp_path / f"{i}.edf", 20, 256.0, fmt, modern=m), PRE)
        for i, (fmt, m) in enumerate(namings)
    ]
    for out in outs[1:]:
        np.testing.assert_array_equal(out.signal, outs[0].signal)


def test_referential_to_bipolar_equals_reading_a_bipolar_file_of_the_same_head(tmp_path):
    referential = write_referential_edf(tmp_path / "ref.edf", 30, 256.0, "EEG {}-REF", seed=2)
    junk = np.random.default_rng(9).normal(0, 300, round(30 * 256.0))
    chb = write_chb_mit_edf(tmp_path / "chb.edf", 30, seed=2, repeat=junk)  # 2nd T8-P8 differs
    from_electrodes = load_edf(referential, PRE, "bipolar")
    from_derivations = load_edf(chb, PRE, "bipolar")
    for out in (from_electrodes, from_derivations):
        assert out.channels == DOUBLE_BANANA and out.signal.shape == (18, 30 * 256)
    # EDF's 16-bit steps (0.06 uV) are all that differ: the first T8-P8 is the one read
    np.testing.assert_allclose(from_derivations.signal, from_electrodes.signal, atol=0.02)
    assert from_derivations.notes == [
        "channel T4-T6 appears 2 times (T8-P8, T8-P8): the first is used"
    ]
    assert from_derivations.interpolated == []


def test_average_makes_ref_and_le_recordings_of_one_head_alike(tmp_path):
    field = scalp_field(30, 256.0, seed=5)
    rows = np.array([field[c] for c in CHANNELS_19])
    common, ears = rows.mean(axis=0), (field["A1"] + field["A2"]) / 2
    files = {}
    for name, reference in (("ar", common), ("le", ears)):
        channels = [(f"EEG {c}-{name.upper()}", field[c] - reference) for c in CHANNELS_19]
        files[name] = write_labelled_edf(tmp_path / f"{name}.edf", channels, 256.0)
    average = [load_edf(files[n], PRE, "average").signal for n in ("ar", "le")]
    np.testing.assert_allclose(average[0], average[1], atol=0.02)
    referential = [load_edf(files[n], PRE).signal for n in ("ar", "le")]
    assert np.abs(referential[0] - referential[1]).max() > 0.5  # the references do differ
    # an average-referenced recording is already one: average = referential on it
    np.testing.assert_allclose(average[0], referential[0], atol=0.02)


def test_load_edf_names_the_file_and_why_it_cannot_feed_the_montage(tmp_path):
    chb = write_chb_mit_edf(tmp_path / "chb.edf", 10)
    with pytest.raises(EdfError) as e:
        load_edf(chb, PRE, "referential")
    assert str(e.value).startswith(f"{chb}: bipolar recording (FP1-F7")
    channels = bipolar_signals(scalp_field(10, 256.0))
    flat = [(label, 0 * x if label == "F3-C3" else x) for label, x in channels]
    edf = write_labelled_edf(tmp_path / "flat.edf", flat, 256.0)
    with pytest.raises(EdfError, match="channel F3-C3 is flat"):  # never interpolated
        load_edf(edf, PRE, "bipolar")
