"""When to stop: no better dev sensitivity at the first of ``evaluate.fa_targets_per_24h`` (10 by
default) for ``patience`` epochs, or a collapsed model.

Sensitivity at a fixed FA rate moves in steps of one seizure and saturates on easy data, so equal
sensitivities are ranked by sample AUROC: the best epoch is the first with the highest
(sensitivity, AUROC) pair.

A dev split without seizure events (a small data.max_recordings subset, a wrong data.dev_split)
ranks nothing: every score is NaN. Such a run is warned about when it starts and when it ends,
never stops early, and saves every epoch as best.pt, which so ends as the last checkpoint, the
one evaluate and detect are pointed at. Not refused: smoke runs on tiny subsets are meant to run
(the collapse check allows for them too), and the last epoch is the best guess there is.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from szdet.evaluate.metrics import target_key

if TYPE_CHECKING:
    from szdet.config import Config
    from szdet.data.manifest import CacheSplit

log = logging.getLogger(__name__)

UNRANKED = "%s: dev has no seizure events, so validation cannot rank checkpoints"


@dataclass(frozen=True)
class Verdict:
    improved: bool  # this epoch is the best so far: save it as best.pt
    stop: str | None  # None, or why training ends now ("early_stop" or "collapse")
    reason: str = ""
    note: str = ""  # what the epoch's log line adds: " (best so far)", say


@dataclass
class EarlyStopping:
    patience: int
    collapse_floor: float
    collapse_after_epochs: int
    fa_target: str = "10"  # the sens_at_fa key followed (see metrics.target_key)
    unranked_dev: str = ""  # the dev split folder when it holds no seizure event
    epochs: int = 0  # the run's, for the closing warning of an unranked run
    best_score: float = -math.inf
    best_auroc: float = -math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0

    @classmethod
    def for_run(cls, cfg: Config, dev: CacheSplit, is_main: bool) -> EarlyStopping:
        unranked = "" if any(r.events for r in dev.recordings) else str(dev.dir)
        if unranked and is_main:
            log.warning(
                UNRANKED + ": early stopping is off, and best.pt will be the last checkpoint, "
                "not the best",
                unranked,
            )
        return cls(
            cfg.train.early_stop_patience,
            cfg.train.collapse_auroc_floor,
            cfg.train.collapse_after_epochs,
            fa_target=target_key(cfg.evaluate.fa_targets_per_24h[0]),
            unranked_dev=unranked,
            epochs=cfg.train.epochs,
        )

    def update(self, epoch: int, score: float, auroc: float) -> Verdict:
        """Judge epoch ``epoch`` (0-based) from its dev sens@10FA/24h ``score`` and sample AUROC.

        A NaN score (no seizure on dev, say) never counts as an improvement.
        """
        if self.unranked_dev:
            return self._unranked(epoch)
        improved = not math.isnan(score) and (
            score > self.best_score or (score == self.best_score and auroc > self.best_auroc)
        )
        if improved:
            self.best_score, self.best_auroc, self.best_epoch = score, auroc, epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        note = " (best so far)" if improved else ""
        epochs_done = epoch + 1
        # A NaN AUROC is undefined (dev holds one class only, e.g. a small subset without
        # seizures), not evidence of collapse: a constant model scores 0.5, below any sane floor.
        if epochs_done >= self.collapse_after_epochs and auroc < self.collapse_floor:
            return Verdict(
                improved,
                "collapse",
                f"dev AUROC {auroc:.3f} below the floor {self.collapse_floor} after "
                f"{epochs_done} epochs: the model has collapsed",
                note,
            )
        if self.epochs_without_improvement >= self.patience:
            return Verdict(
                improved,
                "early_stop",
                f"no better dev sensitivity at {self.fa_target} FA/24h for {self.patience} epochs "
                f"(best {self.best_score:.3f} at epoch {self.best_epoch})",
                note,
            )
        return Verdict(improved, None, note=note)

    def _unranked(self, epoch: int) -> Verdict:
        """Every epoch of an unranked run is kept as best.pt, so the last one ends there."""
        if epoch + 1 >= self.epochs:
            log.warning(
                UNRANKED + ": training ends; best.pt is the last checkpoint (epoch %d), not the "
                "best",
                self.unranked_dev,
                epoch + 1,
            )
        return Verdict(True, None, note=" (kept as best.pt: dev cannot rank epochs)")

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best_score", "best_auroc", "best_epoch", "epochs_without_improvement"):
            setattr(self, key, state[key])
