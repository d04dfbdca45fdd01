"""When to stop: no better dev sensitivity at the first of ``evaluate.fa_targets_per_24h`` (10 by
default) for ``patience`` epochs, or a collapsed model.

Sensitivity at a fixed FA rate moves in steps of one seizure and saturates on easy data, so equal
sensitivities are ranked by sample AUROC: the best epoch is the first with the highest
(sensitivity, AUROC) pair.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from szdet.config import Config
from szdet.evaluate.metrics import target_key


@dataclass(frozen=True)
class Verdict:
    improved: bool  # this epoch is the best so far: save it as best.pt
    stop: str | None  # None, or why training ends now ("early_stop" or "collapse")
    reason: str = ""


@dataclass
class EarlyStopping:
    patience: int
    collapse_floor: float
    collapse_after_epochs: int
    fa_target: str  # the sens_at_fa key followed, e.g. "10" (see metrics.target_key)
    best_score: float = -math.inf
    best_auroc: float = -math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0

    @classmethod
    def from_config(cls, cfg: Config) -> EarlyStopping:
        return cls(
            cfg.train.early_stop_patience,
            cfg.train.collapse_auroc_floor,
            cfg.train.collapse_after_epochs,
            target_key(cfg.evaluate.fa_targets_per_24h[0]),
        )

    def update(self, epoch: int, score: float, auroc: float) -> Verdict:
        """Judge epoch ``epoch`` (0-based) from its dev sensitivity at ``fa_target`` FA/24h
        (``score``) and sample AUROC.

        A NaN score (no seizure on dev, say) never counts as an improvement.
        """
        improved = not math.isnan(score) and (
            score > self.best_score or (score == self.best_score and auroc > self.best_auroc)
        )
        if improved:
            self.best_score, self.best_auroc, self.best_epoch = score, auroc, epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        epochs_done = epoch + 1
        # A NaN AUROC is undefined (dev holds one class only, e.g. a small subset without
        # seizures), not evidence of collapse: a constant model scores 0.5, below any sane floor.
        if epochs_done >= self.collapse_after_epochs and auroc < self.collapse_floor:
            return Verdict(
                improved,
                "collapse",
                f"dev AUROC {auroc:.3f} below the floor {self.collapse_floor} after "
                f"{epochs_done} epochs: the model has collapsed",
            )
        if self.epochs_without_improvement >= self.patience:
            return Verdict(
                improved,
                "early_stop",
                f"no better dev sensitivity at {self.fa_target} FA/24h for {self.patience} epochs "
                f"(best {self.best_score:.3f} at epoch {self.best_epoch})",
            )
        return Verdict(improved, None)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best_score", "best_auroc", "best_epoch", "epochs_without_improvement"):
            setattr(self, key, state[key])
