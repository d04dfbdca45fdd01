"""Where a seizure is (evaluate/localise.py): the channels that carry an event, the reference's
focus and side from per-channel rows, and the scores against a random-channel baseline."""

import weakref
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from szdet.config import CHANNELS_19, DOUBLE_BANANA, Config
from szdet.data.montage import electrodes
from szdet.evaluate.localise import (
    event_channels,
    localisation_scores,
    reference_place,
    side,
    split_localisation,
)

FRAME_HZ = 4.0


def test_channel_names_read_as_electrodes_and_sides():
    assert electrodes("FP1-F7") == {"FP1", "F7"} and electrodes("CZ") == {"CZ"}
    assert electrodes("T7-p7") == {"T3", "T5"}  # 10-10 names read as the 10-20 ones
    assert side(["FP1", "C3"]) == "left" and side(["T4-T6"]) == "right"
    assert side(["C3", "C4"]) == "both" and side(["F3-FZ", "FZ-F4"]) == "both"
    assert side(["FZ", "CZ-PZ"]) is None  # the midline is on neither side


def _evidence(n_frames: int, planted: dict[int, float], span: tuple[int, int], seed: int = 0):
    """Node logits: every node calls background (-4), the planted ones seizing over ``span``."""
    rng = np.random.default_rng(seed)
    evidence = rng.normal(-4.0, 0.3, (19, n_frames))
    for node, logit in planted.items():
        evidence[node, span[0] : span[1]] = logit
    return evidence


def test_the_nodes_called_seizing_during_an_event_carry_it_strongest_first():
    c3, p3, o2 = (CHANNELS_19.index(c) for c in ("C3", "P3", "O2"))
    evidence = _evidence(400, {c3: 3.0, p3: 1.0, o2: -3.0}, (200, 240))
    (channels,) = event_channels(evidence, [(50.0, 60.0)], FRAME_HZ, CHANNELS_19)
    assert channels == ("C3", "P3")  # O2 rose, but the model does not call it seizing
    # A node seizing through only part of the event carries it if its mean probability does.
    evidence[o2, 200:215] = 6.0
    (channels,) = event_channels(evidence, [(50.0, 60.0)], FRAME_HZ, CHANNELS_19)
    assert channels == ("C3", "P3")  # 15 of 40 frames: mean probability ~0.40
    evidence[o2, 200:230] = 6.0
    (channels,) = event_channels(evidence, [(50.0, 60.0)], FRAME_HZ, CHANNELS_19)
    assert channels == ("C3", "O2", "P3")  # 30 of 40 frames: ~0.75, between C3's and P3's
    (quiet,) = event_channels(evidence, [(10.0, 20.0)], FRAME_HZ, CHANNELS_19)
    assert len(quiet) == 1  # none called seizing: the strongest alone, a detection is somewhere
    with pytest.raises(ValueError, match="19 nodes for 18"):
        event_channels(evidence, [], FRAME_HZ, DOUBLE_BANANA)


def test_the_reference_focus_is_the_electrode_every_first_derivation_holds():
    # A seizure starting at C3 (what the synthetic corpus writes): each derivation starts when
    # either of its electrodes is recruited, so the four through C3 start first.
    rows = [(d, 100.0, 160.0) for d in ("F3-C3", "C3-P3", "T3-C3", "C3-CZ")]
    rows += [("FP1-F3", 100.2, 158.0), ("P3-O1", 100.3, 157.0), ("CZ-C4", 100.5, 150.0)]
    focus, where = reference_place(rows)
    assert focus == {"C3"} and where == "both"  # it reached C4
    focus, where = reference_place([*rows[:2], ("FP1-F3", 100.2, 158.0)])
    assert focus == {"C3"} and where == "left"
    focus, _ = reference_place([("FP1-F7", 10.0, 20.0), ("FP2-F8", 10.0, 20.0)])
    assert focus == {"FP1", "F7", "FP2", "F8"}  # nothing in common: all first electrodes


def test_scores_count_detected_seizures_and_a_random_baseline_beside_them():
    rows = [(d, 100.0, 160.0) for d in ("F3-C3", "C3-P3", "T3-C3")]
    reference = [(100.0, 160.0), (300.0, 330.0)]  # the second is never detected
    right_place = [(98.0, 150.0)], [("C3", "P3")], rows
    wrong_place = [(98.0, 150.0)], [("O2", "T6")], rows
    perfect = localisation_scores([right_place, right_place], [reference] * 2, CHANNELS_19)
    assert perfect["events"] == 2 and perfect["focus_hit_rate"] == perfect["side_accuracy"] == 1.0
    assert perfect["overlap"] == pytest.approx(2 / 4)  # C3, P3 of the rows' F3, C3, P3, T3
    assert 0 < perfect["random_focus_hit_rate"] < 0.3  # 2 of 19 channels hold C3 ~11% of draws
    assert 0 < perfect["random_side_accuracy"] < 0.6
    mixed = localisation_scores([right_place, wrong_place], [reference] * 2, CHANNELS_19)
    assert mixed["focus_hit_rate"] == mixed["side_accuracy"] == 0.5
    assert mixed["overlap"] == pytest.approx(0.25) and 0 < mixed["random_overlap"] < 0.25
    everything = (
        [(98.0, 150.0)],
        [CHANNELS_19],
        rows,
    )  # naming every channel buys focus, not overlap
    greedy = localisation_scores([everything], [reference], CHANNELS_19)
    assert greedy["focus_hit_rate"] == 1.0 and greedy["overlap"] == pytest.approx(4 / 19)
    nothing = localisation_scores([([], [], rows)], [reference], CHANNELS_19)
    assert nothing == {"events": 0, "focus_hit_rate": None, "side_accuracy": None, "overlap": None}
    unlabelled = localisation_scores([([(98.0, 150.0)], [("C3",)], [])], [reference], CHANNELS_19)
    assert unlabelled["events"] == 0  # no per-channel rows (a .csv_bi-only corpus): not scored


def test_derivation_channels_hit_a_focus_they_hold():
    rows = [(d, 10.0, 40.0) for d in ("F3-C3", "C3-P3")]
    detected = [(11.0, 39.0)], [("C3-P3", "P3-O1")], rows
    scores = localisation_scores([detected], [[(10.0, 40.0)]], DOUBLE_BANANA)
    assert scores["focus_hit_rate"] == 1.0 and scores["side_accuracy"] == 1.0


class ReadOnAccess(Sequence):
    """Evidence made anew on each access, as a split's spilled evidence is read back: it counts
    the reads and the most arrays alive at once."""

    def __init__(self, arrays):
        self.arrays, self.reads, self.alive, self.most_alive = arrays, [], [], 0

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        array = self.arrays[i].copy()
        self.reads.append(i)
        self.alive = [a for a in self.alive if a() is not None] + [weakref.ref(array)]
        self.most_alive = max(self.most_alive, len(self.alive))
        return array


def test_a_split_is_placed_reading_one_recordings_evidence_at_a_time():
    rng = np.random.default_rng(5)
    cfg, frames, seizure = Config(), 480, (40.0, 70.0)  # 2 minutes at 4 Hz, a seizure in them
    during = slice(int(seizure[0] * FRAME_HZ), int(seizure[1] * FRAME_HZ))
    recordings, tracks, evidence = [], [], []
    for focus in ("F7", "C4", "O1", "T4", "FP2"):
        rows = [(focus, *seizure), ("CZ", seizure[0] + 1, seizure[1])]
        recordings.append(
            SimpleNamespace(duration_s=120.0, events=[seizure], channel_seizures=rows)
        )
        track = np.full(frames, 0.05, np.float32)
        track[during] = 0.9
        tracks.append(track)
        nodes = rng.normal(0, 0.1, (len(CHANNELS_19), frames)).astype(np.float32)
        nodes[CHANNELS_19.index(focus), during] += 2.0
        evidence.append(nodes)
    want = split_localisation(cfg, recordings, tracks, evidence, 0.5)
    assert want["events"] == 5 and want["focus_hit_rate"] == 1.0
    lazy = ReadOnAccess(evidence)
    assert split_localisation(cfg, recordings, tracks, lazy, 0.5) == want
    assert lazy.reads == [0, 1, 2, 3, 4] and lazy.most_alive <= 2
