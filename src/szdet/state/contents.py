"""What a checkpoint holds: the state of every part of a run that owns one, plus its config.

Each part that decides the rest of a run owns its state: the model, optimizer and scheduler (torch's
``state_dict``), the sampler's position in its epoch, early stopping's best score, the step
monitor's counters, and the loop's own position (``Position``). ``assemble`` asks each for it and
``restore`` hands it back, strictly: every part, every key, every shape. The random streams
(train/rng.py, one per rank) and the config and its fingerprint travel alongside.

The names below are the checkpoint's keys; files written since ``szdet-checkpoint-v1`` began all
have them, so every such file loads (state/checkpoint.py refuses any other format in one line).
Nothing outside state/ reads them: the loop takes a checkpoint read back as a ``Saved``, and the
sampler's position as ``sampler_part`` counts it (train/loop.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import ValidationError

from szdet.config import Config
from szdet.errors import UserError, first_line
from szdet.models import build_model
from szdet.state import bundle
from szdet.state.checkpoint import FORMAT, read_checkpoint

# The parts, in the order they are restored (the scheduler after the optimizer it steers).
PARTS = ("model", "optimizer", "scheduler", "sampler", "early_stop", "monitor")


class Stateful(Protocol):
    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any, /) -> Any: ...


@dataclass(frozen=True)
class Part:
    """How the checkpoint reads and restores one part's state."""

    save: Callable[[], Any]
    load: Callable[[Any], Any]

    @classmethod
    def of(cls, owner: Stateful) -> Part:
        return cls(owner.state_dict, owner.load_state_dict)


@dataclass
class Position:
    """Where the loop stands; saved as top-level keys of the checkpoint."""

    step: int = 0
    epoch: int = 0  # the epoch the next step belongs to
    epoch_step: int = 0  # steps of that epoch already taken
    metrics_rows: int = 0  # rows of metrics.jsonl that this state has seen
    wandb_run_id: str | None = None
    stopped: str | None = None  # why an earlier epoch ended the run ("early_stop", "collapse")

    @classmethod
    def from_state(cls, state: Mapping[str, Any], path: Path) -> Position:
        missing = [f.name for f in fields(cls) if f.name not in state]
        if missing:
            raise UserError(f"{path}: checkpoint does not fit this run (it holds no {missing[0]})")
        return cls(**{f.name: state[f.name] for f in fields(cls)})


class EpochSampler(Protocol):
    """What the checkpoint needs of the training sampler (data/windows.py BalancedSampler)."""

    epoch: int
    start: int  # this rank's sample where the epoch's iteration began (0 unless resumed)

    def set_epoch(self, epoch: int, start: int = 0) -> None: ...
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def sampler_part(sampler: EpochSampler, position: Position, batch_size: int) -> Part:
    """The sampler's part: where this rank stands in its epoch's draw, counted from the steps
    taken, ``batch_size`` samples each. The loader prefetches, so what the sampler has yielded
    runs ahead of what the steps used; the sampler counts ``consumed`` from its ``start``."""
    return Part(
        lambda: sampler.state_dict(consumed=position.epoch_step * batch_size - sampler.start),
        sampler.load_state_dict,
    )


def start_epoch(position: Position, sampler: EpochSampler, epoch: int) -> None:
    """Stand at the start of ``epoch``, no step of it taken: what the next checkpoint says."""
    position.epoch, position.epoch_step = epoch, 0
    sampler.set_epoch(epoch)


def assemble(
    parts: Mapping[str, Part], position: Position, rng_states: list[Any], cfg: Config
) -> dict[str, Any]:
    """The checkpoint of a run: ``rng_states`` holds one entry per rank."""
    if set(parts) != set(PARTS):
        raise ValueError(f"a checkpoint needs exactly the parts {PARTS}, got {sorted(parts)}")
    return {
        **asdict(position),
        **{name: parts[name].save() for name in PARTS},
        "rng": rng_states,
        "world_size": len(rng_states),
        "config": cfg.model_dump(mode="json"),
        "fingerprint": cfg.fingerprint(),
        "torch_version": str(torch.__version__),
    }


def restore(parts: Mapping[str, Part], state: Mapping[str, Any], path: Path) -> None:
    """Give each part its state back; a file that does not fit them is refused in one line."""
    for name in PARTS:
        if name not in state:
            raise UserError(f"{path}: checkpoint does not fit this model (it holds no {name})")
        restore_part(parts[name], state[name], path)


@dataclass(frozen=True)
class Saved:
    """A checkpoint read back to continue its run (state/resume.py ``read_for_resume``)."""

    path: Path
    state: dict[str, Any]  # the file's dict, laid out as ``assemble`` writes it

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def position(self, run_name: str) -> Position:
        """Where the loop stood. The W&B run goes on only under the run name that wrote it:
        another run continuing this checkpoint gets its own."""
        position = Position.from_state(self.state, self.path)
        if self.state["config"]["paths"]["run_name"] != run_name:
            position.wandb_run_id = None
        return position

    def restore(self, parts: Mapping[str, Part]) -> None:
        restore(parts, self.state, self.path)

    @property
    def world_size(self) -> int:
        """The processes that wrote it: one random-stream state each."""
        return len(self.state["rng"])

    def rng_state(self, rank: int) -> Any:
        return self.state["rng"][rank]


def checkpoint_config(ckpt: Mapping[str, Any], path: Path) -> Config:
    """The config a checkpoint was trained with, checked against its stored fingerprint."""
    try:
        cfg = Config.model_validate(ckpt["config"])
    except (KeyError, ValidationError) as e:
        raise UserError(f"{path}: checkpoint holds no valid szdet config ({e!s:.200})") from None
    if cfg.fingerprint() != ckpt.get("fingerprint"):
        raise UserError(f"{path}: checkpoint's config does not match its stored fingerprint")
    return cfg


@dataclass(frozen=True)
class Inference:
    """What `szdet evaluate`, `detect` and `export` need of a checkpoint or bundle."""

    cfg: Config
    model: torch.nn.Module  # weights loaded strictly, on the CPU, in eval mode
    step: int | None  # the training steps behind the weights
    operating_points: dict[str, Any] | None  # a bundle's; None for a checkpoint


def load_for_inference(path: str | Path) -> Inference:
    """A training checkpoint or a detector bundle (state/bundle.py), ready to run."""
    path = Path(path)
    ckpt = read_checkpoint(path, formats=(FORMAT, bundle.FORMAT))
    cfg = checkpoint_config(ckpt, path)
    if ckpt["format"] == bundle.FORMAT:
        bundle.check_bundle(ckpt, cfg, path)
    if not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{path}: checkpoint holds no model weights")
    model = build_model(cfg.model)
    restore_part(Part.of(model), ckpt["model"], path)
    step = ckpt["provenance"].get("step") if "provenance" in ckpt else ckpt.get("step")
    return Inference(cfg, model.eval(), step, ckpt.get("operating_points"))


def restore_part(part: Part, state: Any, path: Path) -> None:
    """One part's state, strictly: every key, every shape. A file from another szdet version, or
    a doctored one, is refused in one line naming it."""
    try:
        part.load(state)
    except (KeyError, ValueError, RuntimeError) as e:
        reason = first_line(e)[:160]
        raise UserError(f"{path}: checkpoint does not fit this model ({reason})") from None
