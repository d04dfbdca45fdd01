"""Channel names and montages: what a recording offers, and its exact conversion to ``data.montage``.

The model reads one of three montages:

- ``referential``: the 19 10-20 electrodes (CHANNELS_19), each against the file's own reference
  (``-REF``, ``-LE``, a common average ``-Avg``, or unnamed);
- ``average``: the same 19 re-referenced to their common average, so that recordings against
  different references look alike;
- ``bipolar``: the 18 derivations of the double banana (DOUBLE_BANANA).

The steps, each a function here (szdet/data/edf.py calls them around its signal processing):

1. ``resolve_label``: one EDF label -> an electrode (``EEG Fp1-REF``, ``Fp1-Avg``, ``EEG T7-LE``,
   bare ``Fp1``), a bipolar derivation (``FP1-F7``, ``T7-P7``) or neither (``EKG1``, ``PHOTIC-REF``);
2. ``take_inventory``: every label of a file resolved, the first of each name kept and any repeat
   noted (CHB-MIT records ``T8-P8`` twice);
3. ``plan_montage``: which rows to read (electrodes, or recorded derivations), and the matrix that
   turns them into the montage; a recording that cannot feed it raises MontageError with the reason
   (differences never give back the electrodes, so a bipolar file cannot feed the other two);
4. ``MontagePlan.convert``, after resampling, filtering and interpolation (linear, the same for
   every row, so they commute with the conversion) and before the robust z-score (which does not).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from szdet.config import CHANNELS_19, DOUBLE_BANANA, Montage, montage_channels
from szdet.errors import UserError

SYNONYMS = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}  # 10-10 name -> the 10-20 one
_PREFIX = re.compile(r"^EEG\s+")
_REFERENCE = re.compile(r"-(REF|LE|AR|AVG)$")  # TUSZ's averaged / linked ears; a common average
# A 10-10 (or mastoid/ear) electrode name: a derivation's two ends must both look like one, so
# that EKG1-EKG2 or LOC-ROC never pass for EEG.
_ELECTRODE = re.compile(r"^(?:NZ|FP|AF|FT|FC|TP|CP|PO|[NFTCPOIAM])(?:\d{1,2}|Z)$")


_PADDING = str.maketrans({"\x00": " ", "\xa0": " "})


class MontageError(UserError):
    """A recording that cannot feed the configured montage; the message says why."""


# --- 1. names ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    kind: Literal["electrode", "derivation", "other"]
    name: str  # FP1, T3 (10-20 names) / T3-T5 (as recorded: first minus second) / EKG1


def standard_case(channel: str) -> str:
    """A channel in the 10-20 system's own spelling: FP1 -> Fp1, FZ -> Fz, FP1-F7 -> Fp1-F7
    (mne's positions and the SzCORE events TSV write them so)."""
    return "-".join(e[0] + e[1:].lower() for e in channel.split("-"))


def electrodes(channel: str) -> frozenset[str]:
    """The electrodes a channel name reads, in 10-20 names: ``FP1`` -> {FP1}; ``FP1-F7`` ->
    {FP1, F7}; ``T7-P7`` -> {T3, T5}."""
    return frozenset(
        SYNONYMS.get(part, part) for part in (p.strip().upper() for p in channel.split("-")) if part
    )


def _electrode(token: str) -> str | None:
    token = token.strip()
    return SYNONYMS.get(token, token) if _ELECTRODE.match(token) else None


def resolve_label(label: str) -> Resolved:
    """``EEG Fp1-REF`` / ``Fp1-Avg`` / ``fp1`` -> electrode FP1; ``EEG T7-LE`` -> electrode T3;
    ``T7-P7`` -> derivation T3-T5; ``EKG1``, ``PHOTIC-REF``, ``--0`` -> other."""
    # NUL and NBSP padding (some writers pad with them, not spaces) is padding here too.
    name = _PREFIX.sub("", label.translate(_PADDING).strip().upper()).strip()
    bare = _REFERENCE.sub("", name)
    if bare != name or "-" not in name:
        electrode = _electrode(bare)
        return Resolved("electrode", electrode) if electrode else Resolved("other", name)
    parts = name.split("-")
    ends = [_electrode(p) for p in parts] if len(parts) == 2 else [None]
    if all(ends) and ends[0] != ends[1]:
        return Resolved("derivation", f"{ends[0]}-{ends[1]}")
    return Resolved("other", name)


# --- 2. what a file offers --------------------------------------------------------------------


@dataclass(frozen=True)
class Inventory:
    electrodes: dict[str, int]  # 10-20 name -> header index of its first label
    derivations: dict[str, int]  # "A-B" as recorded -> header index of its first label
    repeats: dict[str, list[int]]  # name -> header indices of every label giving it, if > 1


def take_inventory(labels: list[str]) -> Inventory:
    """Resolve every label; where several give one name, the first is the one used."""
    seen: dict[tuple[str, str], list[int]] = {}
    for index, label in enumerate(labels):
        resolved = resolve_label(label)
        if resolved.kind != "other":
            seen.setdefault((resolved.kind, resolved.name), []).append(index)
    return Inventory(
        electrodes={name: at[0] for (kind, name), at in seen.items() if kind == "electrode"},
        derivations={name: at[0] for (kind, name), at in seen.items() if kind == "derivation"},
        repeats={name: at for (_, name), at in seen.items() if len(at) > 1},
    )


# --- 3. the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MontagePlan:
    """Rows to read and the exact linear map from them to the montage's channels."""

    montage: Montage
    rows: tuple[str, ...]  # CHANNELS_19, or the recorded derivations used
    read: dict[str, int]  # row -> header index, for the rows the file holds (the others are
    # electrodes to interpolate)
    matrix: np.ndarray | None  # float32 (len(montage channels), len(rows)); None: rows as they are
    notes: tuple[str, ...]  # e.g. a repeated label, and which copy is used

    @property
    def channels(self) -> tuple[str, ...]:
        return montage_channels(self.montage)

    def convert(self, x: np.ndarray) -> np.ndarray:
        """float32 (len(rows), n) -> (len(channels), n)."""
        return x if self.matrix is None else self.matrix @ x


def plan_montage(labels: list[str], montage: Montage, interpolable: list[str]) -> MontagePlan:
    """How a file with these header ``labels`` feeds ``montage``; MontageError says why not.

    Electrodes are used when the file holds all 19 but for ``interpolable`` ones (spherical splines
    fill those); for the bipolar montage, recorded derivations otherwise (direct, reversed, or
    summed along a chain: A-C = (A-B) + (B-C) exactly). A missing derivation has no exact
    substitute, so it skips the file.
    """
    found = take_inventory(labels)
    missing = [c for c in CHANNELS_19 if c not in found.electrodes and c not in interpolable]
    rows: tuple[str, ...]
    if not missing:
        rows, read = CHANNELS_19, {c: i for c, i in found.electrodes.items() if c in CHANNELS_19}
        matrix = _electrode_matrix(montage)
    elif montage == "bipolar" and found.derivations:
        matrix, used = _derivation_matrix(found.derivations)
        rows, read = tuple(used), {d: found.derivations[d] for d in used}
    elif found.derivations:
        shown = ", ".join(labels[i] for i in sorted(found.derivations.values())[:3])
        raise MontageError(
            f"bipolar recording ({shown}, ...): the {montage} montage needs every electrode "
            "against one reference, which differences cannot give (a data.montage: bipolar "
            "model reads it)"
        )
    else:
        raise MontageError(f"missing required channel(s) {', '.join(missing)}")
    notes = tuple(
        f"channel {name} appears {len(at)} times ({', '.join(labels[i] for i in at)}): "
        f"the first is used"
        for name, at in found.repeats.items()
        if name in read
    )
    return MontagePlan(montage, rows, read, matrix, notes)


def _electrode_matrix(montage: Montage) -> np.ndarray | None:
    """The 19 electrodes (against any one reference) -> the montage."""
    n = len(CHANNELS_19)
    if montage == "referential":
        return None
    if montage == "average":
        return (np.eye(n) - np.full((n, n), 1 / n)).astype(np.float32)
    matrix = np.zeros((len(DOUBLE_BANANA), n), dtype=np.float32)
    for i, derivation in enumerate(DOUBLE_BANANA):
        plus, minus = derivation.split("-")
        matrix[i, CHANNELS_19.index(plus)], matrix[i, CHANNELS_19.index(minus)] = 1.0, -1.0
    return matrix


def _derivation_matrix(recorded: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    """Each double-banana derivation as a +-1 sum of recorded ones (the shortest chain); the
    matrix over the recorded derivations used, in header order."""
    paths, unreachable = {}, []
    for target in DOUBLE_BANANA:
        path = _chain(recorded, *target.split("-"))
        if path is None:
            unreachable.append(target)
        paths[target] = path
    if unreachable:
        raise MontageError(
            f"missing derivation(s) {', '.join(unreachable)}: not recorded, nor a chain of "
            "recorded ones (a bipolar recording's gaps cannot be interpolated)"
        )
    used = sorted({d for path in paths.values() for d, _ in path or ()}, key=recorded.__getitem__)
    matrix = np.zeros((len(DOUBLE_BANANA), len(used)), dtype=np.float32)
    for i, target in enumerate(DOUBLE_BANANA):
        for derivation, sign in paths[target] or ():
            matrix[i, used.index(derivation)] += sign
    return matrix, used


def _chain(recorded: dict[str, int], start: str, end: str) -> list[tuple[str, float]] | None:
    """Recorded derivations, each with sign +-1, whose sum is start - end; None if none connect.
    Breadth first, neighbours in header order: the fewest terms, chosen deterministically."""
    links: dict[str, list[tuple[str, str, float]]] = {}
    for derivation in sorted(recorded, key=recorded.__getitem__):
        a, b = derivation.split("-")
        links.setdefault(a, []).append((b, derivation, 1.0))  # a - b
        links.setdefault(b, []).append((a, derivation, -1.0))  # b - a = -(a - b)
    came_from: dict[str, tuple[str, str, float] | None] = {start: None}
    queue = deque([start])
    while queue and end not in came_from:
        node = queue.popleft()
        for neighbour, derivation, sign in links.get(node, []):
            if neighbour not in came_from:
                came_from[neighbour] = (node, derivation, sign)
                queue.append(neighbour)
    if end not in came_from:
        return None
    path, node = [], end
    while (step := came_from[node]) is not None:
        node, derivation, sign = step
        path.append((derivation, sign))
    return path[::-1]
