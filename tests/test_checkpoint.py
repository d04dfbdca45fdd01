"""Checkpoints: atomic saves, keep-last-K + best, safe strict loading, clear refusals."""

import logging
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from szdet.config import Config
from szdet.errors import UserError
from szdet.models import build_model
from szdet.state import checkpoint as ckpt_mod
from szdet.state.checkpoint import (
    BEST_NAME,
    CORRUPT_SUFFIX,
    CheckpointTimer,
    latest_checkpoint,
    list_checkpoints,
    prepare_directory,
    read_checkpoint,
    save_checkpoint,
)
from szdet.state.contents import load_for_inference
from szdet.state.resume import (
    check_no_later_checkpoints,
    check_resumable,
    check_same_model,
    read_for_resume,
    resolve_resume,
)
from szdet.train.rng import capture_rng_state, restore_rng_state, seed_everything
from szdet.train.schedule import WarmupCosine

CPU = torch.device("cpu")


def training_state(step: int, cfg: Config | None = None) -> dict:
    """A state like the loop's: model, AdamW, scheduler, RNGs, nested plain types."""
    cfg = cfg or Config()
    torch.manual_seed(step)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = WarmupCosine(opt, 2, 10, 0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    return {
        "step": step,
        "epoch": 1,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": [capture_rng_state(CPU)],
        "sampler": {"epoch": 1, "position": 32},
        "wandb_run_id": "abc123",
        "config": cfg.model_dump(mode="json"),
        "fingerprint": cfg.fingerprint(),
    }


def test_round_trip_with_weights_only_restores_rng_exactly(tmp_path):
    seed_everything(7)
    state = training_state(5)
    state["rng"] = [capture_rng_state(CPU)]
    expected = (random.random(), np.random.rand(), torch.rand(3))
    path = save_checkpoint(state, tmp_path, keep_last=2)

    loaded = read_checkpoint(path)  # weights_only=True inside
    assert loaded["step"] == 5 and loaded["sampler"] == {"epoch": 1, "position": 32}
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    seed_everything(99)
    restore_rng_state(loaded["rng"][0], CPU)
    assert random.random() == expected[0]
    assert np.random.rand() == expected[1]
    assert torch.equal(torch.rand(3), expected[2])


def test_keep_last_k_plus_best(tmp_path):
    for step in (1, 2):
        save_checkpoint(training_state(step), tmp_path, keep_last=2)
    save_checkpoint(training_state(3), tmp_path, keep_last=2, best=True)
    save_checkpoint(training_state(4), tmp_path, keep_last=2)
    save_checkpoint(training_state(5), tmp_path, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000000004.pt",
        "step-000000005.pt",
    ]
    assert latest_checkpoint(tmp_path).name == "step-000000005.pt"
    assert read_checkpoint(tmp_path / BEST_NAME)["step"] == 3  # survives pruning


def test_best_is_written_before_the_step_file(tmp_path, monkeypatch):
    real_copy = ckpt_mod.shutil.copyfile

    def crash_on_copy(src, dst):
        raise OSError("killed between the two files")

    monkeypatch.setattr(ckpt_mod.shutil, "copyfile", crash_on_copy)
    with pytest.raises(OSError):
        save_checkpoint(training_state(7), tmp_path, keep_last=2, best=True)
    # Resume would start from an earlier checkpoint and redo this evaluation: best.pt is complete.
    assert read_checkpoint(tmp_path / BEST_NAME)["step"] == 7
    assert list_checkpoints(tmp_path) == []
    monkeypatch.setattr(ckpt_mod.shutil, "copyfile", real_copy)
    path = save_checkpoint(training_state(8), tmp_path, keep_last=2, best=True)
    assert path.read_bytes() == (tmp_path / BEST_NAME).read_bytes()


def test_failing_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    first = save_checkpoint(training_state(1), tmp_path, keep_last=1)
    before = first.read_bytes()
    real_save = torch.save

    def crash_half_way(obj, f):
        real_save(obj, f)
        f.truncate(100)  # a partly written file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(training_state(2), tmp_path, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no partial file, no prune
    assert first.read_bytes() == before
    assert read_checkpoint(first)["step"] == 1


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / ".step-000000009.pt.4242.tmp").write_bytes(b"half a checkpoint")
    save_checkpoint(training_state(1), tmp_path, keep_last=1)
    prepare_directory(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000001.pt"]


def test_truncated_checkpoint_is_refused_with_its_name(tmp_path):
    path = save_checkpoint(training_state(1), tmp_path, keep_last=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"^{path}: unreadable checkpoint, truncated or corrupt"):
        read_checkpoint(path)


def test_a_flipped_bit_inside_a_tensor_is_refused(tmp_path):
    path = save_checkpoint(training_state(1), tmp_path, keep_last=1)
    data = bytearray(path.read_bytes())
    weight = data.find(training_state(1)["model"]["weight"].numpy().tobytes())
    assert weight > 0
    data[weight + 1] ^= 0x01  # same size, valid zip structure, one weight changed
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"^{path}: corrupt checkpoint \(CRC mismatch in "):
        read_checkpoint(path)


def _flip_a_weight_bit(path):
    data = bytearray(path.read_bytes())
    data[data.find(read_checkpoint(path)["model"]["weight"].numpy().tobytes()) + 1] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_falls_back_past_corrupt_checkpoints_and_sets_them_aside(tmp_path, caplog):
    good, flipped, truncated = (
        save_checkpoint(training_state(step), tmp_path, keep_last=3) for step in (1, 2, 3)
    )
    _flip_a_weight_bit(flipped)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="szdet.state.checkpoint"):
        assert resolve_resume("auto", tmp_path) == good
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{truncated}: unreadable checkpoint, truncated or corrupt (")
    assert warnings[1].startswith(f"{flipped}: corrupt checkpoint (CRC mismatch in ")
    assert all(w.endswith(f"resuming from {good.name}") for w in warnings)
    # Kept as evidence under other names: not resumed, counted or rotated away.
    aside = sorted(p.name for p in tmp_path.glob(f"*{CORRUPT_SUFFIX}"))
    assert aside == [f"{flipped.name}{CORRUPT_SUFFIX}", f"{truncated.name}{CORRUPT_SUFFIX}"]
    assert list_checkpoints(tmp_path) == [good]
    check_no_later_checkpoints(tmp_path, 1, good)  # the resumed run may write steps 2 and 3
    save_checkpoint(training_state(4), tmp_path, keep_last=2)  # cadence changed: step 4 next
    assert [p.name for p in list_checkpoints(tmp_path)] == [good.name, "step-000000004.pt"]
    assert resolve_resume("true", tmp_path) == tmp_path / "step-000000004.pt"


def test_resume_is_refused_when_no_checkpoint_reads_back_and_a_named_one_must(tmp_path):
    first, second = (save_checkpoint(training_state(s), tmp_path, keep_last=2) for s in (1, 2))
    for path in (first, second):
        path.write_bytes(path.read_bytes()[:1000])
    for resume in ("auto", "true"):
        with pytest.raises(UserError) as refused:
            resolve_resume(resume, tmp_path)
        message = str(refused.value)
        assert message.startswith(f"{tmp_path}: no checkpoint here reads back (newest of 2: ")
        assert "\n" not in message and str(second) in message
    assert list_checkpoints(tmp_path) == [first, second]  # left as they were: nothing resumed
    # An explicit --resume PATH is the user's choice: refused in one line, no fallback.
    assert resolve_resume(str(second), tmp_path) == second
    with pytest.raises(UserError, match=rf"^{second}: unreadable checkpoint, truncated or corrupt"):
        read_for_resume(second, Config(), tmp_path)


def test_garbage_and_missing_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(UserError, match="not a PyTorch zip archive"):
        read_checkpoint(garbage)
    flipped = save_checkpoint(training_state(1), tmp_path, keep_last=1)
    data = bytearray(flipped.read_bytes())
    data[-200:] = bytes(200)  # the zip directory at the end is destroyed
    flipped.write_bytes(bytes(data))
    with pytest.raises(UserError, match="unreadable checkpoint, truncated or corrupt"):
        read_checkpoint(flipped)
    with pytest.raises(UserError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")


class Foreign:  # an arbitrary pickled object: weights_only loading must refuse it
    pass


def test_foreign_files_are_refused(tmp_path):
    pickled = tmp_path / "object.pt"
    torch.save({"format": ckpt_mod.FORMAT, "payload": Foreign()}, pickled)
    with pytest.raises(UserError, match=r"refused: the checkpoint's pickle asks for .*\.Foreign"):
        read_checkpoint(pickled)
    plain = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, plain)
    with pytest.raises(UserError, match=r"not a szdet checkpoint \(format None"):
        read_checkpoint(plain)
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError, match=f"^{raw_pickle}: not a szdet checkpoint"):
        read_checkpoint(raw_pickle)


class RunsACommand:  # pickles as a call of os.system: what a malicious checkpoint would hold
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_calling_a_function_is_refused_as_such_and_never_run(tmp_path):
    ran = tmp_path / "ran"
    evil = tmp_path / "step-000000001.pt"
    torch.save({"format": ckpt_mod.FORMAT, "step": RunsACommand(f"touch {ran}")}, evil)
    with pytest.raises(UserError) as e:
        read_checkpoint(evil)
    assert str(e.value) == (
        f"{evil}: refused: the checkpoint's pickle asks for {os.system.__module__}.system (not "
        "plain weights; szdet loads checkpoints with weights_only=True)"
    )
    assert not ran.exists()


def test_other_architecture_is_refused_naming_the_difference(tmp_path):
    theirs = Config.model_validate({"model": {"node_dim": 32, "node_layers": 2}})
    path = save_checkpoint(training_state(1, theirs), tmp_path, keep_last=1)
    ckpt = read_checkpoint(path)
    check_same_model(ckpt, theirs, path)  # same config: accepted
    with pytest.raises(UserError) as e:
        check_same_model(ckpt, Config(), path)
    assert str(e.value) == (
        f"{path}: checkpoint is for a different model (model.node_dim: 32 in the checkpoint, 64 now;"
        " model.node_layers: 2 in the checkpoint, 6 now)"
    )


def test_load_for_inference_returns_config_and_model(tmp_path):
    cfg = Config.model_validate({"model": {"node_dim": 32}, "evaluate": {"frame_hz": 2.0}})
    state = training_state(3, cfg)
    state["model"] = build_model(cfg.model).state_dict()
    path = save_checkpoint(state, tmp_path, keep_last=1)
    loaded_file = load_for_inference(path)
    got_cfg, model = loaded_file.cfg, loaded_file.model
    assert got_cfg == cfg and loaded_file.step == 3 and loaded_file.operating_points is None
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == state["model"].keys()
    assert all(torch.equal(loaded[k], v) for k, v in state["model"].items())


def test_load_for_inference_refuses_weights_of_another_model_in_one_line(tmp_path):
    state = training_state(3)  # a Linear(3, 2)'s weights under the default model's config
    path = save_checkpoint(state, tmp_path, keep_last=1)
    with pytest.raises(UserError) as e:
        load_for_inference(path)
    message = str(e.value)
    assert message.startswith(f"{path}: checkpoint does not fit this model (")
    assert "\n" not in message


def test_resumable_fields_come_from_the_config_markers():
    base = Config()
    ckpt = {"config": base.model_dump(mode="json"), "fingerprint": base.fingerprint()}
    operational = base.model_copy(deep=True)
    operational.train.num_workers = 1  # marked RESUMABLE
    operational.paths.run_name = "elsewhere"  # a RESUMABLE section
    operational.model.kernels = "pure"  # marked EXECUTION
    operational.data.expected_recordings = {"train": 5}  # a dict field: its leaves differ
    changed = check_resumable(ckpt, operational, Path("c.pt"))
    assert len(changed) == 4
    decisive = base.model_copy(deep=True)
    decisive.train.lr = 0.5
    with pytest.raises(
        UserError,
        match=r"c.pt: resuming would change how this run goes on "
        r"\(train.lr: 0.001 in the checkpoint, 0.5 now\)",
    ):
        check_resumable(ckpt, decisive, Path("c.pt"))


def test_tampered_config_is_refused(tmp_path):
    state = training_state(3)
    state["config"]["model"]["node_dim"] = 8  # config no longer matches its fingerprint
    path = save_checkpoint(state, tmp_path, keep_last=1)
    with pytest.raises(UserError, match="does not match its stored fingerprint"):
        load_for_inference(path)


def test_timer_is_due_by_steps_or_minutes(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ckpt_mod.time, "monotonic", lambda: clock[0])
    timer = CheckpointTimer(every_min=10, every_steps=4)
    assert [s for s in range(1, 10) if timer.due(s)] == [4, 8]
    clock[0] += 601
    assert timer.due(5)
    timer.saved()
    assert not timer.due(5)
    assert not CheckpointTimer(every_min=10, every_steps=None).due(4)


def test_a_checkpoint_from_before_a_new_config_field_still_resumes(tmp_path):
    """Its config lacks the field (data.montage came after szdet-checkpoint-v1's first files):
    read with the field's default, it is the same run."""
    state = training_state(4)
    del state["config"]["data"]["montage"]
    path = save_checkpoint(state, tmp_path, keep_last=1)
    assert read_for_resume(path, Config(), tmp_path).step == 4
    # ... and it is still the referential run it was: a bipolar one is another model.
    bipolar = Config.model_validate({"data": {"montage": "bipolar"}, "model": {"in_channels": 18}})
    with pytest.raises(UserError, match=r"different model \(model.in_channels: 19 in the check"):
        read_for_resume(path, bipolar, tmp_path)
