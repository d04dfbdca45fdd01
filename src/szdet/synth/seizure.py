"""Synthetic seizures: where they start, how they spread, what their discharge looks like.

A focal seizure starts on one electrode and recruits the others with a delay and a phase lag that
grow with distance (a travelling wave) and an amplitude that falls with it; a generalised one
starts everywhere within half a second, nearly in phase. The discharge is a sharp rhythm whose
frequency glides down (e.g. 7 Hz -> 3 Hz; absences stay near 3 Hz) and whose amplitude rises
then falls; the background under it desynchronises, tonic-clonic seizures carry muscle, and a
brief post-ictal slowing follows on the recruited electrodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from szdet.config import CHANNELS_19
from szdet.synth.eeg import (
    ELECTRODES,
    INDEX,
    POSITIONS,
    Array,
    band_noise,
    narrowband_noise,
    shaped_noise,
    taper,
)

FOCAL_LABELS = ("fnsz", "cpsz", "spsz")
GENERALISED_LABELS = ("gnsz", "tcsz", "absz")
# Electrodes over the brain that a seizure can recruit (not the eye electrodes).
CEREBRAL = tuple(e for e in ELECTRODES if e not in ("LOC", "ROC"))
# A seizure starts on an electrode that the TCP channels of every setup use (not FZ, PZ, T1, T2, A1,
# A2), so the earliest per-channel annotation is the seizure's start in every setup.
ONSET_ELECTRODES = frozenset(CHANNELS_19) - {"FZ", "PZ"}
# Focal seizures start most often over the temporal lobes, then frontal.
_FOCUS_PRIOR = np.array(
    [{"T3": 3, "T4": 3, "F7": 2, "F8": 2, "T5": 1.5, "T6": 1.5}.get(e, 1.0)
     if e in ONSET_ELECTRODES else 0.0 for e in CEREBRAL]
)  # fmt: skip
_FOCUS_PRIOR /= _FOCUS_PRIOR.sum()
_XY = np.array([POSITIONS[e] for e in CEREBRAL])
# Recruited electrodes: a seizure's final weight on an electrode is at least this (else none at all).
MIN_WEIGHT = 0.2
# A bipolar channel shows the seizure (and is annotated) from this relative amplitude up.
VISIBLE_WEIGHT = 0.35


@dataclass(frozen=True)
class Seizure:
    """One seizure: its timing and label (also the annotation) and how it is drawn."""

    start_s: float
    stop_s: float
    label: str
    onset_delay_s: dict[str, float]  # recruited electrodes -> delay after start_s
    weight: dict[str, float]  # recruited electrodes -> relative amplitude (focus = 1)
    phase_rad: dict[str, float]  # recruited electrodes -> phase lag of their discharge
    f_start_hz: float
    f_stop_hz: float
    harmonics: tuple[float, float]  # 2nd and 3rd harmonic gains: the discharge's sharpness
    peak_uv: float
    peak_at: float  # fraction of the seizure where the amplitude peaks
    postictal_s: float  # decay time constant of the slowing that follows

    @property
    def duration_s(self) -> float:
        return self.stop_s - self.start_s

    def bipolar_weight(self, a: str, b: str) -> float:
        """Relative amplitude of the discharge in the derivation a-b (focus alone = 1): two
        electrodes in phase cancel, out of phase they add."""
        wave_a = self.weight.get(a, 0.0) * np.exp(1j * self.phase_rad.get(a, 0.0))
        wave_b = self.weight.get(b, 0.0) * np.exp(1j * self.phase_rad.get(b, 0.0))
        return float(abs(wave_a - wave_b))

    def add_to(self, rng: np.random.Generator, v: Array, fs: int) -> None:
        """Draw the seizure and its post-ictal slowing into the potentials v (electrodes, n)."""
        i0, n = round(self.start_s * fs), round(self.duration_s * fs)
        names = list(self.onset_delay_s)
        rows = np.array([INDEX[e] for e in names])
        weight = np.array([self.weight[e] for e in names], dtype=np.float32)[:, None]
        t = np.arange(n, dtype=np.float32) / fs
        u = t / np.float32(self.duration_s)
        wave = self._discharge(u, fs, names)
        rise = np.minimum(u / self.peak_at, 1.0)
        fall = np.clip((u - self.peak_at) / (1 - self.peak_at), 0.0, 1.0)
        envelope = (0.5 + 0.5 * rise**1.5) * (1.0 - 0.5 * fall) * taper(n, int(0.3 * fs))
        jitter = 1.0 + 0.2 * shaped_noise(rng, 1, n, fs, lambda f: (f < 1.0) * 1.0)[0]
        delay = np.array([self.onset_delay_s[e] for e in names], dtype=np.float32)[:, None]
        recruit_s = 0.5 + delay * 0.3  # the focus starts at once, later electrodes build up slower
        recruit = np.sin(np.clip((t[None] - delay) / recruit_s, 0, 1) * np.pi / 2) ** 2
        involvement = weight * recruit
        segment = np.s_[i0 : i0 + n]
        v[rows, segment] *= 1.0 - 0.5 * involvement  # the background desynchronises
        v[rows, segment] += self.peak_uv * involvement * (envelope * jitter)[None] * wave
        if self.label == "tcsz":  # the tonic phase is buried in muscle
            tonic = np.clip(1.5 - 3 * u, 0, 1) * rng.uniform(30, 80)
            v[rows, segment] += involvement * tonic * band_noise(rng, len(rows), n, fs, 20, 150)
        self._add_postictal(rng, v, fs, i0 + n, rows, weight)

    def _discharge(self, u: Array, fs: int, names: list[str]) -> Array:
        """Unit-amplitude rhythm per electrode, slowing from f_start_hz to f_stop_hz."""
        freq = self.f_start_hz * (self.f_stop_hz / self.f_start_hz) ** u
        lag = np.array([self.phase_rad[e] for e in names], dtype=np.float32)[:, None]
        phase = (2 * np.pi * np.cumsum(freq) / fs)[None] + lag
        h2, h3 = self.harmonics
        sharp = np.sin(phase) + h2 * np.sin(2 * phase + 0.5) + h3 * np.sin(3 * phase + 1.0)
        return sharp / (1 + h2 + h3)

    def _add_postictal(
        self, rng: np.random.Generator, v: Array, fs: int, i0: int, rows: Array, weight: Array
    ) -> None:
        """Suppressed background and delta slowing on the recruited electrodes, fading away."""
        n = min(int(3 * self.postictal_s * fs), v.shape[1] - i0)
        if n <= 0:
            return
        decay = np.exp(-np.arange(n, dtype=np.float32) / (self.postictal_s * fs))[None] * weight
        delta = narrowband_noise(rng, 1, n, fs, rng.uniform(0.8, 1.8), 0.4)
        v[rows, i0 : i0 + n] *= 1.0 - 0.6 * decay
        v[rows, i0 : i0 + n] += rng.uniform(20, 60) * decay * delta


def draw_seizure(
    rng: np.random.Generator,
    start_s: float,
    stop_s: float,
    label: str,
    peak_uv: tuple[float, float] = (60.0, 250.0),
) -> Seizure:
    """Spatial spread and rhythm of a seizure of the given timing and type, its discharge's
    height drawn from ``peak_uv``."""
    duration_s = stop_s - start_s
    can_start = np.array([e in ONSET_ELECTRODES for e in CEREBRAL])
    if label in GENERALISED_LABELS:
        delay = rng.uniform(0, 0.5, len(CEREBRAL))
        delay = np.maximum(delay - delay[can_start].min(), 0.0)
        weight = rng.uniform(0.6, 1.0, len(CEREBRAL)) * np.where(_XY[:, 1] < -0.3, 0.7, 1.0)
        phase = rng.uniform(0, np.pi / 2, len(CEREBRAL))  # nearly synchronous everywhere
    else:
        focus = rng.choice(len(CEREBRAL), p=_FOCUS_PRIOR)
        distance = np.linalg.norm(_XY - _XY[focus], axis=-1)
        extent = rng.uniform(0.35, 1.2)  # how far it spreads: focal .. secondarily generalised
        delay = distance / rng.uniform(0.1, 0.4)  # recruitment speed in map units per second
        weight = np.exp(-0.5 * (distance / extent) ** 2)
        # A travelling wave: the lag grows with distance from the focus (half a cycle per
        # neighbour), so the focus stands out in the bipolar chains through it.
        phase = np.pi * distance / 0.45 + rng.uniform(0, np.pi / 2, len(CEREBRAL))
    recruited = np.flatnonzero((weight >= MIN_WEIGHT) & (delay <= duration_s - 5.0))
    weight = weight / weight[recruited].max()
    if label == "absz":  # 3 Hz spike-and-wave, steady
        f_start, f_stop, harmonics = rng.uniform(3.0, 3.6), rng.uniform(2.6, 3.0), (0.8, 0.4)
    else:
        f_start, f_stop = rng.uniform(4.5, 8.0), rng.uniform(2.0, 3.5)
        harmonics = (rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.3))
    return Seizure(
        start_s=start_s,
        stop_s=stop_s,
        label=label,
        onset_delay_s={CEREBRAL[i]: float(delay[i]) for i in recruited},
        weight={CEREBRAL[i]: float(weight[i]) for i in recruited},
        phase_rad={CEREBRAL[i]: float(phase[i]) for i in recruited},
        f_start_hz=float(f_start),
        f_stop_hz=float(f_stop),
        harmonics=(float(harmonics[0]), float(harmonics[1])),
        peak_uv=float(rng.uniform(*peak_uv)),
        peak_at=float(rng.uniform(0.35, 0.7)) if label != "absz" else 0.5,
        postictal_s=float(rng.uniform(5, 20)),
    )
