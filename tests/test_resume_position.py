"""Where a resumed run continues: the sampler's position as the checkpoint holds it
(state/contents.py ``sampler_part``, ``start_epoch``, ``Saved``) and the batch each rank starts at
on another number of processes (state/resume.py ``align_to_batch``), on the real sampler
(data/windows.py)."""

from pathlib import Path

import numpy as np
import pytest

from szdet.config import Config
from szdet.data.windows import BACKGROUND, BalancedSampler, WindowIndex
from szdet.errors import UserError
from szdet.state.contents import PARTS, Part, Position, Saved, assemble, sampler_part, start_epoch
from szdet.state.resume import align_to_batch

BATCH = 4
SEED = 5


def _index(n: int = 600) -> WindowIndex:
    """``n`` background windows: each epoch draws every one once (divisible by 2, 3 and 4)."""
    kinds = np.full(n, BACKGROUND, np.int8)
    return WindowIndex(np.zeros(n, np.int32), np.arange(n, dtype=np.int64), kinds, 100)


def _sampler(index: WindowIndex, rank: int = 0, world_size: int = 1) -> BalancedSampler:
    return BalancedSampler(index, 0.3, 2.5, seed=SEED, rank=rank, world_size=world_size)


def _take(sampler: BalancedSampler, steps: int, prefetched_steps: int = 2) -> list[int]:
    """The windows ``steps`` steps used, with the iterator run further ahead as a loader's
    workers run it."""
    it = iter(sampler)
    used = [next(it) for _ in range(steps * BATCH)]
    for _ in range(prefetched_steps * BATCH):
        next(it)
    return used


def test_the_saved_position_counts_the_steps_taken_not_what_the_loader_prefetched():
    index = _index()
    sampler, position = _sampler(index), Position()
    start_epoch(position, sampler, 2)
    whole = list(sampler)
    used = _take(sampler, 7)
    position.epoch_step = 7
    saved = sampler_part(sampler, position, BATCH).save()
    assert saved == {"seed": SEED, "epoch": 2, "global_position": 7 * BATCH}

    resumed = _sampler(index)
    sampler_part(resumed, Position(epoch=2, epoch_step=7), BATCH).load(saved)
    assert used + list(resumed) == whole
    # Checkpointed again three steps later: counted from where the resumed iteration began.
    resumed_used = _take(resumed, 3)
    again = _sampler(index)
    again.load_state_dict(sampler_part(resumed, Position(epoch=2, epoch_step=10), BATCH).save())
    assert used + resumed_used + list(again) == whole


def test_an_epoch_starts_at_its_first_window_whatever_the_last_one_left():
    sampler = _sampler(_index())
    position = Position(step=9, epoch=1, epoch_step=9)
    sampler.set_epoch(1)
    _take(sampler, 9)
    start_epoch(position, sampler, 2)
    assert (position.step, position.epoch, position.epoch_step) == (9, 2, 0)
    assert sampler_part(sampler, position, BATCH).save() == {
        "seed": SEED,
        "epoch": 2,
        "global_position": 0,
    }
    assert list(sampler) == sampler.epoch_order(2).tolist()


@pytest.mark.parametrize("new_world_size", [1, 3, 4])
def test_a_resume_on_another_world_size_starts_each_rank_at_a_whole_batch_skipping_nothing(
    new_world_size,
):
    index, steps = _index(), 5
    old = [_sampler(index, rank, world_size=2) for rank in range(2)]
    used = [window for sampler in old for window in _take(sampler, steps)]
    position = Position(step=steps, epoch_step=steps)
    saved = [sampler_part(sampler, position, BATCH).save() for sampler in old]
    assert saved[0] == saved[1]  # rank 0's is the checkpoint's: it is every rank's
    global_position = saved[0]["global_position"]
    assert global_position == steps * BATCH * 2

    ahead = set()
    for rank in range(new_world_size):
        sampler, here = _sampler(index, rank, new_world_size), Position(step=steps)
        sampler.load_state_dict(saved[0])
        align_to_batch(here, sampler, BATCH)
        share = sampler.epoch_order(0)[rank::new_world_size]
        assert sampler.start == here.epoch_step * BATCH and here.step == steps
        assert list(sampler) == share[here.epoch_step * BATCH :].tolist()
        # At the saved global position, rounded down to whole batches: at most a batch per rank
        # is seen again, none is skipped.
        restart = here.epoch_step * BATCH * new_world_size
        assert 0 <= global_position - restart < BATCH * new_world_size
        ahead |= set(sampler)
    assert ahead | set(used) == set(range(len(index)))  # the epoch draws each window once
    if new_world_size == 3:  # 40 windows: 13 on each rank, so from its 12th (step 3)
        assert here.epoch_step == 3


def _checkpoint(run_name: str, world_size: int) -> dict:
    parts = {name: Part(lambda name=name: {"of": name}, lambda state: None) for name in PARTS}
    position = Position(step=12, epoch=1, epoch_step=2, metrics_rows=30, wandb_run_id="w1")
    rng_states = [{"rank": rank} for rank in range(world_size)]
    cfg = Config.model_validate({"paths": {"run_name": run_name}})
    return assemble(parts, position, rng_states, cfg)


def test_a_saved_checkpoint_reads_back_as_assembled():
    path = Path("runs/a/checkpoints/step-000000012.pt")
    saved = Saved(path, _checkpoint("a", world_size=3))
    assert saved.step == 12 and saved.world_size == 3 and saved.rng_state(2) == {"rank": 2}
    same = saved.position("a")
    assert same == Position(step=12, epoch=1, epoch_step=2, metrics_rows=30, wandb_run_id="w1")
    assert saved.position("b").wandb_run_id is None  # another run continuing it: its own W&B run
    restored: dict = {}
    saved.restore({name: Part(dict, lambda s, n=name: restored.update({n: s})) for name in PARTS})
    assert restored == {name: {"of": name} for name in PARTS}
    broken = Saved(path, {k: v for k, v in saved.state.items() if k != "epoch_step"})
    with pytest.raises(UserError, match=r"step-000000012.pt: checkpoint does not fit this run"):
        broken.position("a")
