"""Post-processing: each rule on a constructed track, and the vectorised rules vs a plain loop."""

import numpy as np
import pytest

from szdet.config import EvaluateConfig
from szdet.evaluate.postprocess import EventRules, TrackSet, track_events


def rules(on=0.5, off=0.35, min_s=0.0, gap_s=0.0, max_s=1e9):
    return EventRules(on, off, min_s, gap_s, max_s)


def events(track, r, frame_hz=1.0, duration_s=None):
    return track_events(np.asarray(track, dtype=np.float32), frame_hz, r, duration_s).tolist()


def test_hysteresis_starts_at_on_and_ends_below_off():
    track = [0.0, 0.2, 0.4, 0.6, 0.45, 0.38, 0.3, 0.6, 0.0, 0.49, 0.4]
    # frames 2-5 stay >= 0.35 but the event starts at frame 3 (first >= 0.5) and ends at frame 6;
    # frame 7 is its own event; frames 9-10 never reach 0.5.
    assert events(track, rules()) == [[3.0, 6.0], [7.0, 8.0]]
    assert events(track, rules(on=0.61)) == []
    assert events(track, rules(on=0.4, off=0.4)) == [[2.0, 5.0], [7.0, 8.0], [9.0, 11.0]]


def test_single_threshold_when_on_equals_off():
    track = [0.1, 0.5, 0.7, 0.2, 0.5, 0.1]
    assert events(track, rules(on=0.5, off=0.5)) == [[1.0, 3.0], [4.0, 5.0]]


def test_frame_rate_sets_the_time_axis():
    track = np.zeros(40, dtype=np.float32)
    track[8:20] = 0.9  # 4 Hz: 2.0 s .. 5.0 s
    assert events(track, rules(), frame_hz=4.0) == [[2.0, 5.0]]


def test_minimum_duration_drops_short_events_and_keeps_equal_ones():
    track = np.zeros(100)
    track[10:14] = 0.9  # 4 s
    track[30:35] = 0.9  # 5 s
    track[50:60] = 0.9  # 10 s
    assert events(track, rules(min_s=5.0)) == [[30.0, 35.0], [50.0, 60.0]]


def test_merge_joins_gaps_shorter_than_merge_gap_only():
    track = np.zeros(100)
    track[10:20] = track[29:40] = 0.9  # gap 9 s
    track[50:60] = 0.9  # gap 10 s after the previous one
    assert events(track, rules(gap_s=10.0)) == [[10.0, 40.0], [50.0, 60.0]]
    assert events(track, rules(gap_s=10.5)) == [[10.0, 60.0]]


def test_short_events_are_dropped_before_merging():
    track = np.zeros(60)
    track[10:12] = track[15:17] = 0.9  # two 2 s blips 3 s apart
    track[30:45] = 0.9
    assert events(track, rules(min_s=5.0, gap_s=10.0)) == [[30.0, 45.0]]


def test_long_events_are_split_into_max_length_pieces():
    track = np.zeros(60)
    track[5:30] = 0.9  # 25 s
    track[40:50] = 0.9  # exactly 10 s: not split
    assert events(track, rules(max_s=10.0)) == [[5, 15], [15, 25], [25, 30], [40, 50]]


def test_event_stop_is_clipped_to_the_recording():
    track = [0.0, 0.0, 0.9, 0.9]  # the last frame is only partly inside a 3.5 s recording
    assert events(track, rules(), duration_s=3.5) == [[2.0, 3.5]]


def test_rules_from_config_keep_the_off_on_ratio():
    cfg = EvaluateConfig(threshold_on=0.5, threshold_off_ratio=0.7, min_duration_s=2, merge_gap_s=3)
    assert EventRules.from_config(cfg) == EventRules(0.5, 0.35, 2.0, 3.0, 600.0)
    moved = EventRules.from_config(cfg, threshold_on=0.9)
    assert (moved.threshold_on, moved.threshold_off) == pytest.approx((0.9, 0.63))


def test_trackset_never_joins_recordings():
    a = np.full(10, 0.9, dtype=np.float32)  # seizure to the very end ...
    b = np.full(10, 0.9, dtype=np.float32)  # ... and from the very start of the next
    found = TrackSet([a, b], 1.0, [10.0, 10.0]).events(rules(gap_s=100.0))
    assert found.recording.tolist() == [0, 1]
    assert np.stack([found.start_s, found.stop_s], 1).tolist() == [[0, 10], [0, 10]]


# --- the vectorised rules vs a plain sequential reference -------------------------------------


def reference_events(track, frame_hz, r, duration_s):
    """The four rules written as the obvious loop, frame by frame."""
    found, start = [], None
    for k, p in enumerate(track):
        if start is None and p >= r.threshold_on:
            start = k
        elif start is not None and p < r.threshold_off:
            found.append([start / frame_hz, k / frame_hz])
            start = None
    if start is not None:
        found.append([start / frame_hz, len(track) / frame_hz])
    found = [[a, min(b, duration_s)] for a, b in found]
    found = [e for e in found if e[1] - e[0] >= r.min_duration_s - 1e-9]
    merged = []
    for e in found:
        if merged and e[0] - merged[-1][1] < r.merge_gap_s - 1e-9:
            merged[-1][1] = e[1]
        else:
            merged.append(list(e))
    pieces = []
    for a, b in merged:
        while b - a > r.max_event_s + 1e-9:
            pieces.append([a, a + r.max_event_s])
            a += r.max_event_s
        pieces.append([a, b])
    return pieces


def test_vectorised_rules_equal_the_sequential_reference_on_random_tracks():
    rng = np.random.default_rng(0)
    tracks, durations = [], []
    for _ in range(30):
        n = int(rng.integers(1, 400))
        # smoothed noise crosses the thresholds often, at many scales
        raw = np.convolve(rng.random(n + 8), np.ones(8) / 8, mode="valid")[:n]
        tracks.append(np.clip((raw - 0.3) * 2.5, 0, 1).astype(np.float32))
        durations.append((n - rng.random()) / 4.0)
    for r in [
        rules(0.5, 0.35, 2.0, 5.0, 12.0),
        rules(0.6, 0.6, 0.0, 0.0, 3.0),
        rules(0.3, 0.1, 8.0, 20.0, 600.0),
    ]:
        found = TrackSet(tracks, 4.0, durations).events(r).per_recording(len(tracks))
        for track, duration_s, got in zip(tracks, durations, found, strict=True):
            want = reference_events(track, 4.0, r, duration_s)
            np.testing.assert_allclose(got, np.reshape(want, (-1, 2)), atol=1e-9)


def test_confidence_is_the_mean_over_the_kept_frames_of_each_event():
    # Two runs merged across a gap of low frames, and a lone event; at 2 frames per second.
    track = np.array([0.0, 0.8, 0.6, 0.1, 0.2, 0.9, 0.0, 0.0, 0.0, 0.0, 0.7, 0.7], np.float32)
    found = track_events(track, 2.0, rules(on=0.5, off=0.4, gap_s=2.0), confidence=True)
    assert found[:, :2].tolist() == [[0.5, 3.0], [5.0, 6.0]]
    # the merged gap (0.1, 0.2) is left out: (0.8 + 0.6 + 0.9) / 3, then (0.7 + 0.7) / 2
    np.testing.assert_allclose(found[:, 2], [(0.8 + 0.6 + 0.9) / 3, 0.7], rtol=1e-6)
    # without the flag the callers get the (n, 2) events as before
    assert track_events(track, 2.0, rules(on=0.5, off=0.4, gap_s=2.0)).shape == (2, 2)


def test_confidence_on_random_tracks_equals_a_frame_loop_and_lies_in_off_to_one():
    rng = np.random.default_rng(1)
    r = rules(0.5, 0.35, 2.0, 5.0, 12.0)
    for _ in range(30):
        n = int(rng.integers(1, 400))
        raw = np.convolve(rng.random(n + 8), np.ones(8) / 8, mode="valid")[:n]
        track = np.clip((raw - 0.3) * 2.5, 0, 1).astype(np.float32)
        duration_s = (n - rng.random()) / 4.0
        for start_s, stop_s, confidence in track_events(track, 4.0, r, duration_s, confidence=True):
            frames = [p for k, p in enumerate(track) if start_s <= k / 4.0 < stop_s]
            kept = [p for p in frames if p >= r.threshold_off]
            assert confidence == pytest.approx(np.mean(kept if kept else frames), rel=1e-6)
            assert r.threshold_off <= confidence <= 1.0 or not kept
