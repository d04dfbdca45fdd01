"""Windows: the index and its tail rule, labels, the balanced sampler, and the Dataset."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_support import RATE_HZ, write_split
from szdet.config import CHANNELS_19, DOUBLE_BANANA
from szdet.data.manifest import CacheSplit
from szdet.data.windows import (
    BACKGROUND,
    FULL,
    PARTIAL,
    UNKNOWN_NODE,
    BalancedSampler,
    NodeRows,
    WindowDataset,
    WindowIndex,
    sample_labels,
    window_kinds,
    window_starts,
)


def node_labels(recording, names, start, length, downsample, sample_rate_hz):
    """One window's per-node labels, the recording's rows read afresh for it."""
    return NodeRows.of(recording, names, sample_rate_hz).labels(start, length, downsample)


def make_split(root: Path, recordings: list[tuple[float, list[tuple[float, float]]]]) -> CacheSplit:
    """A train split written in the real format: (duration_s, events) per recording."""
    write_split(root, "train", recordings)
    return CacheSplit.open(root, "train")


# --- index, labels, kinds ---------------------------------------------------------------------


def test_window_starts_tail_rule():
    assert window_starts(100, 30, 10).tolist() == [0, 10, 20, 30, 40, 50, 60, 70]  # ends exactly
    assert window_starts(105, 30, 10).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 75]  # + tail
    assert window_starts(30, 30, 10).tolist() == [0]
    assert window_starts(12, 30, 10).tolist() == [0]  # shorter than a window: one, padded


def test_sample_labels_cover_events_and_leave_padding_background():
    labels = sample_labels([(1.0, 2.0), (3.5, 10.0)], start=5, length=40, sample_rate_hz=10.0)
    expected = np.zeros(40, np.float32)
    expected[5:15] = 1.0  # 1.0-2.0 s = samples 10..20, window from sample 5
    expected[30:40] = 1.0  # 3.5 s onwards, cut by the window's end
    np.testing.assert_array_equal(labels, expected)
    assert sample_labels([], 0, 8, 10.0).tolist() == [0.0] * 8


def test_window_kinds_background_partial_full():
    bounds = np.array([[50, 120], [200, 210]])
    starts = np.array([0, 20, 60, 100, 150, 195])  # [0, 40) ends where the event begins
    assert window_kinds(bounds, starts, 40).tolist() == [
        BACKGROUND, PARTIAL, FULL, PARTIAL, BACKGROUND, PARTIAL,
    ]  # fmt: skip


def test_index_over_a_split_follows_the_tail_rule_and_labels(tmp_path):
    split = make_split(tmp_path, [(135.0, [(0.0, 75.0)]), (45.0, [(10.0, 20.0)]), (60.0, [])])
    index = WindowIndex.build(split, length_s=60.0, stride_s=10.0)
    assert index.length == 60 * 256
    assert index.recording.tolist() == [0] * 9 + [1, 2]
    assert (index.start[:9] / 256).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 75]
    assert index.start[9:].tolist() == [0, 0]
    assert index.kind.tolist() == [
        FULL,
        FULL,
        PARTIAL,
        *[PARTIAL] * 5,
        BACKGROUND,
        PARTIAL,
        BACKGROUND,
    ]
    assert index.counts() == {"background": 2, "partial": 7, "full": 2}


# --- the balanced sampler ---------------------------------------------------------------------


def _index(partial: int, full: int, background: int) -> WindowIndex:
    kinds = np.array([PARTIAL] * partial + [FULL] * full + [BACKGROUND] * background, np.int8)
    kinds = kinds[np.random.default_rng(1).permutation(len(kinds))]
    n = len(kinds)
    return WindowIndex(np.zeros(n, np.int32), np.arange(n, dtype=np.int64), kinds, 100)


def _kinds_drawn(index: WindowIndex, drawn: list[int]) -> dict[int, int]:
    kinds = index.kind[drawn]
    return {k: int((kinds == k).sum()) for k in (PARTIAL, FULL, BACKGROUND)}


def test_sampler_draws_all_partial_and_the_ratios_without_replacement():
    index = _index(partial=40, full=50, background=1000)
    sampler = BalancedSampler(index, full_ratio=0.3, background_ratio=2.5, seed=0)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 40 + 12 + 100
    assert _kinds_drawn(index, drawn) == {PARTIAL: 40, FULL: 12, BACKGROUND: 100}
    assert len(set(drawn)) == len(drawn)
    assert set(np.flatnonzero(index.kind == PARTIAL)) <= set(drawn)


def test_sampler_tops_up_with_replacement_when_a_class_is_short():
    index = _index(partial=40, full=5, background=30)
    drawn = list(BalancedSampler(index, full_ratio=0.3, background_ratio=2.5, seed=0))
    assert _kinds_drawn(index, drawn) == {PARTIAL: 40, FULL: 12, BACKGROUND: 100}
    assert set(np.flatnonzero(index.kind != PARTIAL)) <= set(drawn)  # every short-class window once


def test_sampler_without_partial_windows_uses_full_ones_or_all_background():
    index = _index(partial=0, full=10, background=100)
    drawn = list(BalancedSampler(index, full_ratio=0.3, background_ratio=2.5, seed=0))
    assert _kinds_drawn(index, drawn) == {PARTIAL: 0, FULL: 10, BACKGROUND: 25}
    index = _index(partial=0, full=0, background=30)
    assert sorted(BalancedSampler(index, 0.3, 2.5, seed=0)) == list(range(30))


def test_sampler_is_deterministic_and_draws_afresh_each_epoch():
    index = _index(partial=40, full=50, background=1000)
    a, b = BalancedSampler(index, 0.3, 2.5, seed=7), BalancedSampler(index, 0.3, 2.5, seed=7)
    epoch0 = list(a)
    assert list(b) == epoch0
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0 and set(epoch1) != set(epoch0)  # another background draw, reshuffled
    a.set_epoch(0)
    assert list(a) == epoch0  # a pure function of (seed, epoch)
    assert list(BalancedSampler(index, 0.3, 2.5, seed=8)) != epoch0


def test_mid_epoch_resume_continues_the_same_draw():
    index = _index(partial=40, full=50, background=1000)
    sampler = BalancedSampler(index, 0.3, 2.5, seed=3)
    sampler.set_epoch(4)
    whole = list(sampler)
    it = iter(sampler)
    first = [next(it) for _ in range(37)]
    state = sampler.state_dict()
    resumed = BalancedSampler(index, 0.3, 2.5, seed=3)
    resumed.load_state_dict(state)
    assert resumed.epoch == 4 and len(resumed) == len(whole)
    assert first + list(resumed) == whole
    resumed.load_state_dict(sampler.state_dict(consumed=10))  # what a prefetching loader used
    assert list(resumed) == whole[10:]
    resumed.set_epoch(4, start=20)  # a resumed epoch, checkpointed again 5 samples later
    again = BalancedSampler(index, 0.3, 2.5, seed=3)
    again.load_state_dict(resumed.state_dict(consumed=5))
    assert list(again) == whole[25:]
    with pytest.raises(ValueError, match="seed"):
        BalancedSampler(index, 0.3, 2.5, seed=4).load_state_dict(state)


def test_ranks_get_disjoint_equal_shares_of_one_draw_and_resume_per_rank():
    index = _index(partial=41, full=50, background=1000)
    whole = BalancedSampler(index, 0.3, 2.5, seed=0).epoch_order(0)
    shares = [
        list(BalancedSampler(index, 0.3, 2.5, seed=0, rank=r, world_size=4)) for r in range(4)
    ]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(whole) // 4
    assert len(set().union(*shares)) == 4 * len(shares[0])  # disjoint (drawn without replacement)
    for r, share in enumerate(shares):
        assert share == whole[r : len(whole) // 4 * 4 : 4].tolist()
    rank1 = BalancedSampler(index, 0.3, 2.5, seed=0, rank=1, world_size=4)
    rank1.set_epoch(0, start=5)
    assert list(rank1) == shares[1][5:] and len(rank1) == len(shares[1])
    with pytest.raises(ValueError):
        BalancedSampler(index, 0.3, 2.5, seed=0, rank=4, world_size=4)


# --- the Dataset ------------------------------------------------------------------------------


def test_dataset_window_is_the_memmap_slice_with_labels_and_padding(tmp_path):
    split = make_split(tmp_path, [(135.0, [(30.0, 100.0)]), (45.0, [(10.0, 20.0)])])
    index = WindowIndex.build(split, length_s=60.0, stride_s=10.0)
    dataset = WindowDataset(split, index)
    x, y, i = dataset[3]
    assert (x.dtype, y.dtype, x.shape, y.shape, i) == (
        torch.float16,  # as cached: the device widens it, so half the bytes cross
        torch.float32,
        (19, 15360),
        (15360,),
        3,
    )
    start = int(index.start[3])
    np.testing.assert_array_equal(x.numpy(), split.signal(0)[:, start : start + 15360])
    np.testing.assert_array_equal(y.numpy(), sample_labels([(30.0, 100.0)], start, 15360, RATE_HZ))

    x, y, _ = dataset[len(dataset) - 1]  # the 45 s recording, zero-padded past its end
    n = split.recordings[1].n_samples
    np.testing.assert_array_equal(x[:, :n].numpy(), split.signal(1)[:])
    assert not x[:, n:].any() and not y[n:].any() and y[10 * 256 : 20 * 256].all()


def test_dataset_in_worker_processes_matches_the_main_process(tmp_path):
    split = make_split(tmp_path, [(90.0, [(30.0, 40.0)]), (70.0, [])])
    dataset = WindowDataset(split, WindowIndex.build(split, 60.0, 10.0))
    split.signal(0)  # mapped in the parent before the workers fork
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    xs, ys, ids = zip(*loader, strict=True)
    assert torch.cat(ids).tolist() == list(range(len(dataset)))
    torch.testing.assert_close(
        torch.cat(xs), torch.stack([dataset[i][0] for i in range(len(dataset))])
    )
    torch.testing.assert_close(
        torch.cat(ys), torch.stack([dataset[i][1] for i in range(len(dataset))])
    )


# --- node labels (the auxiliary loss's) -------------------------------------------------------


@dataclass
class Labelled:
    n_samples: int
    events: list[tuple[float, float]]
    channel_seizures: list[tuple[str, float, float]]


def test_node_labels_mark_the_nodes_a_channel_row_names_at_each_steps_middle():
    recording = Labelled(256 * 60, [(10.0, 30.0)], [("FP1-F7", 10.0, 30.0), ("T3-T5", 20.0, 30.0)])
    downsample = 128  # steps of 0.5 s; the middle of step k is at k * 0.5 + 0.25 s
    labels = node_labels(recording, CHANNELS_19, 0, 256 * 60, downsample, 256.0)
    assert labels.shape == (19, 120) and labels.dtype == np.int8
    seizing = {CHANNELS_19[i] for i in np.flatnonzero(labels.any(axis=1))}
    assert seizing == {"FP1", "F7", "T3", "T5"}
    fp1, t3 = CHANNELS_19.index("FP1"), CHANNELS_19.index("T3")
    assert np.flatnonzero(labels[fp1]).tolist() == list(range(20, 60))  # 10.25 s ... 29.75 s
    assert np.flatnonzero(labels[t3]).tolist() == list(range(40, 60))
    # A window starting later counts its steps from its own first sample.
    later = node_labels(recording, CHANNELS_19, 256 * 25, 256 * 10, downsample, 256.0)
    assert np.flatnonzero(later[fp1]).tolist() == list(range(10))  # 25.25 s ... 29.75 s


def test_node_labels_in_a_bipolar_montage_mark_the_derivation_not_its_neighbours():
    recording = Labelled(256 * 60, [(10.0, 30.0)], [("F7-FP1", 10.0, 30.0), ("C4", 10.0, 20.0)])
    labels = node_labels(recording, DOUBLE_BANANA, 0, 256 * 60, 256, 256.0)
    seizing = {DOUBLE_BANANA[i] for i in np.flatnonzero(labels.any(axis=1))}
    # FP1-F7 whichever way it is written, not FP1-F3 or F7-T3 which share one electrode; a
    # labelled electrode marks the derivations through it.
    assert seizing == {"FP1-F7", "F4-C4", "C4-P4"}


def test_node_labels_without_rows_are_unknown_only_where_there_is_a_seizure():
    unplaced = Labelled(256 * 60, [(10.0, 30.0)], [])
    assert (node_labels(unplaced, CHANNELS_19, 0, 256 * 60, 128, 256.0) == UNKNOWN_NODE).all()
    quiet = Labelled(256 * 60, [], [])
    assert not node_labels(quiet, CHANNELS_19, 0, 256 * 60, 128, 256.0).any()
