"""Stitching: exact averaging of overlapping windows, tails, padding, and one event per seizure."""

import tempfile
import tracemalloc
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from szdet.evaluate.postprocess import EventRules, track_events
from szdet.evaluate.scoring import Events, score_ovlp
from szdet.evaluate.stitch import (
    Stitcher,
    evidence_on_disk,
    label_track,
    n_frames,
    predict_tracks,
)

RATE_HZ = 256.0


def brute_force_track(n_samples, windows, rate_hz, frame_hz):
    """Mean over every (sample, covering window) pair whose sample falls in the frame."""
    size = n_frames(n_samples, rate_hz, frame_hz)
    sums, counts = np.zeros(size), np.zeros(size)
    for start, probs in windows:
        for i, p in enumerate(probs):
            t = start + i
            if 0 <= t < n_samples:
                k = int((t + 0.5) * frame_hz / rate_hz)
                sums[k] += p
                counts[k] += 1
    return np.divide(sums, counts, out=np.zeros(size), where=counts > 0)


def test_overlapping_windows_average_exactly():
    # 4 Hz frames of 64 samples; two 512-sample windows overlapping by half, constant outputs.
    stitcher = Stitcher([768], RATE_HZ, 4.0)
    stitcher.add(0, 0, np.full(512, 0.2))
    stitcher.add(0, 256, np.full(512, 0.8))
    track = stitcher.tracks()[0]
    assert track.shape == (12,)
    np.testing.assert_allclose(track, [0.2] * 4 + [0.5] * 4 + [0.8] * 4, rtol=1e-6)


def test_evidence_rows_stitch_as_the_probabilities_do():
    rng = np.random.default_rng(0)
    windows = [(start, rng.random((3, 512))) for start in (-100, 0, 200, 500, 700)]
    stitcher = Stitcher([900], RATE_HZ, 4.0, evidence_rows=3)
    for start, rows in windows:
        stitcher.add(0, start, rows[0], rows)
    evidence = stitcher.evidence_tracks()[0]
    assert evidence.shape == (3, n_frames(900, RATE_HZ, 4.0))
    for row in range(3):
        expected = brute_force_track(900, [(s, r[row]) for s, r in windows], RATE_HZ, 4.0)
        np.testing.assert_allclose(evidence[row], expected, rtol=1e-5)
    np.testing.assert_allclose(stitcher.tracks()[0], evidence[0], rtol=1e-5)


@pytest.mark.parametrize("frame_hz", [4.0, 10.0, 1.0])
def test_unaligned_windows_match_the_brute_force_mean(frame_hz):
    rng = np.random.default_rng(1)
    n_samples, length = 3000, 700
    windows = [(s, rng.random(length)) for s in [-100, 0, 333, 1000, 1001, 2300, 2600]]
    stitcher = Stitcher([n_samples], RATE_HZ, frame_hz)
    for start, probs in reversed(windows):  # order does not matter
        stitcher.add(0, start, probs)
    want = brute_force_track(n_samples, windows, RATE_HZ, frame_hz)
    np.testing.assert_allclose(stitcher.tracks()[0], want, rtol=1e-6)


def test_tail_window_and_padded_short_recording():
    length = 512
    # 900 samples, stride 256: windows at 0 and 256 fit, the tail window is aligned to the end.
    starts = [0, 256, 900 - length]
    rng = np.random.default_rng(2)
    long_windows = [(s, rng.random(length)) for s in starts]
    # 200 samples: one window at 0 whose last 312 samples are padding (set to 1.0: must not count)
    short_probs = np.concatenate([np.full(200, 0.1), np.ones(length - 200)])
    stitcher = Stitcher([900, 200], RATE_HZ, 4.0)
    stitcher.add_batch(
        np.array([0, 0, 1, 0]),
        np.array([0, 256, 0, 900 - length]),
        np.stack([long_windows[0][1], long_windows[1][1], short_probs, long_windows[2][1]]),
    )
    long_track, short_track = stitcher.tracks()
    np.testing.assert_allclose(
        long_track, brute_force_track(900, long_windows, RATE_HZ, 4.0), rtol=1e-6
    )
    assert short_track.shape == (4,)  # 200 samples = 3 full frames + a partial one
    np.testing.assert_allclose(short_track, 0.1, rtol=1e-6)
    assert stitcher.coverage(0).min() > 0


def test_frames_no_window_covers_are_zero_and_reported():
    stitcher = Stitcher([1024], RATE_HZ, 4.0)
    stitcher.add(0, 0, np.full(256, 0.7))
    assert stitcher.tracks()[0].tolist() == pytest.approx([0.7] * 4 + [0.0] * 12)
    assert (stitcher.coverage(0)[4:] == 0).all()


def test_label_track_marks_frames_whose_midpoint_is_inside():
    labels = label_track([(1.0, 2.1), (3.9, 4.0)], n_frames=20, frame_hz=4.0)
    # midpoints 0.125, 0.375, ...: 1.125 .. 1.875 inside [1.0, 2.1); 2.125 is not; 3.875 < 3.9
    assert np.flatnonzero(labels).tolist() == [4, 5, 6, 7]


def test_an_event_under_six_overlapping_windows_counts_once():
    # 10 min at 256 Hz, 60 s windows every 10 s: the 40 s seizure at 300 s lies under 6 windows.
    n_samples, length, stride = 600 * 256, 60 * 256, 10 * 256
    truth = np.zeros(n_samples)
    truth[300 * 256 : 340 * 256] = 0.95
    stitcher = Stitcher([n_samples], RATE_HZ, 4.0)
    starts = range(0, n_samples - length + 1, stride)
    covering = [s for s in starts if s < 340 * 256 and s + length > 300 * 256]
    assert len(covering) >= 6
    for start in starts:  # each window "detects" the seizure it sees
        stitcher.add(0, start, truth[start : start + length])
    hyp = track_events(stitcher.tracks()[0], 4.0, EventRules(0.5, 0.35, 5.0, 10.0, 600.0), 600.0)
    assert hyp.tolist() == [[300.0, 340.0]]
    score = score_ovlp(Events.from_lists([[(300.0, 340.0)]]), Events.from_lists([hyp]), [600.0])
    assert (score.tp, score.fn, score.fp) == (1, 0, 0)


# --- a split's evidence: stitched recording by recording, never all in memory at once ---------

NODES, SLOW_HZ, WINDOW = 19, 16.0, 64  # a slow sample rate keeps windows small beside recordings


def many_recordings(count):
    """Recording lengths and their (recording, start, evidence) windows in WindowIndex's order:
    overlapping by half, hanging over both ends; values from a small pool so nothing is held."""
    pool = np.random.default_rng(4).random((7, NODES, WINDOW))
    sizes = [960 + 7 * (r % 5) for r in range(count)]
    windows = [
        (r, start, pool[(r + start) % 7])
        for r, n in enumerate(sizes)
        for start in range(-WINDOW // 4, n, WINDOW // 2)
    ]
    return sizes, windows


def stitched(sizes, windows, rows=NODES):
    stitcher = Stitcher(sizes, SLOW_HZ, 4.0, evidence_rows=rows)
    for recording, start, evidence in windows:
        stitcher.add(recording, start, evidence[0], evidence)
    return stitcher


def evidence_overhead(count):
    """Peak bytes (traced allocations) the evidence of ``count`` recordings adds to their
    stitch, and that stitch."""
    sizes, windows = many_recordings(count)
    peaks = []
    for rows in (0, NODES):
        tracemalloc.start()
        stitcher = stitched(sizes, windows, rows)
        evidence = stitcher.evidence_tracks() if rows else None
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return peaks[1] - peaks[0], sizes, windows, stitcher, evidence


def test_a_splits_evidence_never_sits_in_memory_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with evidence_on_disk():
        few = evidence_overhead(3)[0]
        many, sizes, windows, stitcher, evidence = evidence_overhead(300)
        # 300 recordings' evidence is 5.5 MB: it costs what 3 recordings' does, to within two
        # (a finishing recording's sums and its mean; the allocator's peaks vary by a few KB)
        assert many < few + 2 * NODES * n_frames(max(sizes), SLOW_HZ, 4.0) * 4
        tracks = stitcher.tracks()
        for r, n in enumerate(sizes):  # read back as it was: as if stitched alone
            alone = stitched([n], [(0, s, e) for i, s, e in windows if i == r])
            assert np.array_equal(evidence[r], alone.evidence_tracks()[0])
            assert np.array_equal(tracks[r], alone.tracks()[0])
        assert np.array_equal(evidence[-1], evidence[len(sizes) - 1])
        for r in (0, 1, len(sizes) - 1):  # and the mean of each (sample, covering window)
            mine = [(s, e) for i, s, e in windows if i == r]
            for row in (0, NODES - 1):
                want = brute_force_track(sizes[r], [(s, e[row]) for s, e in mine], SLOW_HZ, 4.0)
                np.testing.assert_allclose(evidence[r][row], want, rtol=1e-5)
    assert not any(tmp_path.iterdir())  # the temporary files go with the context


def test_evidence_stays_in_memory_elsewhere_and_leaves_no_files_on_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sizes, windows = many_recordings(3)
    in_memory = stitched(sizes, windows).evidence_tracks()
    assert not any(tmp_path.iterdir())  # outside it (`detect`), no disk
    with pytest.raises(RuntimeError, match="interrupted"), evidence_on_disk():
        on_disk = stitched(sizes, windows).evidence_tracks()
        assert any(tmp_path.rglob("*.npy"))
        assert all(np.array_equal(a, b) for a, b in zip(in_memory, on_disk, strict=True))
        raise RuntimeError("interrupted")
    assert not any(tmp_path.iterdir())


def test_evidence_refuses_a_window_of_a_finished_recording():
    stitcher = Stitcher([512, 512], RATE_HZ, 4.0, evidence_rows=2)
    stitcher.add(1, 0, np.ones(256), np.ones((2, 256)))
    with pytest.raises(ValueError, match="recording by recording"):
        stitcher.add(0, 0, np.ones(256), np.ones((2, 256)))
    stitcher.evidence_tracks()
    with pytest.raises(ValueError, match="recording by recording"):
        stitcher.add(1, 256, np.ones(256), np.ones((2, 256)))


# --- predict_tracks on a real model over windows of an in-memory split ------------------------


@dataclass
class Recording:
    n_samples: int
    events: list = field(default_factory=list)


@dataclass
class Split:
    """What WindowIndex and WindowDataset read from a CacheSplit: recordings, rate, signals."""

    signals: list
    sample_rate_hz: float = RATE_HZ
    recordings: list = field(init=False)

    def __post_init__(self):
        self.recordings = [Recording(s.shape[1]) for s in self.signals]

    def signal(self, i):
        return self.signals[i]


class ChannelZeroLogits(torch.nn.Module):
    """A 1x1 convolution that passes input channel 0 through as the logit (a known answer)."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Conv1d(19, 1, kernel_size=1)
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.weight[0, 0, 0] = 1.0
            self.mix.bias.zero_()

    def forward(self, x):
        assert not torch.is_grad_enabled()
        assert x.dtype == torch.float32  # the cache's float16, widened on the device
        return self.mix(x)[:, 0, :]


def split_with_known_logits():
    rng = np.random.default_rng(3)
    lengths = [30 * 256 + 77, 5 * 256, 12 * 256]  # tail window, padded short one, exact fit
    signals = []
    for n in lengths:
        sig = np.zeros((19, n), dtype=np.float16)
        sig[0] = rng.normal(0, 2, n)
        signals.append(sig)
    return Split(signals)


def expected_tracks(split, index):
    """Brute-force stitching of sigmoid(channel 0) over the index's windows."""
    out = []
    for r, sig in enumerate(split.signals):
        probs = 1 / (1 + np.exp(-sig[0].astype(np.float64)))
        windows = [(s, probs[s : s + index.length]) for s in index.start[index.recording == r]]
        out.append(brute_force_track(sig.shape[1], windows, RATE_HZ, 4.0))
    return out


def test_predict_tracks_stitches_model_outputs_per_recording():
    from szdet.data.windows import WindowIndex

    split = split_with_known_logits()
    index = WindowIndex.build(split, length_s=8.0, stride_s=3.0)
    model = ChannelZeroLogits().train()
    tracks = predict_tracks(model, split, index, batch_size=5, device="cpu", frame_hz=4.0)
    assert model.training  # restored
    for track, want in zip(tracks, expected_tracks(split, index), strict=True):
        np.testing.assert_allclose(track, want, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_tracks_on_cuda_under_bf16_autocast():
    from szdet.data.windows import WindowIndex

    split = split_with_known_logits()
    index = WindowIndex.build(split, length_s=8.0, stride_s=3.0)
    model = ChannelZeroLogits().cuda()
    tracks = predict_tracks(
        model,
        split,
        index,
        batch_size=5,
        device="cuda",
        autocast_dtype=torch.bfloat16,
        frame_hz=4.0,
    )
    for track, want in zip(tracks, expected_tracks(split, index), strict=True):
        assert track.dtype == np.float32
        np.testing.assert_allclose(track, want, atol=1e-2)  # bf16 logits: ~3 significant digits
