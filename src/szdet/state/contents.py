"""What a checkpoint holds: the state of every part of a run that owns one, plus its config.

Each part that decides the rest of a run owns its state: the model, optimizer and scheduler (torch's
``state_dict``), the sampler's position in its epoch, early stopping's best score, the step
monitor's counters, and the loop's own position (``Position``). ``assemble`` asks each for it and
``restore`` hands it back, strictly: every part, every key, every shape. The random streams
(train/rng.py, one per rank) and the config and its fingerprint travel alongside.

The names below are the checkpoint's keys; files written since ``szdet-checkpoint-v1`` began all
have them, so every such file loads (state/checkpoint.py refuses any other format in one line).
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
